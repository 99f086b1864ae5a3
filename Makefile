# rackwatch: see README.md. `make run` and `make test` are the two commands that matter.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
PKGS     := ./...

# Every build and test here leaves HTTP/2 out of net/http: the page, the API and the HTTPS
# clients (webhooks, update downloads) speak HTTP/1.1, and the bundled HTTP/2 code is about
# half a megabyte of binary that this kernel keeps mapped (README.md, Memory).
export GOFLAGS := $(strip $(GOFLAGS) -tags=nethttpomithttp2)

# Debian packages the integration tests talk to (real peers, not fakes).
# nut-snmp: NUT's own snmp-ups for the upsmib differential test; systemd: systemd-analyze
# verifies the .deb's unit; util-linux: unshare gives each test upsmon its own /run/nut.
DEB_PEERS := prometheus mosquitto mosquitto-clients snmpsim snmp nut-client nut-server nut-snmp socat chromium qemu-system-arm u-boot-qemu systemd util-linux python3-pymodbus mbpoll snmptrapd rsyslog rsyslog-gnutls python3-aiosmtpd smitools protobuf-compiler nats-server python3-jinja2 u-boot-tools minisign

# Two image builds give the same bytes: every timestamp comes from here.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 1735689600)
export SOURCE_DATE_EPOCH

.PHONY: all build run test test-go deps lint cross bench fuzz image update deb fleet fleet-nats interop clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/rackwatch ./daemon

run: build
	./bin/rackwatch

# Installs the missing Debian peers (as root), then runs every test with the race detector.
# The last line counts the tests ("tests: N passed, N failed, N skipped"); under CI=true a
# skipped test fails the run (README.md, Tests).
test: deps lint test-go

deps:
	@bash scripts/deps.sh $(DEB_PEERS)

test-go:
	$(GO) run ./scripts/testsummary -- $(GO) test -json -race -timeout 15m $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

cross:
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/rackwatch-linux-arm64 ./daemon
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/rackwatch-linux-armv7 ./daemon

# Measurements (issue 9), not tests: rewrites docs/BENCHMARKS.md. BENCH_SHORT=1 for a quick run.
bench: deps
	N=$(N) bash scripts/bench.sh

# Every fuzz target for FUZZTIME (default 1m) each; part of make bench.
fuzz:
	bash scripts/fuzz.sh

# N sites in one process against one mosquitto: `make fleet N=500`.
N ?= 500
fleet:
	$(GO) run ./bench/fleet -n $(N)

# The fleet against a three-node nats-server cluster (MQTT + JetStream), one node killed and
# restarted mid-run: `make fleet-nats N=100` (100 unless N is given; 2 cores take that in minutes).
fleet-nats: deps
	bash scripts/fleet-nats.sh $(if $(filter command line environment,$(origin N)),$(N),100)

# The Telegraf kit against a real Telegraf 1.37 (built once into ~/.cache/rackwatch-anchors),
# the demo site on mosquitto, a broker restart and a daemon crash mid-run; not part of make test.
interop: deps
	bash scripts/interop.sh

# The firmware image for arm64 boards (images/README.md): images/out/rackwatch-arm64.img.
# The kernel is the gokrazy module's, downloaded by mkimage when missing; KERNEL=path for another.
KERNEL ?=
image:
	mkdir -p images/out
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o images/out/rackwatch.arm64 ./daemon
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '-s -w' -o images/out/init.arm64 ./images/init
	$(GO) run ./images/mkimage$(if $(KERNEL), -kernel '$(KERNEL)') -init images/out/init.arm64 -rackwatch images/out/rackwatch.arm64 -config images/rackwatch-image.yaml -keys images/keys -version '$(VERSION)' -o images/out/rackwatch-arm64.img

# A signed update bundle of the same firmware (README.md, Firmware updates):
# images/out/rackwatch-arm64-VERSION.update. KEY is an unencrypted minisign secret key; the
# development key is for tests only.
KEY ?= images/keys/dev.key
update:
	mkdir -p images/out
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o images/out/rackwatch.arm64 ./daemon
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '-s -w' -o images/out/init.arm64 ./images/init
	$(GO) run ./images/mkimage$(if $(KERNEL), -kernel '$(KERNEL)') -init images/out/init.arm64 -rackwatch images/out/rackwatch.arm64 -config images/rackwatch-image.yaml -keys images/keys -version '$(VERSION)' -slot-out images/out/slot-$(VERSION).img
	$(GO) run ./images/mkupdate -slot images/out/slot-$(VERSION).img -version '$(VERSION)' -key '$(KEY)' -o images/out/rackwatch-arm64-$(VERSION).update
	rm -f images/out/slot-$(VERSION).img images/out/slot-$(VERSION).img.sha256

# .deb packages for arm64 and armhf boards that run Debian.
deb:
	mkdir -p images/out
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o images/out/rackwatch.arm64 ./daemon
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o images/out/rackwatch.armhf ./daemon
	$(GO) run ./images/mkdeb -arch arm64 -binary images/out/rackwatch.arm64 -version $(VERSION) -o images/out
	$(GO) run ./images/mkdeb -arch armhf -binary images/out/rackwatch.armhf -version $(VERSION) -o images/out

clean:
	rm -rf bin images/out
