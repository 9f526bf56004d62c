#!/bin/sh
# make demo: a subscriber and a publisher on one channel in a private
# directory of /dev/shm, then the channel's counters.  Direct mode: the
# daemon (shmbusd) and busstat are not built yet.
set -e
build=${1:-build}
dir=$(mktemp -d /dev/shm/shmbus-demo-XXXXXX)
trap 'rm -rf "$dir"' EXIT
"$build/examples/sub" "$dir" 10 &
sub=$!
sleep 0.2
"$build/examples/pub" "$dir" 10
wait $sub
echo "demo: done; the channel file was $dir/demo"
