# Image URL to use for building and pushing the manager image.
IMG ?= customer-operator:latest

# The kustomization that `make deploy` applies: config/default (the operator rotates
# its own webhook certificates) or config/default-certmanager (cert-manager issues them).
DEPLOY_CONFIG ?= config/default

# Where binaries go: the manager, the plugin, tools and the control plane.
LOCALBIN ?= $(shell pwd)/bin

# How long each fuzz target runs in `make fuzz`. Much shorter runs can fail with
# "context deadline exceeded" while the fuzzing workers are still starting.
FUZZTIME ?= 10s

# Timeout of one `go test` run: the envtest suites start real kube-apiservers.
TEST_TIMEOUT ?= 30m

# client-go's cache mutation detector in every informer the tests start: it keeps a
# copy of each cached object and panics (failing the run, with a diff) when code
# changes a cached object in place, which the read-only cache lists
# (client.UnsafeDisableDeepCopy) must never do. Kubernetes' own test runs set it too.
# Only for the test targets: it keeps every object twice, so never for `make run`.
KUBE_CACHE_MUTATION_DETECTOR ?= true
test test-faults: export KUBE_CACHE_MUTATION_DETECTOR := $(KUBE_CACHE_MUTATION_DETECTOR)

# CONTAINER_TOOL defines the container tool to be used for building images.
# Be aware that the target commands are only tested with Docker, which is
# scaffolded by default. However, you might want to replace it to use other
# tools (e.g. podman).
CONTAINER_TOOL ?= docker

# Setting SHELL to bash allows bash commands to be executed by recipes.
# Options are set to exit when a recipe line exits non-zero or a piped command fails.
SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

.PHONY: all
all: build

##@ General

# The help target prints out all targets with their descriptions organized
# beneath their categories. The categories are represented by '##@' and the
# target descriptions by '##'. The awk command is responsible for reading the
# entire set of makefiles included in this invocation, looking for lines of the
# file as xyz: ## something, and then pretty-format the target and help. Then,
# if there's a line with ##@ something, that gets pretty-printed as a category.
# More info on the usage of ANSI control characters for terminal formatting:
# https://en.wikipedia.org/wiki/ANSI_escape_code#SGR_parameters
# More info on the awk command:
# http://linuxcommand.org/lc3_adv_awk.php

.DEFAULT_GOAL := help

.PHONY: help
help: ## Display this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate ClusterRole manager-role, webhook configurations and CRDs from the markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd webhook paths="./..." output:crd:artifacts:config=config/crd/bases

.PHONY: generate
generate: controller-gen ## Generate DeepCopy, DeepCopyInto and DeepCopyObject methods of the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Run go fmt against code.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet against code.
	go vet ./...

.PHONY: test
test: control-plane browser manifests generate fmt vet test-alerts ## Run all tests (unit and envtest) with coverage into cover.out.
	KUBEBUILDER_ASSETS="$$($(CONTROL_PLANE_SH))" && export KUBEBUILDER_ASSETS && \
	echo "KUBEBUILDER_ASSETS=$$KUBEBUILDER_ASSETS" && \
	go test ./... -coverprofile cover.out -timeout $(TEST_TIMEOUT)

# test/alerts is a module of its own: it evaluates config/prometheus's alerts with
# Prometheus' PromQL engine, whose dependencies stay out of the operator's go.mod.
.PHONY: test-alerts
test-alerts: ## Evaluate the shipped Prometheus alerts on example series (test/alerts).
	cd test/alerts && go vet ./... && go test ./...

.PHONY: test-faults
test-faults: control-plane ## Run the fault-injection tests (build tag faults) in test/faults, if there are any.
	@if [ -d test/faults ]; then \
		KUBEBUILDER_ASSETS="$$($(CONTROL_PLANE_SH))" && export KUBEBUILDER_ASSETS && \
		set -x && go test -tags faults ./test/faults/... -timeout $(TEST_TIMEOUT); \
	else \
		echo "test-faults: no fault tests yet (test/faults does not exist)"; \
	fi

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME (default 10s) each; fails if any target fails (hack/fuzz.sh).
	FUZZTIME=$(FUZZTIME) hack/fuzz.sh

.PHONY: bench
bench: control-plane ## Run the benchmarks (hack/bench: 1000 customers, ~3 min; BENCH_CUSTOMERS=10000 for the large run) into bin/bench.json.
	@if [ -d hack/bench ]; then \
		set -x && go run ./hack/bench; \
	else \
		echo "bench: no benchmark yet (hack/bench does not exist)"; \
	fi

.PHONY: lint
lint: vet ## Run go vet and check that every Go file is gofmt-formatted.
	@unformatted=$$(gofmt -l $$(go list -f '{{.Dir}}' ./...) test/alerts); \
	if [ -n "$$unformatted" ]; then echo "lint: not gofmt-formatted (run make fmt):"; echo "$$unformatted"; exit 1; fi

.PHONY: verify-generated
verify-generated: manifests generate ## Fail when the generated files in api/ and config/ differ from what is committed.
	@if [ -n "$$(git status --porcelain --untracked-files=all -- api config)" ]; then \
		echo "verify-generated: generated files are out of date; run 'make manifests generate' and commit:"; \
		git status --short --untracked-files=all -- api config; \
		git --no-pager diff -- api config; \
		exit 1; \
	fi

##@ Build

.PHONY: build
build: manifests generate fmt vet ## Build the manager binary (bin/manager) and the kubectl plugin (bin/kubectl-customer).
	go build -o $(LOCALBIN)/manager .
ifneq (,$(wildcard cmd/kubectl-customer))
	go build -o $(LOCALBIN)/kubectl-customer ./cmd/kubectl-customer
endif

# The local run starts etcd, kube-apiserver and kube-controller-manager from
# bin/control-plane, installs the CRDs, RBAC and webhooks and runs bin/manager
# against them; RUN_ARGS are passed on to it.
.PHONY: run
run: manifests generate fmt vet build control-plane ## Run the operator on a local control plane (state in .local/).
	go build -o $(LOCALBIN)/local-run ./hack/local-run
	$(LOCALBIN)/local-run $(RUN_ARGS)

.PHONY: browser
browser: ## Install Debian's chromium for the browser test if it is missing (apt-get, as root or through sudo).
	@hack/browser.sh

.PHONY: control-plane
control-plane: $(LOCALBIN) ## Build (once, cached) kube-apiserver, etcd, kubectl and kube-controller-manager into bin/control-plane.
	@$(CONTROL_PLANE_SH) >/dev/null

# If you wish to build the manager image targeting other platforms you can use
# the --platform flag. (i.e. docker build --platform linux/arm64). However, you
# must enable docker buildKit for it.
# More info: https://docs.docker.com/develop/develop-images/build_enhancements/
.PHONY: docker-build
docker-build: ## Build the docker image with the manager.
	$(CONTAINER_TOOL) build -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the docker image with the manager.
	$(CONTAINER_TOOL) push $(IMG)

.PHONY: build-installer
build-installer: manifests generate kustomize ## Render CRDs and deployment with IMG into dist/install.yaml.
	mkdir -p dist
	$(call kustomize-with-image,$(DEPLOY_CONFIG)) > dist/install.yaml

##@ Deployment

ifndef ignore-not-found
  ignore-not-found = false
endif

.PHONY: install
install: manifests kustomize kubectl ## Install the CRDs into the cluster of ~/.kube/config (or KUBECONFIG).
	$(KUSTOMIZE) build config/crd | $(KUBECTL) apply --server-side -f -

.PHONY: uninstall
uninstall: manifests kustomize kubectl ## Uninstall the CRDs. Call with ignore-not-found=true to ignore resource not found errors.
	$(KUSTOMIZE) build config/crd | $(KUBECTL) delete --ignore-not-found=$(ignore-not-found) -f -

.PHONY: deploy
deploy: manifests kustomize kubectl ## Deploy the operator (DEPLOY_CONFIG, default config/default) with image IMG.
	$(call kustomize-with-image,$(DEPLOY_CONFIG)) | $(KUBECTL) apply --server-side -f -

.PHONY: undeploy
undeploy: kustomize kubectl ## Undeploy the operator. Call with ignore-not-found=true to ignore resource not found errors.
	$(KUSTOMIZE) build $(DEPLOY_CONFIG) | $(KUBECTL) delete --ignore-not-found=$(ignore-not-found) -f -

# kustomize-with-image renders the kustomization $(1) with the manager image set
# to IMG, through a throwaway overlay in bin/ (kustomize wants a relative path to
# its base), so that a deploy never edits config/. config/manager names the
# image customer-operator; the overlay replaces that.
define kustomize-with-image
mkdir -p $(LOCALBIN) && overlay=$$(mktemp -d $(LOCALBIN)/kustomize-overlay.XXXXXX) && trap 'rm -rf "$$overlay"' EXIT && \
printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- %s\n' "$$(realpath --relative-to="$$overlay" "$(1)")" > "$$overlay/kustomization.yaml" && \
(cd "$$overlay" && $(KUSTOMIZE) edit set image customer-operator=$(IMG)) && \
$(KUSTOMIZE) build "$$overlay"
endef

##@ Dependencies

$(LOCALBIN):
	mkdir -p $(LOCALBIN)

## Tool Binaries
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
KUSTOMIZE ?= $(LOCALBIN)/kustomize
# kubectl: the one on PATH, else the one hack/control-plane.sh builds.
KUBECTL ?= $(or $(shell command -v kubectl 2>/dev/null),$(LOCALBIN)/control-plane/kubectl)

## Tool Versions
CONTROLLER_TOOLS_VERSION ?= v0.23.0
# v5.8.2 is the newest kustomize whose go.mod accepts Go 1.26 (v5.8.3 wants Go 1.27).
KUSTOMIZE_VERSION ?= v5.8.2

# hack/control-plane.sh builds the binaries once and prints their directory. It
# takes bin/.control-plane.lock (flock) itself while it builds, so two concurrent
# makes, or a make and a local run, never build into the same directory at once.
CONTROL_PLANE_SH = hack/control-plane.sh

.PHONY: controller-gen
controller-gen: $(LOCALBIN) ## Download controller-gen locally if necessary.
	@test -x $(CONTROLLER_GEN) && $(CONTROLLER_GEN) --version | grep -qx 'Version: $(CONTROLLER_TOOLS_VERSION)' || \
	{ set -x; GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION); }

.PHONY: kustomize
kustomize: $(LOCALBIN) ## Download kustomize locally if necessary.
	@test -x $(KUSTOMIZE) && $(KUSTOMIZE) version | grep -qx '$(KUSTOMIZE_VERSION)' || \
	{ set -x; GOBIN=$(LOCALBIN) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION); }

.PHONY: kubectl
kubectl: ## Make sure there is a kubectl (on PATH, or built by control-plane).
	@test -x $(KUBECTL) || $(MAKE) control-plane
