#!/usr/bin/env bash
# Installs a built checkout: the program under $PREFIX/lib/imds, `imds` on PATH ($PREFIX/bin), the
# systemd unit, and an example configuration if none exists. Run `sudo ./scripts/setup.sh` first.
#   PREFIX   default /usr/local
#   DESTDIR  stage into this directory instead of / (packaging, tests); nothing is started
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="${PREFIX:-/usr/local}"
DESTDIR="${DESTDIR:-}"
lib="$DESTDIR$PREFIX/lib/imds"

[ -f dist/main.js ] || { echo "install: dist/ missing; run ./scripts/setup.sh (or npm run build) first" >&2; exit 1; }
[ -f native/build/Release/imds_netns.node ] || { echo "install: the setns addon is not built; run ./scripts/setup.sh" >&2; exit 1; }

echo "install: $lib"
rm -rf "$lib.new"
mkdir -p "$lib.new"
cp -a package.json package-lock.json bin dist native docs systemd examples "$lib.new/"
cp -a node_modules "$lib.new/"
rm -rf "$lib.new/native/build/Release/obj.target" "$lib.new/native/build/Release/.deps"
(cd "$lib.new" && npm prune --omit=dev --no-audit --no-fund >/dev/null 2>&1 || true)
rm -rf "$lib"
mv "$lib.new" "$lib"

mkdir -p "$DESTDIR$PREFIX/bin"
ln -sfn "../lib/imds/bin/imds" "$DESTDIR$PREFIX/bin/imds"

unit_dir="$DESTDIR/etc/systemd/system"
mkdir -p "$unit_dir"
sed -e "s#/usr/local/bin/imds#$PREFIX/bin/imds#g" -e "s#/usr/local/lib/imds#$PREFIX/lib/imds#g" systemd/imds.service > "$unit_dir/imds.service"
chmod 0644 "$unit_dir/imds.service"

mkdir -p "$DESTDIR/etc/imds"
if [ ! -e "$DESTDIR/etc/imds/imds.yaml" ]; then
  install -m 0640 examples/imds.yaml "$DESTDIR/etc/imds/imds.yaml"
  echo "install: wrote an example /etc/imds/imds.yaml (edit it before starting)"
fi

if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  echo "install: start with: systemctl enable --now imds"
fi
echo "install: done ($PREFIX/bin/imds -> $PREFIX/lib/imds/bin/imds)"
