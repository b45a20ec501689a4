# asset-sync — every command the README names runs through here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup demo test lint unit broker broker-stop bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

## setup: a virtualenv with the package and its dev tools, and Kafka's jars from Maven Central
setup: $(STAMP)
	$(BIN)/python -m consumer.local_kafka fetch >/dev/null

## demo: the whole system on one machine (broker, vendor simulator, service, sample events)
demo: setup
	$(BIN)/asset-sync demo

## test: lint, type-check and every test (unit and integration against a real broker)
test: setup lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -m "not integration"

## broker: start a local broker in .local/kafka and print its address; broker-stop stops it
broker: setup
	$(BIN)/python -m consumer.local_kafka start .local/kafka

broker-stop:
	$(BIN)/python -m consumer.local_kafka stop .local/kafka

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache
