#!/usr/bin/env bash
# Builds the Debian package from a built checkout (./scripts/setup.sh first): OUT/imds_<version>_<arch>.deb
# with the compiled JavaScript, the production node_modules with their native parts, the addon, and
# the Node.js runtime this checkout was built and tested with (`node` on PATH), all under
# /usr/lib/imds; /usr/bin/imds; the systemd unit; /etc/imds/imds.yaml (docs/install.md).
# Works offline: TypeScript compiles from src/, and node_modules are pruned from the checkout's.
#   --version V   the package's version (default: package.json's); the shipped package.json says V too
#   --out DIR     where the .deb goes (default: build/)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

die() {
  echo "package: $*" >&2
  exit 1
}

version=""
out="build"
while [ "$#" -gt 0 ]; do
  case "$1" in
    --version) version="${2:?--version needs a value}"; shift 2 ;;
    --version=*) version="${1#*=}"; shift ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --out=*) out="${1#*=}"; shift ;;
    -h | --help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (usage: scripts/package.sh [--version V] [--out DIR])" ;;
  esac
done

# --- What a built checkout has --------------------------------------------------------------------
for tool in dpkg-deb dpkg-shlibdeps dpkg node npm strip gzip md5sum; do
  command -v "$tool" >/dev/null || die "$tool is missing (Debian: apt-get install dpkg-dev binutils; node and npm: ./scripts/setup.sh)"
done
[ -d node_modules ] && [ -x node_modules/.bin/tsc ] || die "node_modules/ is missing: run ./scripts/setup.sh first"
[ -f dist/main.js ] || die "dist/ is missing: run ./scripts/setup.sh first (npm ci and the build)"
addon=native/build/Release/imds_netns.node
[ -f "$addon" ] || die "the addon ($addon) is not built: run ./scripts/setup.sh first"
for src in native/*.c native/*.h native/binding.gyp; do
  if [ "$src" -nt "$addon" ]; then die "$addon is older than $src: rebuild it (rm -rf native/build && ./scripts/setup.sh)"; fi
done
[ -f node_modules/better-sqlite3/build/Release/better_sqlite3.node ] || die "better-sqlite3 is not built: run ./scripts/setup.sh first"

node_bin="$(node -p 'process.execPath')"
node_version="$(node -p 'process.version')"
node_arch="$(node -p 'process.arch')"
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit((a === 20 && b >= 19) || a >= 22 ? 0 : 1)' ||
  die "node $node_version is too old for imds (20.19+ or 22+)"
node_license=""
for f in "$(dirname "$node_bin")/../LICENSE" "$(dirname "$node_bin")/../share/doc/node/LICENSE" /usr/share/doc/nodejs/LICENSE; do
  if [ -f "$f" ]; then node_license="$f"; break; fi
done
[ -n "$node_license" ] || die "cannot find the licence of $node_bin (LICENSE beside its bin/, or /usr/share/doc/nodejs/LICENSE)"

[ -n "$version" ] || version="$(node -p 'require("./package.json").version')"
[[ "$version" =~ ^[0-9][A-Za-z0-9.+~]*(-[A-Za-z0-9.+~]+)?$ ]] || die "not a Debian version: $version"
arch="$(dpkg --print-architecture)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
deb="$out/imds_${version}_${arch}.deb"

# --- The staging tree ---------------------------------------------------------------------------------
stage="$(mktemp -d "${TMPDIR:-/tmp}/imds-package.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
pkg="$stage/root"
lib="$pkg/usr/lib/imds"
doc="$pkg/usr/share/doc/imds"
mkdir -p "$lib" "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/usr/lib/systemd/system" "$pkg/etc/imds" "$doc/docs" \
  "$pkg/usr/share/man/man8" "$pkg/usr/share/lintian/overrides" \
  "$pkg/usr/share/bash-completion/completions" "$pkg/usr/share/zsh/vendor-completions"

echo "package: imds $version ($arch), Node $node_version from $node_bin"

# The JavaScript, compiled from src/ now (a stale dist/ can never be shipped); no source maps (src/
# is not shipped).
node_modules/.bin/tsc -p tsconfig.build.json --outDir "$lib/dist" --sourceMap false
cp package.json "$lib/"
if [ "$version" != "$(node -p 'require("./package.json").version')" ]; then
  node -e 'const fs = require("fs"); const f = process.argv[1]; const p = JSON.parse(fs.readFileSync(f, "utf8"));
    p.version = process.argv[2]; fs.writeFileSync(f, JSON.stringify(p, null, 2) + "\n");' "$lib/package.json" "$version"
fi

# Production node_modules: the checkout's, pruned of dev dependencies offline (npm reads the lockfile).
# node_modules/imds-netns links to ../native, so the addon is staged there for the prune and then
# moved in as a real directory.
cp package-lock.json "$lib/"
cp -a node_modules "$lib/"
mkdir -p "$lib/native/build/Release"
cp native/index.cjs native/index.d.cts native/package.json "$lib/native/"
cp "$addon" "$lib/native/build/Release/"
(cd "$lib" && npm prune --omit=dev --offline --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null) ||
  die "npm prune --omit=dev failed in the staging copy"
rm "$lib/node_modules/imds-netns"
mv "$lib/native" "$lib/node_modules/imds-netns"
rm -f "$lib/package-lock.json" "$lib/node_modules/.package-lock.json"
rm -rf "$lib/node_modules/.bin"

# What the modules carry for their own development, never loaded by imds: at each module's top
# level, its tests, benchmarks, examples, CI and hook settings, and HTML pages (pino's docs page
# loads scripts from CDNs). Their runtime files (yaml's dist/doc, for one) are deeper and stay.
while IFS= read -r -d '' manifest; do
  module="$(dirname "$manifest")"
  [ -d "$module" ] || continue # inside a directory removed by an earlier round
  case "$(basename "$(dirname "$module")")" in node_modules | @*) ;; *) continue ;; esac
  for junk in test tests __tests__ benchmark benchmarks bench example examples integration .github .husky; do
    rm -rf "${module:?}/$junk"
  done
  find "$module" -maxdepth 1 -type f -name '*.html' -delete
done < <(find "$lib/node_modules" -name package.json -type f -print0)

# Native parts: the built binaries only (no sources, objects, static libraries or test builds), and
# only this architecture's netlink prebuild.
sqlite="$lib/node_modules/better-sqlite3"
find "$sqlite/build" -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} +
find "$sqlite/build/Release" -mindepth 1 -maxdepth 1 ! -name better_sqlite3.node -exec rm -rf {} +
rm -rf "$sqlite/deps" "$sqlite/src" "$sqlite/binding.gyp"
netlink="$lib/node_modules/netlink"
[ -d "$netlink/prebuilds/linux-$node_arch" ] || die "netlink has no prebuild for linux-$node_arch"
find "$netlink/prebuilds" -mindepth 1 -maxdepth 1 ! -name "linux-$node_arch" -exec rm -rf {} +
rm -rf "$netlink/src" "$netlink/binding.gyp"
find "$lib/node_modules" \( -name '.git*' -o -name '.npmignore' -o -name '.eslintrc*' -o -name '.travis.yml' \) -exec rm -rf {} +
# The scopes of pruned dev dependencies (@eslint/, @types/, …) are left empty.
find "$lib/node_modules" -mindepth 1 -type d -empty -delete

# The Node runtime, with its licence.
mkdir -p "$lib/node/bin"
cp "$node_bin" "$lib/node/bin/node"
cp "$node_license" "$lib/node/LICENSE"

# Permissions: directories 0755, files 0644; executables only the ELF programs and the launcher.
# Shared objects (.node) are 0644 like Debian's libraries; the modules' own scripts are never run.
find "$pkg" -type d -exec chmod 0755 {} +
find "$pkg" -type f -exec chmod 0644 {} +
# Symbols only (what dh_strip does); the code is the same bytes that were tested.
strip --remove-section=.comment --remove-section=.note "$lib/node/bin/node"
find "$lib/node_modules" -name '*.node' -type f -exec strip --remove-section=.comment --remove-section=.note --strip-unneeded {} +
chmod 0755 "$lib/node/bin/node"

install -m 0755 packaging/imds.sh "$pkg/usr/bin/imds"
install -m 0644 systemd/imds.service "$pkg/usr/lib/systemd/system/imds.service"
install -m 0644 packaging/imds.yaml "$pkg/etc/imds/imds.yaml"
gzip -9n <packaging/imds.8 >"$pkg/usr/share/man/man8/imds.8.gz"
install -m 0644 packaging/lintian-overrides "$pkg/usr/share/lintian/overrides/imds"
# Shell completion, generated from the command tree of the code being packaged.
"$lib/node/bin/node" "$lib/dist/main.js" completion bash >"$pkg/usr/share/bash-completion/completions/imds"
"$lib/node/bin/node" "$lib/dist/main.js" completion zsh >"$pkg/usr/share/zsh/vendor-completions/_imds"
chmod 0644 "$pkg/usr/share/bash-completion/completions/imds" "$pkg/usr/share/zsh/vendor-completions/_imds"

# Documentation: README.md and docs/ (README's links stay valid), copyright, changelog.
install -m 0644 README.md "$doc/README.md"
install -m 0644 docs/*.md docs/openapi.json "$doc/docs/"
install -d -m 0755 "$doc/docs/monitoring" && install -m 0644 docs/monitoring/* "$doc/docs/monitoring/" # alert rules, a Grafana dashboard
modules="$(cd "$lib/node_modules" && find . -name package.json | LC_ALL=C sort |
  xargs node -e 'for (const f of process.argv.slice(1)) { const dir = f.slice(2, -"/package.json".length);
    if (!/^(@[^/]+\/)?[^/@]+$/.test(dir.split("/node_modules/").pop())) continue;
    const p = JSON.parse(require("fs").readFileSync(f, "utf8")); if (!p.name || !p.version) continue;
    const l = typeof p.license === "string" ? p.license : (p.license && p.license.type) || "see its directory";
    console.log(`  ${dir} ${p.version}: ${l}`); }')"
node -e 'const fs = require("fs"); const [tpl, dst, nodeVersion, modules] = process.argv.slice(1);
  fs.writeFileSync(dst, fs.readFileSync(tpl, "utf8").replace("@NODE_VERSION@", nodeVersion).replace("@MODULES@", modules));' \
  packaging/copyright "$doc/copyright" "$node_version" "Modules (version: licence):"$'\n'"$modules"
changelog="$stage/changelog"
top="$(sed -n '1s/^imds (\([^)]*\)).*/\1/p' packaging/changelog)"
if [ "$top" != "$version" ]; then
  rev="$(git -C "$root" describe --always --dirty 2>/dev/null || echo 'a checkout')"
  maintainer="$(sed -n 's/^Maintainer: //p' packaging/control)"
  printf 'imds (%s) unstable; urgency=medium\n\n  * Built from %s with --version %s.\n\n -- %s  %s\n\n' \
    "$version" "$rev" "$version" "$maintainer" "$(date -R)" >"$changelog"
fi
cat packaging/changelog >>"$changelog"
gzip -9n <"$changelog" >"$doc/changelog.gz"
chmod 0644 "$doc"/*.md "$doc"/copyright "$doc"/changelog.gz "$doc"/docs/*.* "$doc"/docs/monitoring/* "$pkg/usr/share/man/man8/imds.8.gz"

# --- DEBIAN/ --------------------------------------------------------------------------------------
install -m 0644 packaging/conffiles "$pkg/DEBIAN/conffiles"
for script in postinst prerm postrm; do install -m 0755 "packaging/$script" "$pkg/DEBIAN/$script"; done

# Depends: what imds runs, and the shared libraries its ELF files need (dpkg-shlibdeps, from the
# symbols they use). The addons' Node-API symbols come from the node binary itself. nsenter
# (util-linux), deb-systemd-helper and deb-systemd-invoke (init-system-helpers, the maintainer
# scripts) are Essential: a dependency on them is not declared (Debian policy 3.5).
runtime="iproute2, nftables, dnsmasq-base, genisoimage, dosfstools, mtools"
elves=("$lib/node/bin/node")
while IFS= read -r -d '' f; do elves+=("$f"); done < <(find "$lib/node_modules" -name '*.node' -type f -print0)
mkdir -p "$stage/shlibs/debian"
printf 'Source: imds\n\nPackage: imds\nArchitecture: any\n' >"$stage/shlibs/debian/control"
shlibs="$(cd "$stage/shlibs" && dpkg-shlibdeps -O --warnings=0 -e"${elves[@]}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')"
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no shared libraries (run it by hand on $lib/node/bin/node to see why)"
installed_size="$(du -s -k --apparent-size --exclude=DEBIAN "$pkg" | cut -f1)"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$installed_size/" \
  -e "s/@DEPENDS@/$runtime, $shlibs/" packaging/control >"$pkg/DEBIAN/control"
(cd "$pkg" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$pkg/DEBIAN/md5sums"
chmod 0644 "$pkg/DEBIAN/control" "$pkg/DEBIAN/md5sums"

rm -f "$deb"
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "package: $deb"
echo "package: $(du -h "$deb" | cut -f1) ($(stat -c %s "$deb") bytes; installed $((installed_size / 1024)) MiB)"
echo "package: $(dpkg-deb -f "$deb" Depends | sed 's/^/Depends: /')"
