# One entry point for humans and CI. Every target installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: install lint format typecheck unit test explore bench clean layer synth deploy demo serve openapi

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy layers/common/python/dunning functions infra local benchmarks tests

unit: $(STAMP)
	$(BIN)/pytest tests/unit

# The quality gate: lint, format check, strict typing, the whole test suite.
test: lint typecheck
	$(BIN)/pytest -n 2

# The gate draws the same Hypothesis examples every time; this draws new ones,
# ten times as many, to look for what the gate's examples miss (10-20 minutes).
explore: $(STAMP)
	DUNNING_HYPOTHESIS_PROFILE=explore DUNNING_HYPOTHESIS_SCALE=10 $(BIN)/pytest -n 2 tests/unit tests/integration

# The Lambda layer: the shared package plus the runtime dependencies of
# pyproject.toml as arm64 wheels, built without Docker (infra/build_layer.py).
LAYER_DIR     := build/layer
LAYER_STAMP   := $(LAYER_DIR)/.built
LAYER_SOURCES := pyproject.toml infra/build_layer.py \
	$(shell find layers/common/python/dunning -type f -not -name '*.pyc' -not -path '*/__pycache__/*')
# The CDK CLI comes from package.json (aws-cdk@^2); pass options with CDK_ARGS,
# e.g. make deploy CDK_ARGS="-c stage=prod -c alarm_email=ops@example.com".
CDK      := npx --no-install cdk
CDK_ARGS ?=

$(LAYER_STAMP): $(STAMP) $(LAYER_SOURCES)
	$(BIN)/python -m infra.build_layer --target $(LAYER_DIR)
	@touch $@

layer: $(LAYER_STAMP)

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

synth: $(STAMP) $(LAYER_STAMP) node_modules/.installed
	$(CDK) synth --quiet $(CDK_ARGS)

deploy: $(STAMP) $(LAYER_STAMP) node_modules/.installed
	$(CDK) deploy --require-approval broadening $(CDK_ARGS)

# Once per account and region, before the first deploy; with the same CDK_ARGS as
# deploy (the app names the account and region), or an explicit environment:
# make bootstrap CDK_ARGS="aws://123456789012/eu-west-1".
.PHONY: bootstrap destroy
bootstrap: $(STAMP) $(LAYER_STAMP) node_modules/.installed
	$(CDK) bootstrap $(CDK_ARGS)

# Deletes the stage's stack after asking (add --force to CDK_ARGS to skip the
# question), e.g. make destroy CDK_ARGS="-c stage=test"; what survives: docs/deploy.md.
destroy: $(STAMP) $(LAYER_STAMP) node_modules/.installed
	$(CDK) destroy $(CDK_ARGS)

# The README's first command: months of dunning on an in-process AWS (moto).
demo: $(STAMP)
	$(BIN)/dunning demo

# The API on 127.0.0.1:8080 over the same emulation (Swagger UI at /v1/docs).
serve: $(STAMP)
	$(BIN)/dunning serve

# The API's OpenAPI document, committed (a test fails when it is stale).
openapi: $(STAMP)
	$(BIN)/python -m dunning.api.export docs/openapi.json

# Every benchmark (engine, pipeline, actions), then one table of their figures.
bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) cdk.out build node_modules .mypy_cache .ruff_cache .hypothesis
