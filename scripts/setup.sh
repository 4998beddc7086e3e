#!/usr/bin/env bash
# Installs what imds needs on a Debian machine (root), then its npm dependencies, then builds it.
# Idempotent: packages already present are not reinstalled, npm ci runs only when the lockfile changed.
#   --bench   also what the benchmarks need (lighttpd for the peer, wrk, a C compiler)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  iproute2 nftables util-linux procps curl ca-certificates   # the data path and the test harness
  python3 make g++                                          # node-gyp: the setns addon
  systemd                                                   # systemd-notify (sd_notify), systemd-analyze verify (tests)
  cloud-init                                                # its readers are the client in tests
  dnsmasq-base                                              # per-network DHCP (the daemon runs it, no service)
  busybox tcpdump                                           # tests: udhcpc as a guest DHCP client, uplink capture
  genisoimage dosfstools mtools                             # config drives: ISO 9660, vfat (mkfs.vfat + mcopy)
  xorriso                                                   # tests: extract ISO images without mounting
)
if [ "${1:-}" = "--bench" ]; then
  PACKAGES+=(lighttpd wrk gcc)                              # the peer, steady load, bench/storm.c
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  # cloud-init must never act on this host: disable it before it is installed.
  mkdir -p /etc/cloud && touch /etc/cloud/cloud-init.disabled
  # Never start services (lighttpd, dnsmasq, …) as a side effect of installing them.
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && created_policy=1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

# npm: node-gyp builds against the local Node headers (no download).
if [ -d /usr/include/node ]; then export npm_config_nodedir="${npm_config_nodedir:-/usr}"; fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] || [ ! -f native/build/Release/imds_netns.node ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
fi
npm run --silent build
echo "setup: ready ($(node --version), $(ip -V | head -1), $(nft --version))"
