# Quick start: `make demo` and `make test`. Everything else is a building block of those two.
SHELL := /bin/bash
CARGO ?= cargo
DEMO_DIR ?= .demo

.PHONY: deps demo test lint fmt clippy crds testenv garage helm falcoctl images check-images bench build clean

## demo: the whole story on one machine (a real single-node cluster running the operator from its
## chart and Falco pods with a stand-in, registry, two simulated nodes,
## driver repository and loader); Ctrl-C stops everything.
demo: deps testenv helm images
	$(CARGO) build -q -p falco-testenv -p falco-operator -p falco-artifact-operator -p falco-driver-repo -p falco-driver-loader --bins
	@bash hack/demo.sh "$(DEMO_DIR)"

## test: every test of the workspace, against a real kube-apiserver + etcd (and the other real
## servers the crates need), all started on loopback by the tests themselves; the end-to-end
## tests add the controller manager, scheduler and a node running the project's images.
test: deps testenv garage helm falcoctl images
	FALCO_TESTENV_BIN="$$(bash hack/build-testenv.sh)" \
	FALCO_IMAGE_BINS="$$(bash hack/build-images.sh)" \
	FALCO_GARAGE_BIN="$$(bash hack/build-garage.sh)/garage" \
	FALCO_HELM_BIN="$$(bash hack/build-helm.sh)/helm" \
	FALCO_FALCOCTL_BIN="$$(bash hack/build-falcoctl.sh)/falcoctl" \
	$(CARGO) test --workspace --all-targets --no-fail-fast

## lint: what CI checks before the tests.
lint: fmt clippy
fmt:
	$(CARGO) fmt --all -- --check
clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## crds: regenerate everything derived from the Rust types (tests fail when any of it drifts):
## deploy/crds, docs/crd-reference.md, the chart's crds/ and deploy/install.yaml.
crds: helm
	$(CARGO) run -q -p falco-operator -- crd --output-dir deploy/crds
	$(CARGO) run -q -p falco-artifact-operator -- crd --output-dir deploy/crds
	UPDATE_SNAPSHOTS=1 $(CARGO) test -q -p falco-api --test reference
	bash hack/render-install.sh

## deps: the Debian packages the demo and the tests need (skipped when installed).
deps:
	@bash hack/install-deps.sh

## testenv: build (once per machine) etcd, the Kubernetes control plane and kubelet, containerd
## and the CNI loopback plugin from the Go module proxy.
testenv:
	@bash hack/build-testenv.sh >/dev/null

## garage: build (once per machine) the Garage S3 server from crates.io.
garage:
	@bash hack/build-garage.sh >/dev/null

## helm: build (once per machine) helm from the Go module proxy, for the chart tests.
helm:
	@bash hack/build-helm.sh >/dev/null

## falcoctl: build (once per machine) falcoctl from the Go module proxy, the reference client
## of the driver tests.
falcoctl:
	@bash hack/build-falcoctl.sh >/dev/null

## images: the static musl binaries the images are made of (the tests' node runs them).
images:
	@bash hack/build-images.sh >/dev/null

## check-images: the real image build without a container engine: the Dockerfile's consistency,
## the static musl binaries, the OCI images assembled from them and pushed to a local registry.
check-images:
	bash hack/check-images.sh

build:
	$(CARGO) build --workspace --bins

## bench: speed and memory figures, written to docs/benchmarks.md (reference tools: nginx-light,
## wrk, hyperfine from apt as .ci/run installs them, and kubectl; oras and upstream's operator from the Go proxy).
bench: testenv build images
	$(CARGO) build --release --workspace --bins
	bash bench/testenv.sh
	bash bench/node.sh
	bash bench/driver-loader.sh
	bash bench/driver-coverage.sh
	bash bench/driver-repo.sh
	bash bench/operator.sh
	bash bench/artifact-operator.sh

clean:
	$(CARGO) clean
	rm -rf "$(DEMO_DIR)"
