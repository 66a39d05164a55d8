"""`studio` with no arguments opens the window; with a command it runs headless (see studio.cli)."""

import sys


def main() -> int:
    if len(sys.argv) > 1:
        from studio.cli import main as cli_main

        return cli_main(sys.argv[1:])
    from studio.ui.app import run

    return run()


def gui() -> int:
    from studio.ui.app import run

    return run()


if __name__ == "__main__":
    sys.exit(main())
