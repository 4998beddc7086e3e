#!/bin/sh
# imds: the daemon and its CLI, run by the Node.js runtime the package carries in
# /usr/lib/imds/node (imds never uses the host's node). --max-semi-space-size=2: a 2 MB young
# generation (docs/performance.md, memory); bin/imds in a checkout does the same.
exec /usr/lib/imds/node/bin/node --max-semi-space-size=2 /usr/lib/imds/dist/main.js "$@"
