// The Debian package (issue 15), as root: built by scripts/package.sh into a scratch directory, then
// checked as dpkg-deb and lintian see it; run from its extracted tree with its own Node (the
// daemon serves a DHCP network in a throwaway hypervisor, its `imds down` removes it); its
// maintainer scripts run as dpkg runs them, in a mount and network namespace of their own with
// systemd's tools stubbed; and the postrm's purge teardown run against what a real daemon left,
// beside decoys it must not touch.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { until } from '../helpers/wait.ts';
import { DaemonProcess, ROOT, RUN_OWNER, TEST_PREFIX, sh, useSandbox, type Sandbox } from '../helpers/sandbox.ts';

const CHECKOUT = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};
/** A version of its own, so that the file name, the control file and `imds --version` must all follow --version. */
const VERSION = `${CHECKOUT.version}+pkgtest1`;
/** What imds runs (issue 15): the package must depend on these, on shared libraries, and on nothing else. */
const RUNTIME = ['iproute2', 'nftables', 'dnsmasq-base', 'genisoimage', 'dosfstools', 'mtools'];
const VM = '5e1f0c3a-7b2d-4c4e-9f10-000000000015';

interface Built {
  work: string;
  deb: string;
  /** The package's files, extracted (dpkg-deb -x). */
  tree: string;
  /** Its control area (dpkg-deb -e): control, conffiles, maintainer scripts. */
  control: string;
  /** /usr/bin/imds with /usr/lib/imds pointed into the extracted tree. */
  wrapper: string;
  /** `dpkg-deb -c`: path (without the leading `.`) -> mode and owner. */
  entries: Map<string, { mode: string; owner: string }>;
}

let built: Built | undefined;
const pkg = (): Built => {
  if (built === undefined) throw new Error('the package was not built (see the before hook)');
  return built;
};

async function buildPackage(): Promise<Built> {
  const work = mkdtempSync(join(tmpdir(), `${TEST_PREFIX}${RUN_OWNER}-package-`));
  chmodSync(work, 0o755); // dnsmasq (user nobody) and the daemon read below it
  const out = join(work, 'out');
  await sh([join(ROOT, 'scripts', 'package.sh'), '--version', VERSION, '--out', out], { timeoutMs: 900_000 });
  const arch = (await sh(['dpkg', '--print-architecture'])).stdout.trim();
  const deb = join(out, `imds_${VERSION}_${arch}.deb`);
  assert.ok(existsSync(deb), `package.sh made ${deb} (found: ${readdirSync(out).join(', ')})`);
  const tree = join(work, 'tree');
  const control = join(work, 'control');
  await sh(['dpkg-deb', '-x', deb, tree], { timeoutMs: 300_000 });
  await sh(['dpkg-deb', '-e', deb, control]);
  const wrapper = join(work, 'imds');
  writeFileSync(wrapper, readFileSync(join(tree, 'usr/bin/imds'), 'utf8').replaceAll('/usr/lib/imds/', `${tree}/usr/lib/imds/`));
  chmodSync(wrapper, 0o755);
  const entries = new Map<string, { mode: string; owner: string }>();
  for (const line of (await sh(['dpkg-deb', '-c', deb])).stdout.split('\n')) {
    const m = /^(\S+)\s+(\S+)\s+\d+\s+\S+\s+\S+\s+\.(\/\S*?)\/?(?: -> .*)?$/.exec(line);
    if (m) entries.set(m[3] as string, { mode: m[1] as string, owner: m[2] as string });
  }
  return { work, deb, tree, control, wrapper, entries };
}

/** The module directories of a node_modules listing: `a`, `@s/b`, `a/node_modules/c`. */
function moduleDirs(paths: Iterable<string>, base: string): string[] {
  const dirs = new Set<string>();
  for (const p of paths) {
    if (!p.startsWith(base) || !p.endsWith('/package.json')) continue;
    const dir = p.slice(base.length, -'/package.json'.length);
    if (/^(@[^/]+\/)?[^/@]+(\/node_modules\/(@[^/]+\/)?[^/@]+)*$/.test(dir)) dirs.add(dir);
  }
  return [...dirs].sort();
}

/** Package names of a Depends field (versions and alternatives dropped). */
function dependsNames(field: string): string[] {
  return field.split(',').map((d) => (d.trim().split(/[\s|(]/)[0] as string).trim());
}

before(async () => {
  built = await buildPackage();
});

after(() => {
  if (built !== undefined) rmSync(built.work, { recursive: true, force: true });
});

describe('the Debian package: what it holds', () => {
  it('is imds_<version>_<arch>.deb with the program, its Node, the addons, the unit, the conffile and the man page', async () => {
    const { deb, entries } = pkg();
    const field = async (name: string): Promise<string> => (await sh(['dpkg-deb', '-f', deb, name])).stdout.trim();
    assert.equal(await field('Package'), 'imds');
    assert.equal(await field('Version'), VERSION);
    assert.equal(await field('Architecture'), (await sh(['dpkg', '--print-architecture'])).stdout.trim());
    const want: Record<string, string> = {
      '/usr/bin/imds': '-rwxr-xr-x',
      '/usr/lib/imds/node/bin/node': '-rwxr-xr-x',
      '/usr/lib/imds/node/LICENSE': '-rw-r--r--',
      '/usr/lib/imds/dist/main.js': '-rw-r--r--',
      '/usr/lib/imds/package.json': '-rw-r--r--',
      '/usr/lib/imds/node_modules/imds-netns/build/Release/imds_netns.node': '-rw-r--r--',
      '/usr/lib/imds/node_modules/better-sqlite3/build/Release/better_sqlite3.node': '-rw-r--r--',
      '/usr/lib/systemd/system/imds.service': '-rw-r--r--',
      '/etc/imds/imds.yaml': '-rw-r--r--',
      '/usr/share/man/man8/imds.8.gz': '-rw-r--r--',
      '/usr/share/doc/imds/copyright': '-rw-r--r--',
      '/usr/share/doc/imds/changelog.gz': '-rw-r--r--',
      '/usr/share/doc/imds/docs/install.md': '-rw-r--r--',
      '/usr/share/doc/imds/docs/monitoring/alerts.yml': '-rw-r--r--',
      '/usr/share/doc/imds/docs/monitoring/grafana-dashboard.json': '-rw-r--r--',
      '/usr/share/bash-completion/completions/imds': '-rw-r--r--',
      '/usr/share/zsh/vendor-completions/_imds': '-rw-r--r--',
    };
    for (const [path, mode] of Object.entries(want)) assert.equal(entries.get(path)?.mode, mode, `${path} ${mode}`);
    // The completion scripts were generated from the packaged command tree: every top-level command is in them.
    const bash = (await sh(['sh', '-c', `dpkg-deb --fsys-tarfile '${deb}' | tar -xO ./usr/share/bash-completion/completions/imds`])).stdout;
    for (const command of ['doctor', 'store', 'export', 'completion']) assert.match(bash, new RegExp(`\\b${command}\\b`), command);
    await sh(['bash', '-n'], { stdin: bash });
    const foreign = [...entries].filter(([, e]) => e.owner !== 'root/root').map(([p]) => p);
    assert.deepEqual(foreign, [], 'every file root/root');
    const conffiles = readFileSync(join(pkg().control, 'conffiles'), 'utf8');
    assert.deepEqual(conffiles.trim().split('\n'), ['/etc/imds/imds.yaml']);
    // The JavaScript is compiled: no TypeScript sources, no source maps.
    const dist = [...entries.keys()].filter((p) => p.startsWith('/usr/lib/imds/dist/'));
    assert.ok(dist.length > 50, `dist has ${dist.length} entries`);
    assert.deepEqual(
      dist.filter((p) => /\.(ts|map)$/.test(p) && !p.endsWith('.d.ts')),
      [],
    );
  });

  it('ships the production dependency tree exactly (npm ls --omit=dev), with native parts built and nothing to build them from', async () => {
    const { entries } = pkg();
    const base = '/usr/lib/imds/node_modules/';
    const shipped = moduleDirs(entries.keys(), base);
    const lsOut = (await sh(['npm', 'ls', '--omit=dev', '--all', '--parseable'], { timeoutMs: 120_000 })).stdout;
    const production = [
      ...new Set(
        lsOut
          .split('\n')
          .filter((l) => l.startsWith(join(ROOT, 'node_modules') + '/'))
          .map((l) => l.slice(join(ROOT, 'node_modules').length + 1)),
      ),
    ].sort();
    assert.ok(production.length > 50, `npm ls lists ${production.length} production modules`);
    assert.deepEqual(shipped, production);
    // A dev dependency that a production module also depends on ships as that module's dependency
    // (protobufjs, of the etcd client, declares @types/node): only those are allowed, and tools never.
    const neededAtRun = new Set(production);
    for (const dev of [...Object.keys(CHECKOUT.devDependencies), 'typescript', 'eslint', 'tsx', 'esbuild', 'prettier']) {
      if (dev.startsWith('@types/') && neededAtRun.has(dev)) continue;
      assert.ok(!shipped.includes(dev), `dev dependency ${dev} is not shipped`);
    }
    for (const dep of Object.keys(CHECKOUT.dependencies)) assert.ok(shipped.includes(dep), `dependency ${dep} is shipped`);
    const native = ['better-sqlite3', 'netlink', 'imds-netns'].map((m) => `${base}${m}/`);
    for (const n of native)
      assert.ok(
        [...entries.keys()].some((p) => p.startsWith(n) && p.endsWith('.node')),
        `${n} has its binary`,
      );
    const leftovers = [...entries.keys()].filter(
      (p) =>
        native.some((n) => p.startsWith(n)) && (/\.(c|cc|cpp|h|o|a|gyp|mk)$/.test(p) || /\/(obj\.target|\.deps|deps|src)(\/|$)/.test(p)),
    );
    assert.deepEqual(leftovers, [], 'no sources or objects of the native modules');
    assert.ok(![...entries.keys()].some((p) => p.endsWith('/test_extension.node')), 'no better-sqlite3 test build');
  });
});

describe('the Debian package: what it needs, and what lintian says', () => {
  it('depends on what imds runs and the shared libraries of its binaries: no compiler, no cloud-init, no test tool', async () => {
    const depends = (await sh(['dpkg-deb', '-f', pkg().deb, 'Depends'])).stdout.trim();
    const names = dependsNames(depends);
    assert.deepEqual(
      names.filter((n) => !n.startsWith('lib')),
      RUNTIME,
      depends,
    );
    const libraries = names.filter((n) => n.startsWith('lib'));
    assert.ok(libraries.includes('libc6'), `libc6 among ${depends}`);
    for (const lib of libraries) {
      // Each is the package of a shared object the node binary or an addon links (dpkg-shlibdeps).
      const files = (await sh(['dpkg', '-L', lib])).stdout;
      assert.match(files, /\/lib[^/]*\.so(\.\d+)*\n/, `${lib} holds shared libraries`);
    }
    for (const never of ['gcc', 'g++', 'make', 'python3', 'cloud-init', 'busybox', 'tcpdump', 'xorriso', 'nodejs', 'lintian', 'curl']) {
      assert.ok(!names.includes(never), `no dependency on ${never}`);
    }
  });

  it('has no lintian errors (overrides carry their reasons in packaging/lintian-overrides)', async () => {
    const which = await sh(['sh', '-c', 'command -v lintian'], { allowFailure: true });
    assert.equal(which.code, 0, 'lintian is not installed: apt-get install lintian (the package test runs it)');
    const result = await sh(['lintian', '--display-info', pkg().deb], { allowFailure: true, timeoutMs: 600_000 });
    const tags = result.stdout.split('\n').filter((l) => /^[EWIPX]: /.test(l));
    const errors = tags.filter((l) => l.startsWith('E: '));
    assert.deepEqual(errors, [], result.stdout);
    assert.equal(result.code, 0, `lintian failed: ${result.stderr}`);
    const count = (level: string): number => tags.filter((l) => l.startsWith(`${level}: `)).length;
    process.stdout.write(`# measured: lintian: ${count('E')} errors, ${count('W')} warnings, ${count('I')} info\n`);
    for (const w of tags.filter((l) => l.startsWith('W: '))) process.stdout.write(`# lintian: ${w}\n`);
  });
});

describe('the Debian package: run from its extracted tree', () => {
  it('runs with its own Node: --version through /usr/bin/imds, the addons load, the shipped imds.yaml checks and declares no networks', async () => {
    const { tree, wrapper } = pkg();
    // The launcher runs the package's Node on the package's JavaScript, never the host's node.
    assert.match(
      readFileSync(join(tree, 'usr/bin/imds'), 'utf8'),
      /^exec \/usr\/lib\/imds\/node\/bin\/node .*\/usr\/lib\/imds\/dist\/main\.js "\$@"$/m,
    );
    const node = join(tree, 'usr/lib/imds/node/bin/node');
    const main = join(tree, 'usr/lib/imds/dist/main.js');
    assert.equal((await sh([node, '--version'])).stdout.trim(), process.version, 'the Node this checkout is built and tested with');
    assert.equal((await sh([node, main, '--version'])).stdout.trim(), VERSION);
    assert.equal((await sh([wrapper, '--version'])).stdout.trim(), VERSION);
    // The native modules load from the package's node_modules, as main.js resolves them.
    const probe = `const r = require('node:module').createRequire(process.argv[1]);
      const addon = r('imds-netns'); r('netlink'); const Db = r('better-sqlite3');
      console.log(r.resolve('better-sqlite3'), typeof addon.listenInNetns, new Db(':memory:').prepare('select 7 as n').get().n);`;
    const loaded = (await sh([node, '-e', probe, main])).stdout.trim().split(' ');
    assert.ok((loaded[0] as string).startsWith(join(tree, 'usr/lib/imds/node_modules/better-sqlite3/')), loaded[0]);
    assert.deepEqual(loaded.slice(1), ['function', '7']);
    const conf = join(tree, 'etc/imds/imds.yaml');
    const check = JSON.parse((await sh([wrapper, 'check', '--config', conf, '--json'])).stdout) as Record<string, unknown>;
    assert.deepEqual([check['ok'], check['networks'], check['vms']], [true, 0, 0]);
    assert.doesNotMatch(readFileSync(conf, 'utf8'), /^(networks|vms):/m, 'no networks or VMs declared');
  });

  it("the etcd registry client loads from the package's dist/ with its embedded protos (no .proto file is shipped)", async () => {
    const { tree } = pkg();
    const node = join(tree, 'usr/lib/imds/node/bin/node');
    const dist = join(tree, 'usr/lib/imds/dist/registry/');
    const probe = `const { etcdServices } = await import(process.argv[1] + 'etcd-proto.js');
      const { EtcdClient } = await import(process.argv[1] + 'etcd-client.js');
      await new EtcdClient({ endpoints: ['127.0.0.1:2379'] }).close();
      const { KV, Watch } = etcdServices();
      console.log(Object.keys(KV.service).sort().join(','), Object.keys(Watch.service).join(','));`;
    const out = (await sh([node, '--input-type=module', '-e', probe, dist])).stdout.trim();
    assert.equal(out, 'DeleteRange,Put,Range,Txn Watch');
  });

  it('ships a unit that passes systemd-analyze verify in a staging root, with its man page', async () => {
    const { tree, wrapper, work } = pkg();
    const unit = readFileSync(join(tree, 'usr/lib/systemd/system/imds.service'), 'utf8');
    assert.match(unit, /^ExecStart=\/usr\/bin\/imds serve --config \/etc\/imds\/imds\.yaml$/m);
    assert.match(unit, /^ExecReload=\/usr\/bin\/imds reload$/m);
    assert.match(unit, /^Documentation=man:imds\(8\)/m);
    // Verified where it would run: ExecStart and ExecReload point at the staged launcher, and
    // Documentation=man:imds(8) is looked up (systemd-analyze runs man) in the package's man pages.
    const check = join(work, 'imds.service');
    writeFileSync(check, unit.replaceAll('/usr/bin/imds', wrapper));
    const verify = await sh(['env', `MANPATH=${join(tree, 'usr/share/man')}`, 'systemd-analyze', 'verify', check], { allowFailure: true });
    assert.equal(verify.code, 0, verify.stderr);
    assert.equal(verify.stderr.trim(), '', verify.stderr);
  });
});

/**
 * Stands in for deb-systemd-helper, deb-systemd-invoke and systemctl (logs each call), and for
 * ischroot: the scenario runs in a mount namespace of its own, which ischroot takes for a chroot,
 * so it says what IMDS_CHROOT says (default: not a chroot, as on a host).
 */
const STUB = `#!/bin/sh
echo "$(basename "$0") $*" >>"$IMDS_STUB_LOG"
if [ "$(basename "$0")" = ischroot ]; then exit "\${IMDS_CHROOT:-1}"; fi
if [ "$1 $2" = "--quiet was-enabled" ]; then exit "\${IMDS_WAS_ENABLED:-0}"; fi
exit 0
`;

/** Runs the package's maintainer scripts as dpkg would through install, upgrade, remove and purge. */
const SCENARIO = `set -u
C=$1
log=$IMDS_STUB_LOG
step() { echo "== $*" >>"$log"; }
run() { label=$1 script=$2; shift 2; step "$label"; sh "$C/$script" "$@" >>"$log" 2>&1 || echo "exit $?" >>"$log"; }
run install postinst configure
run upgrade postinst configure 0.0.9
IMDS_WAS_ENABLED=1; export IMDS_WAS_ENABLED
run upgrade-disabled postinst configure 0.0.8
unset IMDS_WAS_ENABLED
run prerm-upgrade prerm upgrade 0.2.0
run prerm-remove prerm remove
mkdir -p /etc/imds /run/imds/dhcp/net1
printf 'namespace_prefix: "keep-" # ours\\nlog_level: info\\n' >/etc/imds/imds.yaml
ip netns add keep-x
ip netns add imds-y
run remove postrm remove
step note
cat /var/lib/imds/.purge-settings >>"$log"
cp /var/lib/imds/.purge-settings /run/note
rm /etc/imds/imds.yaml # dpkg deletes the conffile before postrm purge
IMDS_CHROOT=0; export IMDS_CHROOT
run purge-in-chroot postrm purge
unset IMDS_CHROOT
step left-by-chroot-purge
ls /run/netns /run/imds >>"$log"
mkdir -p /var/lib/imds /etc/imds && cp /run/note /var/lib/imds/.purge-settings
run purge postrm purge
step left
ls /run/netns >>"$log"
for d in /var/lib/imds /etc/imds /run/imds; do [ -e "$d" ] && echo "$d" >>"$log"; done
exit 0
`;

/**
 * The scenario in a mount and network namespace of its own: /run (with /run/systemd/system, so the
 * scripts see systemd running), /var/lib and /etc are empty tmpfs there, the network namespace is
 * empty; nothing of the host is reachable. Returns the log, by step.
 */
async function runMaintainerScripts(): Promise<Map<string, string[]>> {
  const { work, control } = pkg();
  const stubs = join(work, 'stubs');
  mkdirSync(stubs, { recursive: true });
  for (const tool of ['deb-systemd-helper', 'deb-systemd-invoke', 'systemctl', 'ischroot']) {
    writeFileSync(join(stubs, tool), STUB);
    chmodSync(join(stubs, tool), 0o755);
  }
  const scenario = join(work, 'scenario.sh');
  writeFileSync(scenario, SCENARIO);
  const log = join(work, 'scripts.log');
  writeFileSync(log, '');
  const isolate =
    'mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var/lib && mount -t tmpfs tmpfs /etc && mkdir -p /run/systemd/system && ' +
    'exec env PATH="$1:$PATH" IMDS_STUB_LOG="$2" sh "$3" "$4"';
  await sh([
    'unshare',
    '--mount',
    '--net',
    '--propagation',
    'private',
    '--',
    'sh',
    '-c',
    isolate,
    'isolate',
    stubs,
    log,
    scenario,
    control,
  ]);
  const steps = new Map<string, string[]>();
  let current: string[] = [];
  for (const line of readFileSync(log, 'utf8').split('\n').filter(Boolean)) {
    if (line.startsWith('== ')) steps.set(line.slice(3).trim(), (current = []));
    else current.push(line);
  }
  return steps;
}

describe('the Debian package: maintainer scripts', () => {
  it('enable and start on install, restart (never stop) on upgrade, stop on remove, tear down and forget on purge', async () => {
    const steps = await runMaintainerScripts();
    const step = (name: string): string[] => {
      const lines = steps.get(name);
      assert.ok(lines !== undefined, `step "${name}" ran (${[...steps.keys()].join('; ')})`);
      return lines;
    };
    const service = (lines: string[]): string[] => lines.filter((l) => /^(deb-systemd-invoke|systemctl) /.test(l));
    assert.ok(step('install').includes('deb-systemd-helper enable imds.service'));
    assert.deepEqual(service(step('install')), ['systemctl --system daemon-reload', 'deb-systemd-invoke start imds.service']);
    // An upgrade is one restart: the old daemon hands its sockets to the new one through the fd store.
    assert.deepEqual(service(step('upgrade')), ['systemctl --system daemon-reload', 'deb-systemd-invoke restart imds.service']);
    // A unit the administrator disabled is not enabled again.
    assert.ok(!step('upgrade-disabled').includes('deb-systemd-helper enable imds.service'));
    assert.ok(step('upgrade-disabled').includes('deb-systemd-helper update-state imds.service'));
    assert.deepEqual(step('prerm-upgrade'), [], 'prerm does nothing on upgrade: no stop');
    assert.deepEqual(step('prerm-remove'), ['deb-systemd-invoke stop imds.service']);
    assert.deepEqual(step('remove'), ['systemctl --system daemon-reload', 'deb-systemd-helper mask imds.service']);
    assert.deepEqual(step('note'), ['namespace_prefix: keep-', 'dhcp_dir: ', 'state_dir: ']);
    // In a chroot the kernel objects and /run are the host's: left alone, only the files go.
    assert.ok(
      step('purge-in-chroot').some((l) => /left alone/.test(l)),
      step('purge-in-chroot').join('\n'),
    );
    assert.deepEqual(step('left-by-chroot-purge'), ['/run/imds:', 'dhcp', '/run/netns:', 'imds-y', 'keep-x']);
    const purge = step('purge');
    // Purge tears down with the prefix noted at remove (the conffile was gone): keep-x, not imds-y.
    assert.ok(purge.includes('imds: removed namespace keep-x'), purge.join('\n'));
    assert.ok(
      purge.includes('deb-systemd-helper purge imds.service') && purge.includes('deb-systemd-helper unmask imds.service'),
      purge.join('\n'),
    );
    assert.ok(!purge.some((l) => l.startsWith('exit ')), purge.join('\n'));
    assert.deepEqual(
      step('left'),
      ['imds-y'],
      'only the namespace without the prefix is left; /var/lib/imds, /etc/imds, /run/imds are gone',
    );
  });
});

/** Running (a zombie waiting to be reaped counts as gone). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** SIGKILL to PID if it still runs with MARKER in its command line (cleanup by pid, never another process). */
function killIfRunning(pid: number, marker: string): void {
  try {
    if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker)) process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}

/** The pid of a network's dnsmasq once it runs (`imds network show`). */
function dnsmasqOf(cli: (args: string[]) => Promise<{ stdout: string }>, network: string): Promise<number> {
  return until(`dnsmasq of ${network} to run`, async () => {
    const shown = JSON.parse((await cli(['network', 'show', network, '--json'])).stdout) as {
      dhcp_server?: { state: string; pid?: number };
    };
    return shown.dhcp_server?.state === 'running' ? shown.dhcp_server.pid : undefined;
  });
}

/** What imds built in the sandbox's hypervisor with its prefix, and its DHCP servers and files. */
async function owned(
  sb: Sandbox,
  dhcpDir: string,
): Promise<{ namespaces: string[]; links: string[]; tables: string[]; dnsmasq: string[] }> {
  const links = Object.entries(await sb.hvLinks())
    .filter(([, l]) => (l.ifalias ?? '').startsWith('imds:'))
    .map(([name]) => name)
    .sort();
  const tables = (await sb.hvRun(['nft', 'list', 'tables', 'bridge'])).stdout
    .split('\n')
    .filter((l) => l.startsWith(`table bridge ${sb.nsPrefix}`))
    .sort();
  const pgrep = await sh(['pgrep', '-a', '-f', '--', `--pid-file=${dhcpDir}/`], { allowFailure: true });
  assert.ok(pgrep.code === 0 || pgrep.code === 1, `pgrep: ${pgrep.stderr}`); // 1: none; more is an error, not "none"
  const dnsmasq = pgrep.stdout.split('\n').filter(Boolean);
  return { namespaces: (await sb.namespaces()).filter((n) => n.startsWith(sb.nsPrefix)).sort(), links, tables, dnsmasq };
}

interface Decoys {
  netns: string;
  process: ChildProcess;
  check(): Promise<void>;
}

/**
 * What the teardown must not touch: a namespace without the prefix holding a link with imds's owner
 * mark, links in the hypervisor without the mark (or with a foreign one), a bridge table without the
 * prefix and a table of another family with it, and a process named dnsmasq in that namespace whose
 * pid is in a pid file under dhcp_dir but which was not started with that pid file.
 */
async function plantDecoys(sb: Sandbox, dhcpDir: string): Promise<Decoys> {
  const netns = `${sb.base}d-keep`;
  await sh(['ip', 'netns', 'add', netns]);
  await sh(['ip', '-n', netns, '-batch', '-'], { stdin: 'link add keepbr type bridge\nlink set keepbr alias imds:td:bridge\n' });
  const host = ['link add keepbr0 type bridge', 'link add keepbr1 type bridge', 'link set keepbr1 alias other:td:bridge'];
  await sh(['ip', '-n', sb.hv, '-batch', '-'], { stdin: `${[...host, 'link add keepv0 type veth peer name keepv1'].join('\n')}\n` });
  const nft = `table bridge ${sb.base}d-keep {\n  chain c {\n    type filter hook prerouting priority 0;\n  }\n}\ntable ip ${sb.nsPrefix}ipkeep {\n}\n`;
  await sb.hvRun(['nft', '-f', '-'], { stdin: nft });
  const child = spawn('nsenter', [`--net=/run/netns/${netns}`, '--', 'bash', '-c', 'exec -a /usr/sbin/dnsmasq sleep 600'], {
    stdio: 'ignore',
  });
  const pid = child.pid as number;
  await until('the decoy to be named dnsmasq', () =>
    readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('/usr/sbin/dnsmasq\0') ? true : undefined,
  );
  mkdirSync(join(dhcpDir, 'zz'), { recursive: true });
  writeFileSync(join(dhcpDir, 'zz', 'dnsmasq.pid'), `${pid}\n`);
  const check = async (): Promise<void> => {
    assert.ok(existsSync(`/run/netns/${netns}`), 'the namespace without the prefix stays');
    assert.equal((await sh(['ip', '-n', netns, '-j', '-d', 'link', 'show', 'keepbr'])).code, 0, 'so does the marked link inside it');
    const links = await sb.hvLinks();
    for (const name of ['keepbr0', 'keepbr1', 'keepv0', 'keepv1']) assert.ok(links[name] !== undefined, `${name} stays`);
    const tables = (await sb.hvRun(['nft', 'list', 'tables'])).stdout;
    assert.match(tables, new RegExp(`^table bridge ${sb.base}d-keep$`, 'm'));
    assert.match(tables, new RegExp(`^table ip ${sb.nsPrefix}ipkeep$`, 'm'));
    assert.ok(alive(pid), 'a process that is not one of its dnsmasq servers stays, whatever a pid file says');
  };
  return { netns, process: child, check };
}

/**
 * `imds serve` of the extracted package (its launcher, its Node, its modules) in the sandbox's
 * hypervisor; the sandbox's cleanup kills it by pid with every process in its namespaces. Exits it
 * was not asked for are collected in `deaths`.
 */
function startPackagedDaemon(sb: Sandbox, configPath: string): { daemon: DaemonProcess; deaths: string[] } {
  const env = { ...process.env };
  delete env['NODE_OPTIONS'];
  const deaths: string[] = [];
  const daemon = new DaemonProcess({
    argv: ['nsenter', `--net=/run/netns/${sb.hv}`, '--', pkg().wrapper, 'serve', '--config', configPath],
    env,
    onUnexpectedExit: (d) => deaths.push(d.unexpected as string),
  });
  return { daemon, deaths };
}

/** The postrm's teardown block (the shell `imds down`), as the package ships it. */
function teardownBlock(): string {
  const postrm = readFileSync(join(pkg().control, 'postrm'), 'utf8');
  const begin = postrm.indexOf('\n# BEGIN teardown');
  const end = postrm.indexOf('\n# END teardown');
  assert.ok(begin > 0 && end > begin, 'the postrm has its teardown block');
  return postrm.slice(begin, end);
}

describe('the Debian package: its daemon and its purge teardown, in a throwaway hypervisor', () => {
  const current = useSandbox({ before, after, afterEach });

  it("serves a DHCP network from the package's tree, and the package's `imds down` removes what it left when killed", async () => {
    const sb = current();
    const net = { id: 'pk', cidr: '198.51.100.0/24', service_ip: '198.51.100.2', dhcp: true };
    const vm = { id: VM, network: 'pk', ip: '198.51.100.10', mac: '52:54:00:00:15:10', hostname: 'pkg' };
    const path = sb.writeConfig(sb.config({ log_level: 'info', networks: [net], vms: [vm] }, 'pkg'), 'pkg.yaml');
    const { wrapper } = pkg();
    const { daemon, deaths } = startPackagedDaemon(sb, path);
    try {
      await daemon.waitFor((l) => l['msg'] === 'ready', 60_000);
      const cli = (args: string[]) => sb.hvRun([wrapper, '--admin-socket', sb.adminSocket('pkg'), ...args]);
      assert.match(
        (await cli(['status'])).stdout,
        new RegExp(`^version:\\s+${VERSION.replaceAll('.', '\\.').replaceAll('+', '\\+')}$`, 'm'),
      );
      // Asked from inside the network's namespace (the addon's socket there), answered by the packaged daemon.
      assert.equal((JSON.parse((await cli(['vm', 'get', VM, '/openstack/latest/meta_data.json'])).stdout) as { uuid: string }).uuid, VM);
      const dnsmasq = await dnsmasqOf(cli, 'pk');
      await daemon.kill();
      assert.ok(alive(dnsmasq), 'a killed daemon leaves its dnsmasq running');
      const down = JSON.parse((await sb.hvRun([wrapper, 'down', '--config', path, '--json'])).stdout) as {
        removed: string[];
        stopped: number[];
      };
      assert.deepEqual([down.removed, down.stopped], [['pk'], [dnsmasq]]);
      assert.ok(!alive(dnsmasq));
      assert.deepEqual(await owned(sb, sb.config({}, 'pkg')['dhcp_dir'] as string), { namespaces: [], links: [], tables: [], dnsmasq: [] });
    } finally {
      await daemon.kill();
    }
    assert.deepEqual(deaths, []);
  });

  it("the postrm's teardown removes every namespace, link, table, dnsmasq and file a killed daemon left, and nothing that is not its", async () => {
    const sb = current();
    const networks = [
      { id: 'td', cidr: '198.51.100.0/24', service_ip: '198.51.100.2', dhcp: true },
      { id: 'tf', cidr: '192.0.2.0/24', service_ip: '192.0.2.2' },
    ];
    const vms = [{ id: VM, network: 'td', ip: '198.51.100.10', mac: '52:54:00:00:15:11', hostname: 'td' }];
    const config = sb.config({ log_level: 'info', networks, vms }, 'teardown');
    const dhcpDir = config['dhcp_dir'] as string;
    const daemon = await sb.startDaemon(sb.writeConfig(config, 'teardown.yaml'));
    const dnsmasq = await dnsmasqOf((args) => sb.cli(['--admin-socket', sb.adminSocket('teardown'), ...args]), 'td');
    await daemon.kill(); // the namespaces, links, tables, dnsmasq and its files stay
    const decoys = await plantDecoys(sb, dhcpDir);
    try {
      const left = await owned(sb, dhcpDir);
      assert.deepEqual(left.namespaces, [`${sb.nsPrefix}td`, `${sb.nsPrefix}tf`]);
      assert.deepEqual(left.links, ['imdsb-td', 'imdsb-tf', 'imdsv-td', 'imdsv-tf']);
      assert.deepEqual(left.tables, [`table bridge ${sb.nsPrefix}interception`]);
      assert.equal(left.dnsmasq.length, 1, left.dnsmasq.join('\n'));
      assert.ok(alive(dnsmasq) && existsSync(join(dhcpDir, 'td', 'hosts')));
      await decoys.check();

      const teardown = ['sh', '-c', `${teardownBlock()}\nimds_teardown "$1" "$2"`, 'postrm', sb.nsPrefix, dhcpDir];
      const out = (await sb.hvRun(teardown)).stdout;
      for (const line of [`stopped dnsmasq (pid ${dnsmasq})`, `removed namespace ${sb.nsPrefix}td`, 'removed bridge imdsb-tf']) {
        assert.ok(out.includes(`imds: ${line}`), `"${line}" in:\n${out}`);
      }
      assert.deepEqual(await owned(sb, dhcpDir), { namespaces: [], links: [], tables: [], dnsmasq: [] });
      assert.ok(!alive(dnsmasq), 'dnsmasq is gone');
      assert.ok(!existsSync(dhcpDir), 'dhcp_dir is gone');
      assert.ok(existsSync(join(sb.dir, 'teardown', 'state', 'imds.sqlite')), 'the store stays: purge removes it after the teardown');
      await decoys.check();
      // Nothing left to do the second time, and still nothing of the decoys touched.
      assert.equal((await sb.hvRun(teardown)).stdout.trim(), '');
      await decoys.check();
    } finally {
      decoys.process.kill('SIGKILL');
      killIfRunning(dnsmasq, dhcpDir); // a teardown that failed may leave it outside any namespace of the sandbox
    }
  });
});
