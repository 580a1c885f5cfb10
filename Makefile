# `make book` and `make test` do all set-up themselves: venv, packages, verified data.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: all venv data book test bench clean

all: book

venv: $(INSTALLED)

$(INSTALLED): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

data: venv
	$(PY) -m localrank_utils.data

book: data
	@start=$$(date +%s); \
	$(VENV)/bin/jupyter-book build . --builder html && \
	echo "book built in $$(( $$(date +%s) - start )) s: open _build/html/index.html"

test: data
	@start=$$(date +%s); \
	LOCALRANK_PROFILE=quick $(PY) -m pytest tests chapters --nbval-lax --nbval-current-env -p no:cacheprovider; \
	rc=$$?; echo "tests took $$(( $$(date +%s) - start )) s"; exit $$rc

bench: data
	$(PY) -m localrank_utils.bench $(BENCH_ARGS)

clean:
	rm -rf _build results
