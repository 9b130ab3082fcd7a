SHELL := /bin/bash

# ebpfnet — build, test and demo. Everything that needs the kernel needs root.

# sudo resets PATH; find Go where its installer puts it.
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
# The tests and the bench build ebpfnet with `go` themselves.
export PATH := $(patsubst %/,%,$(dir $(GO))):$(PATH)
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
BIN := bin/ebpfnet

# Debian packages the build, the tests and `make generate` use (iperf3:
# the bandwidth limits' tests). The
# real-host tests load ufw's ruleset into a test namespace from a copy of
# its files (installing ufw leaves it disabled, and they never enable it).
# dnsmasq-base is the egress test's upstream DNS server (its binary alone,
# no service); iperf3 measures the bandwidth limits.
APT_PACKAGES := clang llvm libbpf-dev iproute2 iptables nftables ufw conntrack ethtool busybox-static curl dnsmasq-base iperf3

.PHONY: all build install deps runtime-deps bench-deps generate check-generate vet test-tools test fuzz soak demo bench bench-quick clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/ebpfnet
	$(GO) build -o bin/ebpfnet-cni ./cmd/ebpfnet-cni

# install puts the binaries where the README's commands and CNI runtimes
# expect them: the CNI plugin is type "ebpfnet" in /opt/cni/bin.
PREFIX ?= /usr/local
CNI_BIN ?= /opt/cni/bin
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/ebpfnet
	install -D -m 0755 bin/ebpfnet-cni $(DESTDIR)$(CNI_BIN)/ebpfnet

# deps installs what is missing: Debian packages and Go modules.
deps:
	@$(GO) version >/dev/null 2>&1 || { echo "ebpfnet needs Go 1.26 or newer (Debian 12 ships 1.19): install it from go.dev/dl into /usr/local/go" >&2; exit 1; }
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	$(GO) mod download

# generate rebuilds the BPF objects and their Go bindings from bpf/*.c.
generate:
	cd bpf && $(GO) generate ./...

# check-generate fails when the committed BPF objects differ from the C.
check-generate: generate
	@git diff --exit-code --stat -- bpf/ || { echo "generated BPF files are stale: run make generate and commit" >&2; exit 1; }

vet:
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt needed" >&2; exit 1; }
	$(GO) vet ./...

# test runs the whole suite. Integration tests need root; under CI a test
# that skips is a failure. The BPF program tests flood, the DNS server's
# time their answers and race a socket's close, and some end-to-end tests
# flood, measure or time their probes: ALONE_PACKAGES, then the end-to-end
# tests that do not call t.Parallel() first thing (SERIAL_TESTS), run
# alone, one at a time. Then the other end-to-end tests, which mostly wait
# (on etcd leases, daemons, dockerd), run TEST_PARALLEL at a time, beside
# the other packages, two at a time (-p 2). Each part logs to a file of
# its own, for lines not to mix; bin/test.log is all of them. The
# failpoints, which only the tests' daemons have, are tested with their
# build tag.
ALONE_PACKAGES := ./bpf ./control/dns
TEST_PARALLEL ?= 4
TEST_FLAGS := -count=1 -timeout 20m -v
SERIAL_TESTS = $$(awk '/^func Test[A-Za-z0-9_]*\(t \*testing\.T\) \{$$/ { name = substr($$2, 1, index($$2, "(") - 1); getline; \
	if ($$0 != "\tt.Parallel()") { printf "%s%s", sep, name; sep = "|" } }' test/*_test.go)
test: deps runtime-deps test-tools vet check-generate
	@mkdir -p bin
	@rm -f bin/test-*.log
	{ $(GO) test -p 1 $(TEST_FLAGS) $(ALONE_PACKAGES) && $(GO) test -tags failpoints $(TEST_FLAGS) ./control/failpoint; first=$$?; \
	  $(GO) test $(TEST_FLAGS) -run "^($(SERIAL_TESTS))$$" ./test; exit $$((first | $$?)); } 2>&1 | tee bin/test-alone.log; alone=$${PIPESTATUS[0]}; \
	$(GO) test -p 2 $(TEST_FLAGS) $$($(GO) list ./... | grep -v -x -F "$$($(GO) list $(ALONE_PACKAGES) ./test)") >bin/test-packages.log 2>&1 & packages=$$!; \
	$(GO) test $(TEST_FLAGS) -parallel $(TEST_PARALLEL) -skip "^($(SERIAL_TESTS))$$" ./test 2>&1 | tee bin/test-parallel.log; parallel=$${PIPESTATUS[0]}; \
	wait $$packages; packages=$$?; cat bin/test-packages.log; \
	cat bin/test-alone.log bin/test-parallel.log bin/test-packages.log >bin/test.log; \
	status=$$((alone | parallel | packages)); \
	if [ $$status -ne 0 ]; then echo "--- what the failed tests said:"; awk -f test/failures.awk bin/test.log; fi; \
	test $$status -eq 0
	@if [ -n "$$CI" ] && grep -- '--- SKIP' bin/test.log; then echo "tests skipped under CI" >&2; exit 1; fi
	@echo "$$(grep -c -- '^--- PASS' bin/test.log) passed, $$(grep -c -- '^--- FAIL' bin/test.log) failed"

# fuzz feeds every decoder of outside input (the API's bodies, Docker's
# plugin calls, CNI configurations, -p specs, etcd records, the daemon's
# cluster and conntrack flags, DNS queries) random input for FUZZTIME
# each. make test runs their seed corpora (and every failing input kept
# in testdata/fuzz) as plain tests.
FUZZTIME ?= 1m
FUZZ_TARGETS := ./control/api:FuzzRequestBodies ./control/frontend/docker:FuzzPluginCalls \
	./cmd/ebpfnet-cni:FuzzNetworkConfiguration ./control/ports:FuzzSpecs ./control/cluster:FuzzRecords \
	./control/cluster:FuzzStoreFlags ./loader:FuzzCTTimeout ./control/dns:FuzzAnswer
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; echo "fuzz $$fn in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg || exit 1; \
	done

# soak churns sandboxes, endpoints, publications (with source lists), CNI
# attachments and Docker's plugin calls at random on 20 networks, up to
# 1,000 sandboxes at 50 operations/s, for SOAK_TIME, with traffic
# through published ports and masquerade, and checks every minute that
# all the store records works and nothing else is left; it writes the
# daemon's memory, goroutines, open files and map fill over the run to
# bench/soak. SOAK_SEED replays a run's operations (the test logs its
# seed); SOAK_SANDBOXES and SOAK_NETWORKS change its size. make test runs
# a short TestSoak. Then 128 pods through containerd's CRI, three times (32 in
# make test).
SOAK_TIME ?= 30m
SOAK_TIMEOUT ?= 3h
soak: deps runtime-deps test-tools
	SOAK_TIME=$(SOAK_TIME) SOAK_OUT=$(CURDIR)/bench/soak $(GO) test -count=1 -timeout $(SOAK_TIMEOUT) -v -run '^TestSoak$$' ./test
	CRI_LOOP_PODS=128 $(GO) test -count=1 -v -run '^TestCRIPodLoop$$' ./test

# test-tools builds the programs the tests drive that Debian does not
# package (cnitool, crictl, nerdctl) from the module proxy, once: later
# runs find them in the user's cache (testbed.ToolsDir).
test-tools: deps
	@$(GO) run ./test/buildtools >/dev/null

# runtime-deps installs the container runtimes the integration tests and
# the bench drive for real: Debian's docker.io and containerd, podman, the
# reference CNI plugins, and etcd (3.4), the store of clusters of hosts.
# policy-rc.d keeps the packages from starting the host's daemons; one that
# was already there is left as it was.
RUNTIME_PACKAGES := docker.io containerd podman containernetworking-plugins etcd-server etcd-client
runtime-deps:
	@missing=$$(for p in $(RUNTIME_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		created=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created=1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; rc=$$?; \
		[ -n "$$created" ] && rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi

# bench-deps adds iperf3 and dnsperf to the runtimes.
BENCH_PACKAGES := iperf3 dnsperf
bench-deps: deps runtime-deps
	@missing=$$(for p in $(BENCH_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# bench compares ebpfnet with iptables and docker-proxy, and its embedded
# DNS with dockerd's, side by side,
# and writes bench/results/{results.md,results.json,*.png}.
bench: bench-deps
	$(GO) run ./bench/cmd/dataplanes -out bench/results
	$(GO) test -run '^$$' -bench BenchmarkPrograms -benchtime 200000x -count 5 ./bpf/ | tee bench/results/programs.txt; test $${PIPESTATUS[0]} -eq 0
	$(GO) test -run '^$$' -bench BenchmarkRetransmits -benchtime 1x -v ./bench/ | tee bench/results/retransmits.txt; test $${PIPESTATUS[0]} -eq 0
	$(GO) test -run '^$$' -bench BenchmarkOverlay -benchtime 1x -v ./bench/ | tee bench/results/overlay.txt; test $${PIPESTATUS[0]} -eq 0
	$(GO) test -run '^$$' -bench BenchmarkBandwidthAgainstReference -benchtime 1x -v ./test/ | tee bench/results/bandwidth.txt; test $${PIPESTATUS[0]} -eq 0

# bench-quick is a one-minute smoke run of the same, so the bench never rots.
bench-quick: bench-deps
	$(GO) run ./bench/cmd/dataplanes -quick -out bench/results/quick

# demo shows the daemon at work in namespaces of its own.
demo: deps build
	BIN=$(BIN) bash test/demo.sh

clean:
	rm -rf bin
