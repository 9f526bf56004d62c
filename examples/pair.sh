#!/bin/sh
# make demo, second part: an HA pair.  Two shmbusd of bus "pair", A the
# primary and B its standby, each in its own network namespace joined by
# a veth pair (as root), else both on the loopback.  A publisher on A
# waits for every message to be applied on B (shmbus_pub_sync), busstat
# shows both sides and the standby's lag, then shmbusctl switchover makes
# B the primary and A its standby.
set -e
build=${1:-build}
dir=$(mktemp -d /dev/shm/shmbus-pair-XXXXXX)
pa= pb= ns=
cleanup() {
	for p in $pa $pb; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
	if [ -n "$ns" ]; then
		ip netns del "shmbus-demo-a$ns" 2>/dev/null
		ip netns del "shmbus-demo-b$ns" 2>/dev/null
	fi
	rm -rf "$dir"
	true
}
trap cleanup EXIT INT TERM
if [ "$(id -u)" = 0 ] && ip netns list >/dev/null 2>&1; then
	ns=$$
	ip netns add "shmbus-demo-a$ns"
	ip netns add "shmbus-demo-b$ns"
	ip link add "sda$ns" type veth peer name "sdb$ns"
	ip link set "sda$ns" netns "shmbus-demo-a$ns"
	ip link set "sdb$ns" netns "shmbus-demo-b$ns"
	ip -n "shmbus-demo-a$ns" addr add 10.199.0.1/24 dev "sda$ns"
	ip -n "shmbus-demo-b$ns" addr add 10.199.0.2/24 dev "sdb$ns"
	for h in a b; do
		ip -n "shmbus-demo-$h$ns" link set "sd$h$ns" up
		ip -n "shmbus-demo-$h$ns" link set lo up
	done
	# A 50 Mbit/s link, so that the standby's lag can be seen.
	ip netns exec "shmbus-demo-a$ns" tc qdisc add dev "sda$ns" root tbf \
		rate 50mbit burst 64kb latency 50ms 2>/dev/null ||
		echo "(no tbf here: the link runs at full speed)"
	addr_a=10.199.0.1:7400 addr_b=10.199.0.2:7400
	run_a="ip netns exec shmbus-demo-a$ns" run_b="ip netns exec shmbus-demo-b$ns"
	echo "--- two hosts: network namespaces shmbus-demo-a$ns (10.199.0.1) and shmbus-demo-b$ns (10.199.0.2), a veth pair at 50 Mbit/s"
else
	addr_a=127.0.0.1:17401 addr_b=127.0.0.1:17402
	run_a= run_b=
	echo "--- two daemons on the loopback (run as root for two network namespaces)"
fi
head -c 32 /dev/urandom > "$dir/key"
chmod 600 "$dir/key"
for h in a b; do
	if [ $h = a ]; then role=primary me=$addr_a peer=$addr_b
	else role=standby me=$addr_b peer=$addr_a; fi
	mkdir -p "$dir/$h"
	cat > "$dir/$h/pair.conf" <<CONF
[bus]
name = pair
shm_dir = $dir/$h/shm
socket = $dir/$h/pair.sock
log_level = notice
[replication]
role = $role
listen = $me
peer = $peer
transport = tcp
key_file = $dir/key
state_dir = $dir/$h/state
[channel orders]
capacity = 4M
max_msg = 1K
replicate = applied
CONF
done
SHMBUS_RUN_DIR=$dir/a $run_a "$build/shmbusd" -c "$dir/a/pair.conf" 2> "$dir/a/log" &
pa=$!
SHMBUS_RUN_DIR=$dir/b $run_b "$build/shmbusd" -c "$dir/b/pair.conf" 2> "$dir/b/log" &
pb=$!
for i in $(seq 50); do grep -q "linked to primary" "$dir/b/log" 2>/dev/null && break; sleep 0.1; done
echo "--- A's config:"; sed -n '/replication/,$p' "$dir/a/pair.conf"
echo "--- shmbusctl status, on A and on B"
"$build/tools/shmbusctl" -b "$dir/a/pair.sock" status
"$build/tools/shmbusctl" -b "$dir/b/pair.sock" status

echo "--- pub -s on A: 2000 messages, each waited for until B applied it"
"$build/examples/pub" -b "$dir/a/pair.sock" -c orders -s x 2000 0
echo "--- pub on A: 200000 messages, not waited for, while busstat looks at both"
"$build/examples/pub" -b "$dir/a/pair.sock" -c orders x 200000 0 &
pub=$!
sleep 0.3
echo "--- busstat on A (primary): the standby's lag"
"$build/tools/busstat" -d "$dir/a/shm" | sed -n '/REPLICATED/,$p'
echo "--- busstat on B (standby)"
"$build/tools/busstat" -d "$dir/b/shm" | sed -n '/REPLICATED/,$p'
wait $pub
for i in $(seq 100); do
	ha=$("$build/tools/busstat" -d "$dir/a/shm" --json | sed 's/.*"head":\([0-9]*\).*/\1/')
	hb=$("$build/tools/busstat" -d "$dir/b/shm" --json | sed 's/.*"head":\([0-9]*\).*/\1/')
	[ "$ha" = "$hb" ] && break; sleep 0.05
done
echo "--- caught up: A's head $ha, B's head $hb"
"$build/tools/busstat" -d "$dir/a/shm" -c orders | sed -n '1,4p'
echo "--- shmbusctl switchover, on A"
"$build/tools/shmbusctl" -b "$dir/a/pair.sock" switchover
sleep 0.2
"$build/tools/shmbusctl" -b "$dir/a/pair.sock" status
"$build/tools/shmbusctl" -b "$dir/b/pair.sock" status
echo "--- pub -s on B, the new primary: 1000 messages applied on A"
"$build/examples/pub" -b "$dir/b/pair.sock" -c orders -s x 1000 0
echo "--- busstat on B, then on A"
"$build/tools/busstat" -d "$dir/b/shm" | sed -n '/REPLICATED/,$p'
"$build/tools/busstat" -d "$dir/a/shm" | sed -n '/REPLICATED/,$p'
echo "--- A's log:"; cat "$dir/a/log"
echo "--- B's log:"; cat "$dir/b/log"
echo "pair: done"
