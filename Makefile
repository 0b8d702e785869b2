# lookalike — every set-up, run and test step goes through these targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
RUN_DIR ?= .run
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help setup setup-export proto proto-lint models up down status demo test test-unit bench lint clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e ".[dev]"
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

test: setup-export ## the whole test suite (starts the real servers it needs)
	$(BIN)/python -m pytest -ra -p no:cacheprovider

test-unit: setup
	$(BIN)/python -m pytest -ra -m "not integration and not e2e"

bench: setup
	$(BIN)/python -m bench

lint: proto-lint

clean: down
	rm -rf $(RUN_DIR) .pytest_cache
