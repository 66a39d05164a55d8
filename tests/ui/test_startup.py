"""The window must appear before torch and the model code load: none of it is on the start path."""

import subprocess
import sys

# Torch and the model libraries are made unimportable; the window must still build and show.
PROBE = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "spandrel", "diffusers", "transformers"}:
            raise ImportError(f"{name} imported while the window starts")
sys.meta_path.insert(0, Refuse())
from PySide6.QtWidgets import QApplication
from studio.app.context import AppContext
from studio.ui.main_window import MainWindow
app = QApplication([])
ctx = AppContext.open()
window = MainWindow(ctx)
window.show()
app.processEvents()
print("shown", window.isVisible())
ctx.close()
"""


def test_main_window_shows_without_importing_torch(studio_home):
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "shown True" in result.stdout
