#!/usr/bin/env bash
# make demo-fleet: a local fleet of three edgeproxy nodes on one etcd, each
# in a network namespace of its own, joined by a bridge in a hub namespace.
# Needs root, iproute2 and Debian's etcd (/usr/bin/etcd). It touches no
# address or route of the host's namespace: everything lives in the
# namespaces named edgeproxy-demo-*, and Ctrl-C (or SIGTERM) stops the
# processes it started, by their pids, and deletes those namespaces.
#
#   scripts/demo-fleet.sh [BINARY]     (default bin/edgeproxy)
#
# Each node's admin API listens on 127.0.0.1:9180 inside its own namespace:
# reach it with "ip netns exec edgeproxy-demo-N edgeproxy ...".
set -euo pipefail

BIN=$(readlink -f "${1:-bin/edgeproxy}")
ETCD=${ETCD:-/usr/bin/etcd}
NS=edgeproxy-demo
HUB=$NS-hub
NODES=3

[ "$(id -u)" = 0 ] || { echo "demo-fleet: needs root (network namespaces, the data plane)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "demo-fleet: no edgeproxy binary at $BIN (make build)" >&2; exit 1; }
[ -x "$ETCD" ] || { echo "demo-fleet: no etcd at $ETCD (apt-get install etcd-server)" >&2; exit 1; }
command -v ip >/dev/null || { echo "demo-fleet: needs ip (iproute2)" >&2; exit 1; }
for n in "$HUB" $(seq -f "$NS-%g" 1 $NODES); do
	if [ -e "/run/netns/$n" ]; then
		echo "demo-fleet: namespace $n exists: another demo runs, or one was killed; ip netns del $n" >&2
		exit 1
	fi
done

DIR=$(mktemp -d /tmp/edgeproxy-demo.XXXXXX)
PIDS=()
NAMESPACES=()

cleanup() {
	trap - INT TERM EXIT
	echo
	echo "demo-fleet: stopping"
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	for n in "${NAMESPACES[@]}"; do ip netns del "$n" 2>/dev/null || true; done
	rm -rf "$DIR"
	echo "demo-fleet: stopped; namespaces deleted"
}
trap cleanup EXIT
trap 'exit 0' INT   # Ctrl-C is how the demo stops: not a failure
trap 'exit 0' TERM

# nsrun NS CMD...: run CMD inside the namespace NS.
nsrun() { local n=$1; shift; ip netns exec "$n" "$@"; }

# The hub: a bridge holding 198.18.0.1/24, and etcd on it.
ip netns add "$HUB"; NAMESPACES+=("$HUB")
nsrun "$HUB" ip link set lo up
nsrun "$HUB" ip link add br0 type bridge
nsrun "$HUB" ip addr add 198.18.0.1/24 dev br0
nsrun "$HUB" ip link set br0 up

for i in $(seq 1 $NODES); do
	n=$NS-$i addr=198.18.0.1$i
	ip netns add "$n"; NAMESPACES+=("$n")
	nsrun "$n" ip link set lo up
	# The prefix the nodes serve is local inside each node's namespace.
	nsrun "$n" ip route add local 192.0.2.0/24 dev lo
	nsrun "$HUB" ip link add "dv$i" type veth peer name eth0 netns "$n"
	nsrun "$HUB" ip link set "dv$i" master br0
	nsrun "$HUB" ip link set "dv$i" up
	nsrun "$n" ip addr add "$addr/24" dev eth0
	nsrun "$n" ip link set eth0 up
done

ip netns exec "$HUB" "$ETCD" --name=demo --data-dir="$DIR/etcd" \
	--listen-client-urls=http://198.18.0.1:2379 --advertise-client-urls=http://198.18.0.1:2379 \
	--listen-peer-urls=http://198.18.0.1:2380 --initial-advertise-peer-urls=http://198.18.0.1:2380 \
	--initial-cluster=demo=http://198.18.0.1:2380 --initial-cluster-state=new \
	>"$DIR/etcd.log" 2>&1 &
PIDS+=($!)

for i in $(seq 1 $NODES); do
	n=$NS-$i id=edge-$i
	role=main
	[ "$i" = 3 ] && role=canary
	cat >"$DIR/$id.yaml" <<YAML
node: $id
labels: {role: $role}
admin: {listen: 127.0.0.1:9180}
shutdown_grace: 1s
dispatch: {pin_dir: ""}
store:
  path: $DIR/$id.db
  etcd: {endpoints: ["http://198.18.0.1:2379"], dial_timeout: 2s, node_ttl: 5s}
prefixes: [{cidr: 192.0.2.0/24, service: spectrum}]
spectrum:
  apps: [{name: probe, protocol: tcp, edge: 192.0.2.0/24, ports: "7000", origins: ["127.0.0.1:7001"]}]
YAML
	ip netns exec "$n" "$BIN" demo-origin 127.0.0.1:7001 "$id" >"$DIR/$id-origin.log" 2>&1 &
	PIDS+=($!)
	ip netns exec "$n" "$BIN" run --config "$DIR/$id.yaml" >"$DIR/$id.log" 2>&1 &
	PIDS+=($!)
done

# Wait until node 1 sees all three nodes.
up=
for _ in $(seq 150); do
	if nsrun "$NS-1" "$BIN" fleet 2>/dev/null | grep -q "^$NODES node(s)"; then up=1; break; fi
	sleep 0.1
done
if [ -z "$up" ]; then
	echo "demo-fleet: the fleet did not come up; the logs:" >&2
	tail -n 20 "$DIR"/*.log >&2
	exit 1
fi

# One binding made through node 1's API: 192.0.2.128/25 to the cdn, which
# does not serve tcp/7000 here, so its addresses refuse.
out=$(nsrun "$NS-1" "$BIN" bindings add --wait 5s 192.0.2.128/25 cdn)
ID=$(sed -n 's/.*(id \([0-9a-f]*\),.*/\1/p' <<<"$out")

EP="ip netns exec"
cat <<TEXT
edgeproxy demo fleet: etcd at 198.18.0.1:2379 (namespace $HUB), nodes
edge-1, edge-2 (role=main) and edge-3 (role=canary) at 198.18.0.11-13, each
in the namespace $NS-N, serving 192.0.2.0/24 to spectrum (an app on
tcp/7000 whose origin answers with its node's name). Node 1 made
$out

Each node's admin API is 127.0.0.1:9180 inside its namespace. Try:

  $EP $NS-1 $BIN nodes
  $EP $NS-3 $BIN dial 192.0.2.130:7000 hi        # refused: the cdn holds 192.0.2.128/25
  $EP $NS-1 $BIN bindings move --wait 5s $ID spectrum
  $EP $NS-3 $BIN dial 192.0.2.130:7000 hi        # "edge-3: hi": node 3 steers it to spectrum
  $EP $NS-1 $BIN bindings move --canary role=canary $ID cdn
  $EP $NS-1 $BIN bindings promote $ID           # or rollback
  $EP $NS-2 $BIN audit

Logs in $DIR. Ctrl-C stops the demo and deletes its namespaces.
TEXT

wait
