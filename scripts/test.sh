#!/usr/bin/env bash
# One command: set up this machine (Debian, root) and run every test: type check, unit tests (no
# root needed) and integration tests (root: real namespaces, bridges, nftables, the daemon).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/sweep.sh imdstest-
status=0
npm run --silent typecheck || status=$?
[ "$status" = 0 ] && { npm run --silent test:unit || status=$?; }
[ "$status" = 0 ] && { npm run --silent test:integration || status=$?; }
./scripts/sweep.sh imdstest-
exit "$status"
