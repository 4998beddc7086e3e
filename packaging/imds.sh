#!/bin/sh
# imds: the daemon and its CLI, run by the Node.js runtime the package carries in
# /usr/lib/imds/node (imds never uses the host's node). The flags and MALLOC_ARENA_MAX are the
# daemon's memory settings, explained in bin/imds and docs/performance.md (memory); an operator's
# own MALLOC_ARENA_MAX wins.
MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
export MALLOC_ARENA_MAX
exec /usr/lib/imds/node/bin/node --max-semi-space-size=2 --no-concurrent-recompilation /usr/lib/imds/dist/main.js "$@"
