#!/bin/sh
# make demo: a subscriber and a publisher on one channel in a private
# directory of /dev/shm, then busstat's view of it.  Direct mode: the
# daemon (shmbusd) is not built yet.
set -e
build=${1:-build}
dir=$(mktemp -d /dev/shm/shmbus-demo-XXXXXX)
trap 'rm -rf "$dir"' EXIT
"$build/examples/sub" "$dir" 10 &
sub=$!
sleep 0.2
"$build/examples/pub" "$dir" 10
wait $sub
"$build/tools/busstat" -d "$dir"
"$build/tools/busstat" -d "$dir" -c demo
echo "demo: done; the channel file was $dir/demo"
