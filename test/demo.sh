#!/usr/bin/env bash
# The ebpfnet demo: a daemon serving a "host" namespace of its own with a
# client namespace behind its uplink; the default network with two
# sandboxes talking over it; a port published with eBPF, reached from the
# client (which the sandbox sees by its real address) and from a host
# process through 127.0.0.1, with no iptables rule and no proxy process; a
# sandbox on another network blocked; and the counters that saw it all.
# Nothing touches the machine's own network namespace; everything is
# removed on exit.
set -euo pipefail

BIN=$(realpath "${BIN:-bin/ebpfnet}")
HOST=ebpfnet-demo-host
CLIENT=ebpfnet-demo-client
HOST_IP=10.99.0.1
CLIENT_IP=10.99.0.2
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
	ip netns del $CLIENT 2>/dev/null
	ip netns del $HOST 2>/dev/null
	rm -rf $RUN
}
trap cleanup EXIT
cleanup

step "A host namespace for the demo, a client behind its uplink, and the daemon"
ip netns add $HOST
ip netns add $CLIENT
ip -n $HOST link set lo up
ip -n $CLIENT link set lo up
ip -n $HOST link add uplink0 type veth peer name eth0 netns $CLIENT
ip -n $HOST addr add $HOST_IP/24 dev uplink0
ip -n $CLIENT addr add $CLIENT_IP/24 dev eth0
ip -n $HOST link set uplink0 up
ip -n $CLIENT link set eth0 up
echo "host $HOST ($HOST_IP on uplink0), client $CLIENT ($CLIENT_IP)"
mkdir -p $RUN
"$BIN" daemon --socket "$EBPFNET_SOCKET" --docker-plugin "" "${FLAGS[@]}" >$RUN/daemon.log 2>&1 &
DAEMON=$!
for _ in $(seq 100); do "$BIN" network ls >/dev/null 2>&1 && break; sleep 0.1; done
show "$BIN" network ls

step "Two sandboxes on the default network (bridge ebpf0)"
show "$BIN" sandbox create demo-web
show "$BIN" sandbox create demo-client
show "$BIN" sandbox ls
WEB=$("$BIN" sandbox inspect demo-web | sed -n 's/.*"IPAddress": "\(.*\)".*/\1/p')
mkdir -p $RUN/www/cgi-bin && echo "hello from demo-web ($WEB)" >$RUN/www/index.html
# httpd listens dual-stack and reports IPv4 clients as [::ffff:a.b.c.d].
cat >$RUN/www/cgi-bin/whoami <<CGI
#!/bin/sh
addr=\${REMOTE_ADDR#[::ffff:}
printf 'Content-Type: text/plain\r\n\r\ndemo-web ($WEB) sees you as %s\n' "\${addr%]}"
CGI
chmod +x $RUN/www/cgi-bin/whoami
"$BIN" exec demo-web -- busybox httpd -p 80 -h $RUN/www

step "demo-client reaches demo-web"
show "$BIN" exec demo-client -- busybox ping -c 2 "$WEB"
show "$BIN" exec demo-client -- curl -sS -m 3 "http://$WEB/"

step "Publish port 80 of demo-web on the host's port 8080"
show "$BIN" publish 8080:80 demo-web
show "$BIN" port demo-web

step "From the client, through the uplink program: the sandbox sees the client's own address"
printf '$ ip netns exec %s curl http://%s:8080/cgi-bin/whoami\n' $CLIENT $HOST_IP
out=$(ip netns exec $CLIENT curl -sS -m 3 "http://$HOST_IP:8080/cgi-bin/whoami")
echo "$out"
case "$out" in *"sees you as $CLIENT_IP"*) ;; *) echo "the client's address was not preserved" >&2; exit 1 ;; esac

step "From a host process to 127.0.0.1:8080, through the socket hooks: no proxy"
printf '$ ip netns exec %s curl http://127.0.0.1:8080/cgi-bin/whoami\n' $HOST
ip netns exec $HOST curl -sS -m 3 "http://127.0.0.1:8080/cgi-bin/whoami"
printf '$ ip netns exec %s ss -tln   # nothing listens on 8080\n' $HOST
ip netns exec $HOST ss -tln
if ip netns exec $HOST ss -Htln | grep -q ':8080 '; then echo "a process listens on 8080" >&2; exit 1; fi

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
for counter in from_container/drop_cross_network uplink/dnat socket/dnat; do
	n=$("$BIN" status -o json | tr -d ' \n' | grep -o "\"program\":\"${counter%/*}\",\"verdict\":\"${counter#*/}\",\"packets\":[0-9]*" | grep -o '[0-9]*$')
	[ "${n:-0}" -gt 0 ] || { echo "counter $counter did not move" >&2; exit 1; }
done
rules=$(ip netns exec $HOST iptables-save | grep -c '^-A' || true)
printf '\niptables rules in the demo host: %s\n' "$rules"
[ "$rules" -eq 0 ] || exit 1

step "Done: cleaning up"
