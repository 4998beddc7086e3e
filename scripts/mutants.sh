#!/usr/bin/env bash
# Mutation check: applies deliberate bugs one at a time to a scratch copy of this tree and runs the
# tests that should catch each (scripts/mutants/catalogue.ts); fails unless every mutant is killed.
# Root (the tests it runs are integration tests). Takes ~20-30 minutes for the whole catalogue.
#   ./scripts/mutants.sh [--list] [--only NAME[,NAME…]] [--no-control] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then echo "mutants: must run as root (it runs integration tests)" >&2; exit 1; fi
./scripts/setup.sh --test >/dev/null
./scripts/sweep.sh imdstest-
trap './scripts/sweep.sh imdstest-' EXIT
node --import tsx scripts/mutants.ts "$@"
