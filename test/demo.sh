#!/usr/bin/env bash
# The ebpfnet demo: a daemon serving a "host" namespace of its own, the
# default network, two sandboxes talking over it, a sandbox on another
# network blocked by the endpoint programs, and the drop counter that saw
# it. Nothing touches the machine's own network namespace; everything is
# removed on exit.
set -euo pipefail

BIN=$(realpath "${BIN:-bin/ebpfnet}")
HOST=ebpfnet-demo-host
RUN=/run/ebpfnet-demo
FLAGS=(--netns /run/netns/$HOST --state-dir $RUN/state --bpffs /sys/fs/bpf/ebpfnet-demo --etc-dir $RUN/etc)
export EBPFNET_SOCKET=$RUN/ebpfnet.sock
DAEMON=

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

cleanup() {
	set +e
	for sb in demo-stranger demo-client demo-web; do "$BIN" sandbox rm -f $sb >/dev/null 2>&1; done
	[ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
	"$BIN" reset "${FLAGS[@]}" >/dev/null 2>&1
	ip netns del $HOST 2>/dev/null
	rm -rf $RUN
}
trap cleanup EXIT
cleanup

step "A host namespace for the demo, and the daemon serving it"
ip netns add $HOST
ip -n $HOST link set lo up
mkdir -p $RUN
"$BIN" daemon --socket "$EBPFNET_SOCKET" "${FLAGS[@]}" >$RUN/daemon.log 2>&1 &
DAEMON=$!
for _ in $(seq 100); do "$BIN" network ls >/dev/null 2>&1 && break; sleep 0.1; done
show "$BIN" network ls

step "Two sandboxes on the default network (bridge ebpf0)"
show "$BIN" sandbox create demo-web
show "$BIN" sandbox create demo-client
show "$BIN" sandbox ls
WEB=$("$BIN" sandbox inspect demo-web | sed -n 's/.*"IPAddress": "\(.*\)".*/\1/p')
mkdir -p $RUN/www && echo "hello from demo-web ($WEB)" >$RUN/www/index.html
"$BIN" exec demo-web -- busybox httpd -p 80 -h $RUN/www

step "demo-client reaches demo-web"
show "$BIN" exec demo-client -- busybox ping -c 2 "$WEB"
show "$BIN" exec demo-client -- curl -sS -m 3 "http://$WEB/"

step "A sandbox on another network is blocked by eBPF, not iptables"
show "$BIN" network create demo-other
show "$BIN" sandbox create demo-stranger --network demo-other
printf '$ %s exec demo-stranger -- curl -m 2 http://%s/\n' "$BIN" "$WEB"
if "$BIN" exec demo-stranger -- curl -sS -m 2 "http://$WEB/"; then
	echo "demo-stranger reached demo-web: isolation is broken" >&2
	exit 1
fi
echo "blocked, as it should be"

step "The datapath: counters by verdict, maps, programs on each endpoint"
show "$BIN" status
drops=$("$BIN" status -o json | sed -n '/"drop_cross_network"/{n;p}' | tr -dc 0-9)
[ "${drops:-0}" -gt 0 ] || { echo "the cross-network drop was not counted" >&2; exit 1; }
printf '\niptables rules in the demo host: %s\n' "$(ip netns exec $HOST iptables-save 2>/dev/null | grep -c '^-A' || true)"

step "Done: cleaning up"
