# The two jobs of a fresh machine: `make demo` and `make test` (each sets up .venv first).
.PHONY: setup demo test lint
VENV ?= .venv

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh

test: setup
	$(VENV)/bin/python -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
