#!/usr/bin/env bash
# One command: set up this machine (Debian, root) and run every test: type check, lint and format
# check, unit tests, a bounded fuzz of the C request reader, integration tests (real namespaces,
# bridges, nftables and the daemon; once with each data plane) and the system test (the package under systemd). It fails when it is not
# root, when any test fails or is skipped (each skipped test is named with its reason), and when a
# daemon started by a test exits in a way the test did not ask for.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "test: must run as root: the integration tests build real network namespaces, bridges and nftables tables" >&2
  echo "test: (a run without root would test nothing of the data path; it is refused, not skipped)" >&2
  exit 1
fi
./scripts/setup.sh --test
./scripts/sweep.sh imdstest-
skips="$(mktemp -d -t imds-test-skips.XXXXXX)"
trap 'rm -rf "$skips"; ./scripts/sweep.sh imdstest-' EXIT
npm run --silent typecheck
npm run --silent lint        # ESLint (type-aware) and Prettier's check
IMDS_TEST_SKIPS="$skips/unit" npm run --silent test:unit
./scripts/fuzz.sh --seconds 60   # the C request reader under libFuzzer, ASan and UBSan, from the committed corpus
# The integration suite once per data plane: the native loop (the default), then node:http with the JS fast path.
for plane in native node; do
  echo "test: integration tests with data_plane: $plane"
  IMDS_TEST_DATA_PLANE="$plane" IMDS_TEST_SKIPS="$skips/integration-$plane" npm run --silent test:integration
done
./scripts/system-test.sh         # the package under systemd as PID 1 (a Debian container, systemd-nspawn)
if [ -n "$(cat "$skips"/* 2>/dev/null)" ]; then
  echo "test: FAILED: $(cat "$skips"/* | wc -l) test(s) did not run; every test must run here:" >&2
  cat "$skips"/* | sed 's/^/test:   /' >&2
  exit 1
fi
echo "test: passed: every test ran (none skipped)"
