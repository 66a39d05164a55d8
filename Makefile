# Quick start: `make run` opens Studio, `make test` runs every check CI runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-restore bench-diffusion screenshot clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-cache-dir --upgrade pip
	$(PY) -m pip install --quiet --no-cache-dir -e '.[dev]'
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

bench-restore: $(STAMP)
	$(PY) bench/restore.py

bench-diffusion: $(STAMP)
	$(PY) bench/diffusion.py

# The Generate and Inpaint shots use the tests' tiny random-weight pipeline (no download).
TINY_SD := $(or $(TMPDIR),/tmp)/studio-screenshot-tiny-sd
screenshot: $(STAMP)
	test -f $(TINY_SD)/model_index.json || PYTHONPATH=tests $(PY) -c \
		'import sys, tiny_diffusion; tiny_diffusion.save_folder(sys.argv[1])' $(TINY_SD)
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) -m studio.ui.screenshot docs \
		--diffusion-model $(TINY_SD)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
