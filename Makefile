# Quick start: `make run` opens Studio, `make test` runs every check CI runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-diffusion screenshot clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m studio

lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check studio tests bench
	$(VENV)/bin/ruff format --check studio tests bench

test: lint
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/upscale.py

bench-diffusion: $(STAMP)
	$(PY) bench/diffusion.py

screenshot: $(STAMP)
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) -m studio.ui.screenshot docs

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
