# edgeproxy — `make help` lists the targets.

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN      := bin/edgeproxy
LDFLAGS  := -X main.version=$(VERSION)
# Kernel tests need root; CI sets EDGEPROXY_REQUIRE_PRIVILEGES=1 so that they
# fail instead of skipping. Every test runs under the race detector.
TESTFLAGS ?= -race -count=1 -timeout 15m

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build bin/edgeproxy
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/edgeproxy

.PHONY: run
run: build ## run edgeproxy on its embedded demo configuration (needs root)
	./$(BIN) run

.PHONY: demo-fleet
demo-fleet: build ## a local fleet: etcd and three nodes, each in a namespace of its own; prints what to try, Ctrl-C cleans up (needs root, etcd; docs/fleet.md)
	bash scripts/demo-fleet.sh $(BIN)

.PHONY: test
test: ## run every test under the race detector (kernel tests need root, CAP_BPF and iproute2)
	$(GO) test $(TESTFLAGS) ./...

.PHONY: attack
attack: ## run the hostile-input tests at full size (floods of minutes; figures in the log, see docs/security.md)
	@mkdir -p bench/results
	bash -o pipefail -c "EDGEPROXY_ATTACK=1 $(GO) test -count=1 -timeout 30m -v -run 'Hostile' ./... 2>&1 | tee bench/results/attack.txt | grep -E '^(--- |ok|FAIL)|attack:'"

.PHONY: bench
bench: ## run every benchmark scenario against its peers, installing them (results, summary and charts in bench/results/; needs root)
	$(GO) run ./bench/cmd/edgebench run -out bench/results

.PHONY: bench-smoke
bench-smoke: ## every benchmark scenario for about a second (what CI runs through go test ./bench/...)
	$(GO) run ./bench/cmd/edgebench run -tiny -out $$(mktemp -d)

# bpf2go runs clang and llvm-strip, and dispatch.c includes libbpf's headers.
BPF_TOOLS = command -v clang >/dev/null && command -v llvm-strip >/dev/null && test -f /usr/include/bpf/bpf_helpers.h || \
	{ echo "$@ needs clang, llvm-strip and libbpf's headers: apt-get install -y clang llvm libbpf-dev (the versions .ci/run pins)" >&2; exit 1; }

.PHONY: generate
generate: ## regenerate the BPF objects from bpf/dispatch.c (needs clang, llvm, libbpf-dev: the versions .ci/run pins)
	@$(BPF_TOOLS)
	cd bpf && $(GO) generate

.PHONY: check-bpf
check-bpf: ## check that the committed BPF objects match bpf/dispatch.c (needs clang, llvm, libbpf-dev)
	@$(BPF_TOOLS)
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	cp -r bpf go.mod go.sum $$tmp/ && \
	(cd $$tmp/bpf && $(GO) generate >/dev/null) && \
	for f in dispatch_bpfel.o dispatch_bpfel.go dispatch_next_bpfel.o dispatch_next_bpfel.go; do \
		cmp -s bpf/$$f $$tmp/bpf/$$f || { echo "bpf/$$f is out of date with bpf/dispatch.c: run make generate"; exit 1; }; \
	done && echo "bpf objects match bpf/dispatch.c"

.PHONY: lint
lint: ## gofmt, go vet and staticcheck (the go.mod tool's version); the pure packages build and vet for darwin
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	GOOS=darwin $(GO) build ./bindings/... ./config/... ./admin/... ./proxy/cdnconf/... ./spectrum/appconf/...
	GOOS=darwin $(GO) vet ./bindings/... ./config/... ./admin/... ./proxy/cdnconf/... ./spectrum/appconf/...

.PHONY: clean
clean: ## remove build output
	rm -rf bin
