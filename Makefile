# Quick start: `make demo` and `make test`. Everything else is a building block of those two.
SHELL := /bin/bash
CARGO ?= cargo
DEMO_DIR ?= .demo

.PHONY: demo test lint fmt clippy crds testenv garage bench build clean

## demo: a local control plane with the CRDs and sample resources; Ctrl-C stops everything.
demo: testenv
	$(CARGO) build -q -p falco-testenv -p falco-driver-repo -p falco-driver-loader --bins
	@bash hack/demo.sh "$(DEMO_DIR)"

## test: every test of the workspace, against a real kube-apiserver + etcd (and the other real
## servers the crates need), all started on loopback by the tests themselves.
test: testenv garage
	FALCO_TESTENV_BIN="$$(bash hack/build-testenv.sh)" \
	FALCO_GARAGE_BIN="$$(bash hack/build-garage.sh)/garage" \
	$(CARGO) test --workspace --all-targets --no-fail-fast

## lint: what CI checks before the tests.
lint: fmt clippy
fmt:
	$(CARGO) fmt --all -- --check
clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## crds: regenerate deploy/crds from the Rust types (a test fails when they drift).
crds:
	$(CARGO) run -q -p falco-operator -- crd --output-dir deploy/crds
	$(CARGO) run -q -p falco-artifact-operator -- crd --output-dir deploy/crds

## testenv: build (once per machine) kube-apiserver and etcd from the Go module proxy.
testenv:
	@bash hack/build-testenv.sh >/dev/null

## garage: build (once per machine) the Garage S3 server from crates.io.
garage:
	@bash hack/build-garage.sh >/dev/null

build:
	$(CARGO) build --workspace --bins

## bench: speed and memory figures, written to docs/benchmarks.md.
bench: testenv build
	$(CARGO) build --release --workspace --bins
	bash bench/testenv.sh
	bash bench/driver-loader.sh
	bash bench/driver-repo.sh

clean:
	$(CARGO) clean
	rm -rf "$(DEMO_DIR)"
