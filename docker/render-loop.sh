#!/bin/sh
# render-loop COMMAND [ARG...]: run COMMAND again and again, like a render host that keeps
# getting tasks (the demo farm's render hosts run `stmpo render ...` or `openjd run ...`).
#
#   RENDER_LOOP_PAUSE  seconds between runs (default 10)
#   RENDER_LOOP_COUNT  number of runs, 0 = forever (default 0)
#
# SIGTERM or SIGINT (`docker compose stop`) is passed on to the running command as SIGTERM:
# stmpo then stops its slots and every aerender process tree, deletes its Redis keys and
# exits 143; the loop ends with it.
set -u
pause="${RENDER_LOOP_PAUSE:-10}"
count="${RENDER_LOOP_COUNT:-0}"
child=""

stop() {
    if [ -n "$child" ]; then
        kill -TERM "$child" 2>/dev/null
        wait "$child"
    fi
    exit 143
}
trap stop TERM INT

if [ "$#" -eq 0 ]; then
    echo "usage: render-loop COMMAND [ARG...]" >&2
    exit 2
fi

n=0
while :; do
    n=$((n + 1))
    echo "render-loop: run $n: $*"
    "$@" &
    child=$!
    wait "$child"
    code=$?
    child=""
    echo "render-loop: run $n ended with exit code $code"
    if [ "$count" -gt 0 ] && [ "$n" -ge "$count" ]; then
        exit "$code"
    fi
    sleep "$pause" &
    child=$!
    wait "$child"
    child=""
done
