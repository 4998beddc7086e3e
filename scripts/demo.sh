#!/usr/bin/env bash
# One command: set up this machine (Debian, root) and run the demo: a real network with three
# guest namespaces on its bridge, each fetching its own metadata through 169.254.169.254.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/sweep.sh imdsdemo-
exec node --import tsx scripts/demo.ts "$@"
