#!/bin/sh
# make demo: a subscriber and a publisher on one channel in a private
# directory of /dev/shm, then busstat's view of it.  Direct mode: the
# daemon (shmbusd) is not built yet.
set -e
build=${1:-build}
dir=$(mktemp -d /dev/shm/shmbus-demo-XXXXXX)
trap 'rm -rf "$dir"' EXIT
"$build/examples/sub" "$dir" 40 > "$dir/.sub.log" &
sub=$!
sleep 0.2
"$build/examples/pub" "$dir" 40 25 &
pub=$!
sleep 0.5
echo "--- busstat while they run:"
"$build/tools/busstat" -d "$dir" 0.25 2
"$build/tools/busstat" -d "$dir" -c demo
wait $pub $sub
echo "--- the subscriber received:"
head -3 "$dir/.sub.log"; echo "  ..."; tail -1 "$dir/.sub.log"
echo "demo: done; the channel file was $dir/demo"
