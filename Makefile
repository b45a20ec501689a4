# asset-sync — every command the README names runs through here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup tools bench-tools demo test lint unit broker broker-stop bench audit clean

KUSTOMIZE_VERSION := v5.7.1
# helm from the Go module proxy, built as helm's own Makefile does: the -X flags give it its
# version and the Kubernetes version of its client-go (v0.37), which `go install` leaves unset.
HELM_VERSION := v3.22.0
HELM_LDFLAGS := -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
  $(foreach pkg,pkg/chartutil pkg/lint/rules,-X helm.sh/helm/v3/$(pkg).k8sVersionMajor=1 -X helm.sh/helm/v3/$(pkg).k8sVersionMinor=37)
export PATH := $(CURDIR)/.local/bin:$(PATH)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

## setup: a virtualenv with the package and its dev tools, and Kafka's jars from Maven Central
setup: $(STAMP)
	$(BIN)/python -m consumer.local.local_kafka fetch >/dev/null

## demo: the whole system on one machine (broker, vendor simulator, service, sample events)
demo: setup
	$(BIN)/asset-sync demo $(DEMO_ARGS)

## tools: kustomize and helm (Go module proxy) and promtool (Debian) for the manifest checks
tools:
	@command -v kustomize >/dev/null || GOBIN=$(CURDIR)/.local/bin go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	@command -v helm >/dev/null || GOBIN=$(CURDIR)/.local/bin go install -ldflags '$(HELM_LDFLAGS)' helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	@command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "promtool is missing: sudo apt-get install prometheus" >&2; exit 1; fi; }

## bench-tools: the bench's Go binaries in .local/bin (Go module proxy): the Webflow simulator,
## and Benthos v4.27 for scenario 11, stock and with its HTTP keep-alive pool raised
BENCH_GO := GOFLAGS='-mod=mod -buildvcs=false' go build -trimpath
# Benthos v4.27 predates Go 1.23's check of go:linkname (parquet-go reaches into the runtime)
BENTHOS_GO := $(BENCH_GO) -ldflags=-checklinkname=0
bench-tools: .local/bin/webflow-simulator .local/bin/benthos .local/bin/benthos-keepalive

.local/bin/webflow-simulator: bench/simulator/go.mod bench/simulator/main.go
	cd bench/simulator && $(BENCH_GO) -o $(CURDIR)/$@ .

.local/bin/benthos: bench/benthos/go.mod bench/benthos/main.go
	cd bench/benthos && $(BENTHOS_GO) -o $(CURDIR)/$@ .

.local/bin/benthos-keepalive: bench/benthos/go.mod bench/benthos/main.go bench/benthos/keepalive.go
	cd bench/benthos && $(BENTHOS_GO) -tags keepalive -o $(CURDIR)/$@ .

## test: lint, type-check and every test (unit and integration against a real broker)
test: setup tools lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -m "not integration"

## broker: start a local broker in .local/kafka and print its address; broker-stop stops it
broker: setup
	$(BIN)/python -m consumer.local.local_kafka start .local/kafka

broker-stop:
	$(BIN)/python -m consumer.local.local_kafka stop .local/kafka

bench: setup
	$(BIN)/python -m bench

## audit: known vulnerabilities in the locked dependencies (needs pypi.org's JSON API or
## osv.dev; --strict fails when a package could not be looked up, never a silent pass)
audit: $(STAMP)
	$(PYTHON) -m venv .local/audit && .local/audit/bin/pip install -q pip-audit
	$(BIN)/pip freeze --exclude-editable > .local/audit/requirements.txt
	.local/audit/bin/pip-audit --strict --progress-spinner off -r .local/audit/requirements.txt

clean:
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache
