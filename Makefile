# rackwatch: see README.md. `make run` and `make test` are the two commands that matter.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
PKGS     := ./...

# Debian packages the integration tests talk to (real peers, not fakes).
DEB_PEERS := mosquitto mosquitto-clients snmpsim snmp nut-client nut-server socat chromium qemu-system-arm u-boot-qemu

.PHONY: all build run test test-go deps lint cross bench image deb fleet clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/rackwatch ./daemon

run: build
	./bin/rackwatch

# Installs the missing Debian peers (as root), then runs every test with the race detector.
test: deps lint test-go

deps:
	@bash scripts/deps.sh $(DEB_PEERS)

test-go:
	$(GO) test -race -timeout 15m $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

cross:
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/rackwatch-linux-arm64 ./daemon
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/rackwatch-linux-armv7 ./daemon

# Measurements (issue 9), not tests: rewrites docs/BENCHMARKS.md. BENCH_SHORT=1 for a quick run.
bench: deps
	N=$(N) bash scripts/bench.sh

# N sites in one process against one mosquitto: `make fleet N=500`.
N ?= 500
fleet:
	$(GO) run ./bench/fleet -n $(N)

clean:
	rm -rf bin images/out
