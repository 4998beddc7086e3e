#!/usr/bin/env bash
# The system test's host tools (root, Debian): debootstrap (the container's root), systemd-container
# (systemd-nspawn), util-linux (nsenter, setpriv) and tar (the root's cache). Installs only
# what is missing, like scripts/setup.sh: no service is started as a side effect (policy-rc.d), and
# the policy file it creates is removed on every exit path, apt failing or the script interrupted.
set -euo pipefail
PACKAGES=(debootstrap systemd-container util-linux tar)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "host-tools: missing Debian packages: ${missing[*]} (the system test runs as root)" >&2
  exit 1
fi
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  trap 'exit 130' INT TERM HUP
fi
echo "host-tools: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
