// The container's root: a Debian 12 minbase with systemd and what the package depends on, made once
// by debootstrap and cached as a tarball keyed by a hash of what went into it
// (/var/cache/imds-systest/root-<key>.tar); each run extracts a fresh copy, so runs never see each
// other's state. A build in progress lives in build-<owner>-…, removed when it ends and, if its
// process died, by the next run.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RUN_OWNER } from '../helpers/sandbox.ts';
import { ownerGone, removeTree, run } from './proc.ts';

export const CACHE_DIR = process.env['IMDS_SYSTEST_CACHE'] ?? '/var/cache/imds-systest';
const MIRROR = process.env['IMDS_SYSTEST_MIRROR'] ?? 'http://deb.debian.org/debian';
const SUITE = 'bookworm';
/** Bump when prepare() changes what a cached root holds. */
const RECIPE = 1;

/**
 * systemd as PID 1, what the test drives inside (busybox: udhcpc in the guest; apt, in minbase
 * already, for the purge), the package's runtime needs (its Node needs libstdc++6) and its Depends
 * as the package declared them in issue 15. The package's own Depends are added at run time
 * (packageDepends), so a root always holds what the package under test needs.
 */
export const BASE_PACKAGES = [
  'systemd',
  'systemd-sysv',
  'dbus',
  'busybox',
  'libstdc++6',
  'iproute2',
  'nftables',
  'dnsmasq-base',
  'genisoimage',
  'dosfstools',
  'mtools',
];

/**
 * The packages a .deb's Depends names (the first of each set of alternatives; versions and
 * architecture qualifiers dropped): the root must hold them, as the container cannot download.
 */
export async function packageDepends(deb: string): Promise<string[]> {
  const depends = (await run(['dpkg-deb', '--field', deb, 'Depends'])).stdout.trim();
  return depends
    .split(',')
    .map((d) =>
      (d.split('|')[0] ?? '')
        .replace(/\(.*?\)/g, '')
        .replace(/:\S+/, '')
        .trim(),
    )
    .filter(Boolean);
}

export interface CachedRoot {
  tarball: string;
  key: string;
  /** Milliseconds spent by debootstrap and the tarball, or undefined when the cache had it. */
  builtMs: number | undefined;
}

export async function hostArch(): Promise<string> {
  return (await run(['dpkg', '--print-architecture'])).stdout.trim();
}

export function rootKey(packages: readonly string[], arch: string): string {
  const spec = { suite: SUITE, variant: 'minbase', arch, packages: [...new Set(packages)].sort(), recipe: RECIPE };
  return createHash('sha256').update(JSON.stringify(spec)).digest('hex').slice(0, 16);
}

/** The cached root for these packages, built by debootstrap when the cache does not have it. */
export async function cachedRoot(packages: readonly string[], log: (line: string) => void): Promise<CachedRoot> {
  mkdirSync(CACHE_DIR, { recursive: true, mode: 0o700 });
  await sweepBuilds();
  const arch = await hostArch();
  const key = rootKey(packages, arch);
  const tarball = join(CACHE_DIR, `root-${key}.tar`);
  if (existsSync(tarball)) return { tarball, key, builtMs: undefined };

  const t0 = Date.now();
  const build = mkdtempSync(join(CACHE_DIR, `build-${RUN_OWNER}-`));
  try {
    const root = join(build, 'root');
    const include = [...new Set(packages)].sort().join(',');
    log(`debootstrap ${SUITE} (minbase + ${include}) from ${MIRROR} into ${root}`);
    // It dies with this process (it mounts /proc and /sys in the target while it works).
    await run(
      [
        'setpriv',
        '--pdeathsig',
        'SIGKILL',
        '--',
        'debootstrap',
        '--variant=minbase',
        `--include=${include}`,
        `--arch=${arch}`,
        SUITE,
        root,
        MIRROR,
      ],
      {
        timeoutMs: 20 * 60_000,
      },
    );
    prepare(root);
    const tmp = join(build, 'root.tar');
    await run(['tar', '-C', root, '--numeric-owner', '--xattrs', '--xattrs-include=*', '-cf', tmp, '.'], { timeoutMs: 10 * 60_000 });
    renameSync(tmp, tarball);
    // Roots of other package lists are stale now (a run extracting one keeps its open file).
    for (const f of readdirSync(CACHE_DIR)) {
      if (/^root-[0-9a-f]+\.tar$/.test(f) && f !== `root-${key}.tar`) rmSync(join(CACHE_DIR, f), { force: true });
    }
    return { tarball, key, builtMs: Date.now() - t0 };
  } finally {
    await removeTree(build);
  }
}

/** A fresh copy of the cached root at `dest` (which must not exist). */
export async function extractRoot(tarball: string, dest: string): Promise<void> {
  mkdirSync(dest, { mode: 0o755 });
  await run(['tar', '-C', dest, '--numeric-owner', '--xattrs', '--xattrs-include=*', '-xf', tarball], { timeoutMs: 10 * 60_000 });
}

/** What every run's copy starts with, beyond debootstrap's result. */
function prepare(root: string): void {
  // No package archives or lists: the test installs from files only, and the tarball stays small.
  rmSync(join(root, 'var/cache/apt/archives'), { recursive: true, force: true });
  mkdirSync(join(root, 'var/cache/apt/archives/partial'), { recursive: true });
  rmSync(join(root, 'var/lib/apt/lists'), { recursive: true, force: true });
  mkdirSync(join(root, 'var/lib/apt/lists/partial'), { recursive: true });
  // The container never reaches a network: do not let apt try.
  writeFileSync(join(root, 'etc/apt/sources.list'), '# imds system test: no network; packages are installed from files\n');
}

/** Removes build directories of runs that are gone (a build interrupted by a kill). */
async function sweepBuilds(): Promise<void> {
  for (const f of readdirSync(CACHE_DIR)) {
    if (f.startsWith('build-') && ownerGone(f.slice('build-'.length))) await removeTree(join(CACHE_DIR, f));
  }
}
