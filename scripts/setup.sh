#!/usr/bin/env bash
# Installs what imds needs on a Debian machine (root), then its npm dependencies, then builds it.
# Idempotent: packages already present are not reinstalled, npm ci runs only when the lockfile changed.
#   --test    also what the tests need (cloud-init's readers, busybox, lintian, promtool, and what --system and --fuzz add)
#   --system  also what the system test needs (debootstrap, systemd-nspawn, the package's build tools)
#   --fuzz    also what scripts/fuzz.sh needs (clang, libFuzzer)
#   --bench   also what the benchmarks need (lighttpd and nginx for the peers, wrk, a C compiler, perf, etcd for bench:registry, iperf3)
# A production host needs none of this: it installs the .deb (docs/install.md).
#
# What it changes on the host (docs/architecture.md, safety rules for tests, lists the same), and
# only when a package is missing:
#   - apt-get update, then apt-get install of the missing packages (nothing else is upgraded);
#   - /usr/sbin/policy-rc.d ("exit 101": no service starts while installing), only if there was
#     none, removed on every exit path;
#   - /etc/cloud/cloud-init.disabled, only when it installs cloud-init (--test) and the file is not
#     there: cloud-init never configures this host. Removed again (and /etc/cloud if it made it) when
#     the run fails before cloud-init is installed;
#   - `systemctl disable prometheus.service` and `systemctl disable etcd.service`, only when it
#     installed prometheus or etcd-server: the tests need promtool and start their own etcd members,
#     and neither service may start at the next boot.
# In the checkout: node_modules and native/build (npm ci), dist (the build).
set -euo pipefail
cd "$(dirname "$0")/.."

# Node first: everything below needs it, and Debian 12's own nodejs (18) is too old.
need="20.19"
have="$(node --version 2>/dev/null | sed 's/^v//')" || have=""
if [ -z "$have" ] || ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit((a === 20 && b >= 19) || a >= 22 ? 0 : 1)'; then
  echo "setup: imds needs Node.js >= $need (20.x) or >= 22; found: ${have:-none}" >&2
  echo "setup: Debian 12's nodejs package is 18. Install Node 20 from https://nodejs.org/en/download (the" >&2
  echo "setup: linux-x64 tarball, unpacked onto PATH) or from NodeSource's Debian repository, then rerun." >&2
  echo "setup: (Production hosts do not need this: the imds .deb carries its own Node runtime.)" >&2
  exit 1
fi

PACKAGES=(
  iproute2 nftables util-linux procps curl ca-certificates   # the data path and the harness
  python3 make g++                                          # node-gyp: the setns addon
  dnsmasq-base                                              # per-network DHCP (the daemon runs it, no service)
  genisoimage dosfstools mtools                             # config drives: ISO 9660, vfat (mkfs.vfat + mcopy)
)
PACKAGE_TOOLS=(dpkg-dev binutils)                           # npm run package: dpkg-shlibdeps, strip
SYSTEM_TOOLS=(debootstrap systemd-container etcd-server etcd-client "${PACKAGE_TOOLS[@]}") # the system test: a Debian root booted by systemd-nspawn; etcd for its registry step
FUZZ_TOOLS=(clang libclang-rt-14-dev)                         # scripts/fuzz.sh: clang and libFuzzer's runtime
for arg in "$@"; do
  case "$arg" in
    --test) PACKAGES+=(
      cloud-init                                            # its readers are the client in tests
      busybox tcpdump                                       # udhcpc as a guest DHCP client, uplink capture
      xorriso                                               # extract ISO images without mounting
      systemd man-db                                        # systemd-analyze verify and security (man: the unit's Documentation=)
      lintian                                               # the package test
      prometheus                                            # promtool: the metrics scrape and the alert rules (its service is never started)
      etcd-server etcd-client openssl                       # the registry tests run their own etcd members (its service is never started)
      "${SYSTEM_TOOLS[@]}" "${FUZZ_TOOLS[@]}"
    ) ;;
    --system) PACKAGES+=("${SYSTEM_TOOLS[@]}") ;;
    --fuzz) PACKAGES+=("${FUZZ_TOOLS[@]}") ;;
    --bench) PACKAGES+=(lighttpd nginx wrk gcc linux-perf etcd-server etcd-client iperf3) ;; # the peers, steady load, bench/storm.c, bench:profile, bench:registry's cluster, the tenant bench
    *) echo "setup: unknown argument: $arg (usage: scripts/setup.sh [--test] [--system] [--fuzz] [--bench])" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  # What this run wrote that a failure must take back (the EXIT trap below).
  made_policy=0 made_cloud_dir=0 made_cloud_disabled=0
  undo_on_exit() {
    local rc=$?
    if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    # cloud-init.disabled stays once cloud-init is on disk (unpacked counts: its units are there);
    # if the run failed before that, nothing needs it and it goes.
    if [ "$rc" -ne 0 ] && [ "$made_cloud_disabled" = 1 ]; then
      case "$(dpkg-query -W -f='${db:Status-Status}' cloud-init 2>/dev/null || true)" in
        '' | not-installed | config-files)
          rm -f /etc/cloud/cloud-init.disabled
          if [ "$made_cloud_dir" = 1 ]; then rmdir /etc/cloud 2>/dev/null || true; fi
          echo "setup: failed before cloud-init was installed; removed the /etc/cloud/cloud-init.disabled it wrote" >&2
          ;;
        *) echo "setup: failed, but cloud-init is on disk: /etc/cloud/cloud-init.disabled stays" >&2 ;;
      esac
    fi
    return "$rc"
  }
  trap undo_on_exit EXIT
  trap 'exit 130' INT TERM HUP   # an interrupted install undoes too (through the EXIT trap)
  # Never start services (lighttpd, dnsmasq, …) as a side effect of installing them; the policy
  # file is removed on every exit path, apt failing included.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    made_policy=1
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  fi
  # The tests (--test only) use cloud-init's readers as the client. Installing it must not make it
  # act on this host at the next boot: only when this script installs it (never when the host has
  # its own), it is disabled, and that is said.
  for p in "${missing[@]}"; do
    if [ "$p" = cloud-init ] && [ ! -e /etc/cloud/cloud-init.disabled ]; then
      if [ ! -d /etc/cloud ]; then made_cloud_dir=1; fi
      made_cloud_disabled=1
      mkdir -p /etc/cloud && touch /etc/cloud/cloud-init.disabled
      echo "setup: installing cloud-init for the tests (its readers are the client); wrote /etc/cloud/cloud-init.disabled so that it never configures this host"
    fi
  done
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The tests need only promtool from the prometheus package: its server was not started (policy-rc.d
  # above), and it must not start at the next boot either. Only when this script installed it.
  for p in "${missing[@]}"; do
    if [ "$p" = prometheus ]; then
      systemctl disable prometheus.service >/dev/null 2>&1 || true
      echo "setup: installed prometheus for promtool only; its service is disabled (never started)"
    fi
    if [ "$p" = etcd-server ]; then
      systemctl disable etcd.service >/dev/null 2>&1 || true
      echo "setup: installed etcd-server for the registry tests and bench (they start their own members); its service is disabled (never started)"
    fi
  done
fi

# npm: node-gyp builds against the local Node headers (no download).
if [ -d /usr/include/node ]; then export npm_config_nodedir="${npm_config_nodedir:-/usr}"; fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] || [ ! -f native/build/Release/imds_netns.node ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
fi
npm run --silent build
echo "setup: ready ($(node --version), $(ip -V | head -1), $(nft --version))"
