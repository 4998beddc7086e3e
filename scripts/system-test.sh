#!/usr/bin/env bash
# The system test (test/system/system.test.ts): the Debian package under systemd as PID 1, in a
# Debian 12 container booted by systemd-nspawn (no network; its root is made by debootstrap once
# and cached in /var/cache/imds-systest). Root only. It installs the host tools it needs
# (scripts/setup.sh --system), builds two packages from this checkout (this version, and a higher
# one for the upgrade), runs the test, and fails when the test fails, when any test was skipped, or
# when the run left a container, a directory or a cgroup behind.
#   IMDS_SYSTEST_MIRROR   Debian mirror for debootstrap (default http://deb.debian.org/debian)
#   IMDS_SYSTEST_CACHE    where the root is cached (default /var/cache/imds-systest)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "system-test: $*"; }
if [ "$(id -u)" -ne 0 ]; then
  echo "system-test: must run as root: it boots a container with systemd-nspawn (a run without root is refused, not skipped)" >&2
  exit 1
fi
t_start=$SECONDS

./scripts/setup.sh --system   # debootstrap, systemd-nspawn, the package's tools; npm ci and the build
node --import tsx test/system/leftovers.ts --sweep

work="$(mktemp -d "${TMPDIR:-/tmp}/imds-systest-run.XXXXXX")"
# What this script started and still runs (by pid): the package builds, then the test (its runner
# passes SIGTERM on to the test process, which then kills its container: container.ts).
children=()
cleanup() {
  local pid
  for pid in "${children[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${children[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf -- "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# The two packages, built side by side (each in its own staging directory).
base="$(node -p 'require("./package.json").version')"
upgrade="${base}+systest1"
t0=$SECONDS
./scripts/package.sh --out "$work/base" >"$work/base.log" 2>&1 &
children+=("$!")
./scripts/package.sh --version "$upgrade" --out "$work/upgrade" >"$work/upgrade.log" 2>&1 &
children+=("$!")
failed=0
for i in 0 1; do
  wait "${children[$i]}" || failed=1
done
children=()
if [ "$failed" -ne 0 ]; then
  echo "system-test: building the packages failed:" >&2
  cat "$work/base.log" "$work/upgrade.log" >&2
  exit 1
fi
deb=("$work"/base/imds_*.deb)
deb_upgrade=("$work"/upgrade/imds_*.deb)
[ -f "${deb[0]}" ] && [ -f "${deb_upgrade[0]}" ] || { echo "system-test: package.sh made no .deb" >&2; exit 1; }
say "packages: $(basename "${deb[0]}") and $(basename "${deb_upgrade[0]}") built in $((SECONDS - t0)) s"
# What the closing notes and docs/install.md quote: the size and the Depends line, as built.
say "package $(basename "${deb[0]}"): $(stat -c %s "${deb[0]}") bytes, $(dpkg-deb -f "${deb[0]}" Installed-Size) KiB installed"
say "package Depends: $(dpkg-deb -f "${deb[0]}" Depends)"

t0=$SECONDS
status=0
# In the background, so that a signal to this script reaches the trap (and the test) at once.
IMDS_SYSTEST_DEB="${deb[0]}" IMDS_SYSTEST_DEB_UPGRADE="${deb_upgrade[0]}" \
  node --import tsx --test --test-concurrency=1 --test-timeout=1800000 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=./test/helpers/skip-reporter.mjs --test-reporter-destination="$work/skips" \
  test/system/system.test.ts &
children+=("$!")
wait "${children[0]}" || status=$?
children=()
say "the test took $((SECONDS - t0)) s"

node --import tsx test/system/leftovers.ts --check || status=1
if [ -s "$work/skips" ]; then
  echo "system-test: FAILED: $(wc -l <"$work/skips") test(s) did not run; every test must run here:" >&2
  sed 's/^/system-test:   /' "$work/skips" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "system-test: FAILED after $((SECONDS - t_start)) s" >&2
  exit "$status"
fi
say "passed: every test ran, nothing was left behind ($((SECONDS - t_start)) s in all)"
