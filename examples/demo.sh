#!/bin/sh
# make demo: shmbusd on examples/demo.conf in a private directory, a
# subscriber and a publisher that open the "trades" channel through it,
# busstat's view while they run, shmbusctl's, then a clean stop.  Every
# program names the bus, "demo": SHMBUS_RUN_DIR points at the private
# directory, where shmbusd writes demo.bus (its socket and shm_dir).
set -e
build=${1:-build}
dir=$(mktemp -d /dev/shm/shmbus-demo-XXXXXX)
daemon=
cleanup() {
	[ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" || true
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM
sock="$dir/demo.sock"
SHMBUS_RUN_DIR=$dir
export SHMBUS_RUN_DIR

echo "--- shmbusd -c examples/demo.conf -d $dir/shm -S $sock"
"$build/shmbusd" -c examples/demo.conf -d "$dir/shm" -S "$sock" 2> "$dir/shmbusd.log" &
daemon=$!
for i in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
cat "$dir/shmbusd.log"
echo "--- the bus file, $dir/demo.bus:"
cat "$dir/demo.bus"

"$build/examples/sub" -b demo -c trades x 40 > "$dir/sub.log" &
sub=$!
sleep 0.2
"$build/examples/pub" -b demo -c trades x 40 25 &
pub=$!
sleep 0.5
echo "--- busstat demo 0.25 2   (while they run)"
"$build/tools/busstat" demo 0.25 2
echo "--- busstat demo -c trades"
"$build/tools/busstat" demo -c trades
echo "--- shmbusctl -b demo list"
"$build/tools/shmbusctl" -b demo list
wait $pub $sub
echo "--- the subscriber received:"
head -3 "$dir/sub.log"; echo "  ..."; tail -1 "$dir/sub.log"
kill "$daemon"; wait "$daemon" || true; daemon=
echo "--- shmbusd's log:"
cat "$dir/shmbusd.log"
echo "--- part two: a consumer group, a producer and three workers (examples/workers.c)"
"$build/examples/workers" 100000
echo "--- part three: an HA pair (examples/pair.sh)"
sh examples/pair.sh "$build"
echo "demo: done"
