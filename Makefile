# dockfleet — `make help` lists the targets.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/dockfleet/dockfleet/internal/version.Version=$(VERSION)
BIN     := bin/dockfleet

.PHONY: help build images demo test test-short fuzz lint bench bench-scale bench-agent proto clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/dockfleet (static, no cgo)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/dockfleet

images: ## build the demo images hello:v1, hello:v2, hello:broken
	./examples/hello/build-images.sh

demo: build images ## run a local fleet of one: dockfleet dev, apply examples/hello, roll it out to v2
	./scripts/demo.sh

test: ## run every test against the real Docker daemon, with the race detector
	$(GO) test -race -count=1 -timeout 30m ./...

test-short: ## run the unit tests only
	$(GO) test -short -count=1 ./...

FUZZTIME ?= 10s

fuzz: ## run every fuzz target for FUZZTIME each (default 10s; CI runs them)
	@set -e; for file in $$(git grep -l '^func Fuzz' -- '*_test.go'); do \
		dir=./$$(dirname $$file); \
		for target in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$file); do \
			echo "fuzzing $$target in $$dir for $(FUZZTIME)"; \
			GO=$(GO) ./scripts/fuzz-one.sh $$dir $$target $(FUZZTIME); \
		done; \
	done

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

bench: build images ## time rollouts on real Docker: Swarm vs dockfleet vs raw API (BENCH_FLAGS=-runs=3)
	$(GO) run ./bench/rollout $(BENCH_FLAGS)

N ?= 1000

bench-scale: build ## scale: N simulated agents on loopback (N=1000; BENCH_SCALE_FLAGS='-o json', '-replicas 3 -store postgres')
	$(GO) run ./bench/scale -n $(N) $(BENCH_SCALE_FLAGS)

bench-agent: build images ## agent footprint: one real agent, 20 healthy containers, idle RSS and CPU (BENCH_AGENT_FLAGS=-o json)
	$(GO) run ./bench/agent $(BENCH_AGENT_FLAGS)

proto: ## regenerate internal/agentproto from agent.proto (needs protoc, protoc-gen-go, protoc-gen-go-grpc)
	cd internal/agentproto && PATH="$$PATH:$$($(GO) env GOPATH)/bin" $(GO) generate ./...

clean: ## remove build output
	rm -rf bin
