// The system test (issue 15): the Debian package under systemd as PID 1. A Debian 12 container
// booted by systemd-nspawn (container.ts; no network: the package goes in with dpkg), the package
// installed and driven from inside as an operator would: the postinst starts imds.service;
// `systemctl start`; `imds network add … --dhcp`; guests in namespaces attached to the network's
// bridge get their lease from dnsmasq with busybox udhcpc (the metadata route by option 121) and
// fetch their own meta_data.json; dnsmasq runs under the unit's CapabilityBoundingSet (least
// privilege, proven on the process); a broken configuration makes `systemctl reload` fail and
// serving goes on; `kill -9` of the daemon is restarted by systemd; `systemctl restart` and an
// upgrade to a higher version while every guest asks on a new connection every 20 ms (a boot storm):
// 0 failed requests, measured; with a registry (etcd started in the container) the installed daemon
// loads its etcd client, writes a network and a VM to etcd and serves the VM to a guest;
// `apt purge` leaves no namespace, link, table, process or file.
//   IMDS_SYSTEST_DEB, IMDS_SYSTEST_DEB_UPGRADE   the two packages (scripts/system-test.sh builds them)
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { isRoot } from '../helpers/sandbox.ts';
import { until } from '../helpers/wait.ts';
import { Container, sweepStaleContainers } from './container.ts';
import { ContainerGuest, copyNode, installGuestTools, TOOLS, type PollCounts } from './guest.ts';
import type { Result, RunOptions } from './proc.ts';
import { run } from './proc.ts';
import { BASE_PACKAGES, cachedRoot, packageDepends } from './rootfs.ts';
import { leftAfterPurge, snapshot, type Snapshot } from './snapshot.ts';

const DEB = process.env['IMDS_SYSTEST_DEB'] ?? '';
const DEB_UPGRADE = process.env['IMDS_SYSTEST_DEB_UPGRADE'] ?? '';
const SKIP = !isRoot
  ? 'the system test runs as root (systemd-nspawn, debootstrap)'
  : DEB === '' || DEB_UPGRADE === ''
    ? 'IMDS_SYSTEST_DEB and IMDS_SYSTEST_DEB_UPGRADE must name the package and its upgrade (scripts/system-test.sh builds both)'
    : false;

const CONFIG = '/etc/imds/imds.yaml';
/**
 * Appended to the packaged configuration: the per-address rate limit (20/s, burst 300) would answer
 * a guest asking every 20 ms with 429 after ten seconds; it stays on, above the storm's rate.
 */
const TEST_SETTINGS = `
# --- the system test: guests ask every 20 ms (50/s each); the limiter stays on, above that
rate_limit_per_second: 200
rate_limit_burst: 400
`;
const NET = { id: 'sys1', cidr: '198.51.100.0/24', serviceIp: '198.51.100.2', gateway: '198.51.100.1', bridge: 'imdsb-sys1' };
const VMS = [1, 2, 3, 4].map((i) => ({
  id: `5e0a7c1d-9b2f-4c3e-8a1d-0000000000${i.toString().padStart(2, '0')}`,
  ip: `198.51.100.${10 + i}`,
  mac: `52:54:00:5e:00:${(0x10 + i).toString(16)}`,
  hostname: `sys-vm${i}`,
  netns: `systest-g${i}`,
  hostEnd: `sysg${i}`,
}));
const INTERVAL_MS = 20;

/** Linux capability numbers (linux/capability.h), for the names systemctl shows. */
const CAPS = [
  'chown dac_override dac_read_search fowner fsetid kill setgid setuid setpcap linux_immutable net_bind_service',
  'net_broadcast net_admin net_raw ipc_lock ipc_owner sys_module sys_rawio sys_chroot sys_ptrace sys_pacct sys_admin',
  'sys_boot sys_nice sys_resource sys_time sys_tty_config mknod lease audit_write audit_control setfcap mac_override',
  'mac_admin syslog wake_alarm block_suspend audit_read perfmon bpf checkpoint_restore',
]
  .join(' ')
  .split(' ');

function capMask(names: string): bigint {
  let mask = 0n;
  for (const name of names.trim().split(/\s+/).filter(Boolean)) {
    const bit = CAPS.indexOf(name.replace(/^cap_/, ''));
    assert.ok(bit >= 0, `unknown capability ${name}`);
    mask |= 1n << BigInt(bit);
  }
  return mask;
}

/** `imds status --json`, what the test reads of it. */
interface StatusJson {
  daemon: { version: string; pid: number };
  networks: { id: string; state: string }[];
  vms: number;
}

interface Storm {
  sent: number;
  ok: number;
  failed: number;
  reasons: Record<string, number>;
  max_ms: number;
  failures: PollCounts['failures'];
  ms: number;
}

function describeStorm(s: Storm): string {
  const reasons = Object.keys(s.reasons).length > 0 ? `, ${JSON.stringify(s.reasons)}` : '';
  return `${s.failed} failed of ${s.sent} (${s.ok} answered, slowest ${s.max_ms} ms${reasons})`;
}

describe('the Debian package under systemd as PID 1 (systemd-nspawn)', { skip: SKIP }, () => {
  let c: Container;
  let pristine: Snapshot;
  let baseVersion = '';
  let upgradeVersion = '';
  const guests: ContainerGuest[] = [];
  const measured: Record<string, Storm> = {};
  const say = (line: string): void => void process.stdout.write(`${line}\n`);

  const imds = (args: readonly string[], options: RunOptions = {}): Promise<Result> => c.exec(['imds', ...args], options);
  const systemctl = (args: readonly string[], options: RunOptions = {}): Promise<Result> =>
    c.exec(['systemctl', ...args], { timeoutMs: 180_000, ...options });
  const prop = async (name: string): Promise<string> => (await systemctl(['show', '-p', name, '--value', 'imds'])).stdout.trim();
  const mainPid = async (): Promise<number> => Number(await prop('MainPID'));
  /** systemd's StatusText (the daemon's STATUS=, kept current within a second of a change) once it matches. */
  const statusText = (re: RegExp): Promise<string> =>
    until(
      `STATUS= to match ${re}`,
      async () => {
        const text = await prop('StatusText');
        return re.test(text) ? text : undefined;
      },
      5000,
      100,
    );
  const statusJson = async (): Promise<StatusJson> => JSON.parse((await imds(['status', '--json'])).stdout) as StatusJson;
  const dnsmasq = async (): Promise<{ state: string; pid: number }> => {
    const shown = JSON.parse((await imds(['network', 'show', NET.id, '--json'])).stdout) as {
      dhcp_server?: { state: string; pid: number };
    };
    assert.ok(shown.dhcp_server !== undefined, 'the network has a DHCP server');
    return shown.dhcp_server;
  };
  const procStatus = async (pid: number): Promise<Record<string, string>> => {
    const out: Record<string, string> = {};
    for (const line of (await c.readFile(`/proc/${pid}/status`)).split('\n')) {
      const i = line.indexOf(':');
      if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
    }
    return out;
  };
  const alive = async (pid: number): Promise<boolean> => (await c.exec(['test', '-d', `/proc/${pid}`], { allowFailure: true })).code === 0;
  const cursor = async (): Promise<string> => {
    const out = (await c.exec(['journalctl', '-n', '1', '--show-cursor', '--no-pager', '-o', 'cat'])).stdout;
    const m = /^-- cursor: (.+)$/m.exec(out);
    assert.ok(m !== null, `journalctl showed no cursor:\n${out}`);
    return m[1] as string;
  };
  const journalAfter = async (cur: string, filter: readonly string[] = ['-u', 'imds']): Promise<string> =>
    (await c.exec(['journalctl', '--after-cursor', cur, '--no-pager', '-o', 'cat', ...filter])).stdout;
  /** The daemon's `ready` log line (JSON) of the process `pid`, once the journal has it. */
  const readyOf = (pid: number): Promise<{ sockets: { adopted: number; opened: number } }> =>
    until(
      `the ready line of pid ${pid} in the journal`,
      async () => {
        const lines = (await c.exec(['journalctl', `_PID=${pid}`, '--no-pager', '-o', 'cat'])).stdout.split('\n');
        const ready = lines
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as { msg: string; sockets: { adopted: number; opened: number } });
        return ready.find((l) => l.msg === 'ready');
      },
      20_000,
      200,
    );

  /**
   * On the first failure, the unit's status and journal go into the error (the steps build on each
   * other: what fails after a failure mostly says that the earlier one failed).
   */
  let explainedOnce = false;
  const explained = async (fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      if (explainedOnce || c === undefined) throw err;
      explainedOnce = true;
      const more = await c.explain('imds', 60).catch((e: Error) => `(no journal: ${e.message})`);
      const message = err instanceof Error ? err.message : String(err);
      throw new Error(`${message}\n${more}`, { cause: err });
    }
  };

  /** Every guest asks every 20 ms on a new connection while `action` runs (1 s before, 1 s after). */
  const storm = async (what: string, action: () => Promise<void>): Promise<Storm> => {
    assert.ok(guests.length > 0, 'no guests to ask (an earlier step failed)');
    const started = await Promise.allSettled(guests.map((g, i) => g.poll((VMS[i] as (typeof VMS)[number]).id, INTERVAL_MS)));
    const pollers = started.flatMap((p) => (p.status === 'fulfilled' ? [p.value] : []));
    const failed = started.find((p) => p.status === 'rejected');
    if (failed !== undefined) {
      for (const p of pollers) p.kill();
      throw failed.reason;
    }
    let counts: PollCounts[];
    const t0 = Date.now();
    try {
      await new Promise((r) => setTimeout(r, 1000));
      await action();
      await new Promise((r) => setTimeout(r, 1000));
    } finally {
      counts = await Promise.all(pollers.map((p) => p.stop()));
    }
    const s: Storm = { sent: 0, ok: 0, failed: 0, reasons: {}, max_ms: 0, failures: [], ms: Date.now() - t0 };
    for (const k of counts) {
      s.sent += k.sent;
      s.ok += k.ok;
      s.failed += k.failed;
      s.max_ms = Math.max(s.max_ms, k.max_ms);
      s.failures.push(...k.failures);
      for (const [why, n] of Object.entries(k.reasons)) s.reasons[why] = (s.reasons[why] ?? 0) + n;
    }
    measured[what] = s;
    return s;
  };

  const leaseAll = async (): Promise<void> => {
    for (const [i, g] of guests.entries()) {
      const vm = VMS[i] as (typeof VMS)[number];
      const lease = await g.udhcpc();
      assert.equal(lease['ip'], vm.ip, `${vm.hostname}'s lease: ${JSON.stringify(lease)}`);
      assert.equal(lease['staticroutes'], `169.254.169.254/32 ${NET.serviceIp} 0.0.0.0/0 ${NET.gateway}`, 'option 121');
      assert.equal(lease['msstaticroutes'], lease['staticroutes'], 'option 249 (older Windows): the same routes');
    }
  };

  const fetchOwn = async (g: ContainerGuest, vm: (typeof VMS)[number]): Promise<void> => {
    const r = await g.fetch('/openstack/latest/meta_data.json');
    assert.equal(r.status, 200, `${vm.hostname}: ${JSON.stringify(r)}`);
    const md = JSON.parse(r.body as string) as { uuid: string; hostname: string };
    assert.equal(md.uuid, vm.id);
    assert.equal(md.hostname, `${vm.hostname}.novalocal`);
  };

  before(
    async () => {
      await sweepStaleContainers((l) => say(`# ${l}`));
      baseVersion = (await run(['dpkg-deb', '--field', DEB, 'Version'])).stdout.trim();
      upgradeVersion = (await run(['dpkg-deb', '--field', DEB_UPGRADE, 'Version'])).stdout.trim();
      const cmp = await run(['dpkg', '--compare-versions', upgradeVersion, 'gt', baseVersion], { allowFailure: true });
      assert.equal(cmp.code, 0, `the upgrade (${upgradeVersion}) must be of a higher version than ${baseVersion}`);
      const packages = [...BASE_PACKAGES, ...(await packageDepends(DEB)), ...(await packageDepends(DEB_UPGRADE))];
      const root = await cachedRoot(packages, (l) => say(`# ${l}`));
      c = new Container();
      await c.boot(root.tarball);
      const built =
        root.builtMs === undefined ? `cached (root-${root.key})` : `built by debootstrap in ${(root.builtMs / 1000).toFixed(1)} s`;
      say(
        `# measured: container root ${built}; extracted in ${(c.timings.extractMs / 1000).toFixed(1)} s; ` +
          `booted to "running" in ${(c.timings.bootMs / 1000).toFixed(1)} s`,
      );
      pristine = await snapshot(c);
      await c.writeFile(`${TOOLS}/base.deb`, readFileSync(DEB));
      await c.writeFile(`${TOOLS}/upgrade.deb`, readFileSync(DEB_UPGRADE));
      await installGuestTools(c);
    },
    { timeout: 25 * 60_000 },
  );

  after(
    async () => {
      if (c !== undefined) await c.destroy();
    },
    { timeout: 5 * 60_000 },
  );

  it(
    'dpkg -i installs it with no network; the postinst enables and starts imds.service, which notifies systemd',
    { timeout: 600_000 },
    () =>
      explained(async () => {
        const t0 = Date.now();
        await c.exec(['dpkg', '-i', `${TOOLS}/base.deb`], { timeoutMs: 300_000 });
        say(`# measured: dpkg -i ${baseVersion}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
        assert.equal((await systemctl(['is-enabled', 'imds'], { allowFailure: true })).stdout.trim(), 'enabled');
        assert.equal((await systemctl(['is-active', 'imds'], { allowFailure: true })).stdout.trim(), 'active');
        assert.equal((await statusJson()).daemon.version, baseVersion);
        await statusText(/^serving 0\/0 networks, 0 VMs/);
        await copyNode(c);

        // The test's settings (start-only keys): a stop, then `systemctl start`.
        await c.sh('cat >> "$1"', [CONFIG], { stdin: TEST_SETTINGS });
        const first = await mainPid();
        await systemctl(['stop', 'imds']);
        assert.equal((await systemctl(['is-active', 'imds'], { allowFailure: true })).stdout.trim(), 'inactive');
        assert.equal(await alive(first), false, 'the daemon stopped');
        await systemctl(['start', 'imds']);
        assert.equal((await systemctl(['is-active', 'imds'], { allowFailure: true })).stdout.trim(), 'active');
        const pid = await mainPid();
        assert.notEqual(pid, first);
        assert.equal((await statusJson()).daemon.pid, pid, 'the CLI reaches the daemon systemd started');
        assert.equal(await prop('WatchdogUSec'), '30s');
      }),
  );

  it(
    '`imds network add --dhcp`: guests running udhcpc get their lease with the metadata route and fetch their own meta_data.json',
    { timeout: 300_000 },
    () =>
      explained(async () => {
        const out = await imds([
          'network',
          'add',
          NET.id,
          '--cidr',
          NET.cidr,
          '--service-ip',
          NET.serviceIp,
          '--gateway',
          NET.gateway,
          '--dhcp',
        ]);
        assert.match(out.stdout, /serving/);
        for (const vm of VMS) {
          await imds(['vm', 'add', vm.id, '--network', NET.id, '--ip', vm.ip, '--mac', vm.mac, '--hostname', vm.hostname]);
          guests.push(await ContainerGuest.create(c, { netns: vm.netns, hostEnd: vm.hostEnd, bridge: NET.bridge, mac: vm.mac }));
        }
        assert.equal((await imds(['status'], { allowFailure: true })).code, 0, 'imds status: nothing degraded');
        await statusText(/^serving 1\/1 networks, 4 VMs/);
        await leaseAll();
        const g1 = guests[0] as ContainerGuest;
        const routes = JSON.parse((await g1.exec(['ip', '-j', 'route', 'show'])).stdout) as { dst: string; gateway?: string }[];
        assert.equal(routes.find((r) => r.dst === '169.254.169.254')?.gateway, NET.serviceIp, 'the metadata route came from DHCP');
        assert.equal(routes.find((r) => r.dst === 'default')?.gateway, NET.gateway);
        for (const [i, g] of guests.entries()) await fetchOwn(g, VMS[i] as (typeof VMS)[number]);
        // dnsmasq serves from its own files: the leases it handed out are recorded.
        const leases = await c.readFile(`/run/imds/dhcp/${NET.id}/leases`);
        for (const vm of VMS) assert.match(leases, new RegExp(`${vm.mac} ${vm.ip.replace(/\./g, '\\.')} ${vm.hostname}`));
      }),
  );

  it("dnsmasq runs under the unit's CapabilityBoundingSet (least privilege), as nobody, and serves the leases", { timeout: 120_000 }, () =>
    explained(async () => {
      const unitSet = await prop('CapabilityBoundingSet');
      const mask = capMask(unitSet);
      for (const forbidden of ['sys_module', 'sys_ptrace', 'sys_rawio', 'sys_boot', 'dac_read_search', 'setpcap', 'bpf', 'net_raw']) {
        assert.equal(mask & (1n << BigInt(CAPS.indexOf(forbidden))), 0n, `the unit keeps cap_${forbidden}: ${unitSet}`);
      }
      const server = await dnsmasq();
      assert.equal(server.state, 'running');
      const daemon = await procStatus(await mainPid());
      const dns = await procStatus(server.pid);
      assert.equal(BigInt(`0x${daemon['CapBnd']}`), mask, `the daemon's bounding set is the unit's (${unitSet})`);
      assert.equal(BigInt(`0x${dns['CapBnd']}`), mask, `dnsmasq's bounding set is the unit's (${unitSet})`);
      assert.equal((BigInt(`0x${dns['CapEff']}`) & ~mask) === 0n, true, 'dnsmasq holds nothing beyond it');
      assert.equal(dns['NoNewPrivs'], '1');
      assert.equal(dns['Seccomp'], '2', "the unit's system call filter applies to dnsmasq");
      assert.match(dns['Uid'] ?? '', /^65534\s+65534\s+65534\s+65534$/, 'dnsmasq dropped to nobody');
      const cgroup = await c.readFile(`/proc/${server.pid}/cgroup`);
      assert.match(cgroup, /\/system\.slice\/imds\.service$/m, "dnsmasq is in the unit's cgroup");
      const journal = (await c.exec(['journalctl', '-u', 'imds', '--no-pager', '-o', 'cat'])).stdout;
      assert.doesNotMatch(journal, /dnsmasq\[\d+\]: (cannot read|failed to)|Permission denied/, 'dnsmasq could read its files');
      // dnsmasq takes `option:NAME` only, and 249 has no name: a refused line would never be sent.
      assert.doesNotMatch(journal, /bad dhcp-option/, 'dnsmasq accepted every line of its options file');
      say(`# dnsmasq (pid ${server.pid}): CapBnd ${dns['CapBnd']} = the unit's ${unitSet}; CapEff ${dns['CapEff']}; uid ${dns['Uid']}`);
    }),
  );

  it('a broken configuration makes `systemctl reload` fail (ExecReload exits 2) and serving goes on', { timeout: 120_000 }, () =>
    explained(async () => {
      const pid = await mainPid();
      const cur = await cursor();
      await c.exec(['cp', CONFIG, `${TOOLS}/imds.yaml.good`]);
      let reload: Result | undefined;
      const s = await storm('broken reload', async () => {
        await c.sh('echo "listen_port: [broken" >> "$1"', [CONFIG]);
        reload = await systemctl(['reload', 'imds'], { allowFailure: true });
      });
      assert.notEqual(reload?.code, 0, 'systemctl reload fails');
      const journal = await until('the refused reload in the journal', async () => {
        const j = await journalAfter(cur);
        return /Control process exited, code=exited, status=2/.test(j) ? j : undefined;
      });
      assert.match(journal, /reload rejected: configuration invalid; keeping the running one/);
      assert.equal((await systemctl(['is-active', 'imds'], { allowFailure: true })).stdout.trim(), 'active');
      assert.equal(await mainPid(), pid, 'the same daemon');
      assert.equal(s.failed, 0, `guest requests across the refused reload: ${describeStorm(s)} ${JSON.stringify(s.failures)}`);
      say(`# measured: guest requests across a refused \`systemctl reload\`: ${describeStorm(s)}`);
      await c.exec(['cp', `${TOOLS}/imds.yaml.good`, CONFIG]);
      await systemctl(['reload', 'imds']);
      assert.equal((await imds(['status'], { allowFailure: true })).code, 0);
    }),
  );

  it(
    '`kill -9` of the daemon: systemd restarts it, the new one takes the sockets from the fd store and starts dnsmasq again',
    { timeout: 180_000 },
    () =>
      explained(async () => {
        const old = await mainPid();
        const oldDns = (await dnsmasq()).pid;
        const restarts = Number(await prop('NRestarts'));
        const cur = await cursor();
        const s = await storm('kill -9', async () => {
          await c.sh('kill -9 "$1"', [String(old)]);
          await until(
            'systemd to restart imds',
            async () => ((await prop('ActiveState')) === 'active' && ![0, old].includes(await mainPid()) ? true : undefined),
            30_000,
            100,
          );
        });
        const pid = await mainPid();
        assert.equal(Number(await prop('NRestarts')), restarts + 1);
        const journal = await until('the kill and the restart in the journal', async () => {
          const j = await journalAfter(cur);
          return /Scheduled restart job/.test(j) ? j : undefined;
        });
        assert.match(journal, /Main process exited, code=killed, status=9\/KILL/);
        assert.deepEqual((await readyOf(pid)).sockets, { adopted: 1, opened: 0 }, 'the socket came back from the fd store');
        const dns = await until('a new dnsmasq', async () => {
          const d = await dnsmasq();
          return d.state === 'running' && d.pid !== oldDns ? d : undefined;
        });
        assert.equal(await alive(oldDns), false, "the old dnsmasq went with the daemon's cgroup");
        assert.ok(dns.pid > 0);
        await leaseAll();
        say(
          `# measured: guest requests across \`kill -9\` and systemd's restart (RestartSec=1s; not required to be 0): ${describeStorm(s)}`,
        );
      }),
  );

  it('`systemctl restart` while every guest asks every 20 ms: no failed request', { timeout: 180_000 }, () =>
    explained(async () => {
      const old = await mainPid();
      const s = await storm('restart', async () => {
        await systemctl(['restart', 'imds']);
      });
      const pid = await mainPid();
      assert.notEqual(pid, old);
      assert.deepEqual((await readyOf(pid)).sockets, { adopted: 1, opened: 0 }, 'the socket came back from the fd store');
      say(`# measured: guest requests across \`systemctl restart\`: ${describeStorm(s)}`);
      assert.ok(s.ok > guests.length * 50, `the guests asked across it: ${describeStorm(s)}`);
      assert.equal(s.failed, 0, `failed guest requests across systemctl restart: ${describeStorm(s)} ${JSON.stringify(s.failures)}`);
    }),
  );

  it(
    'an upgrade to a higher version (dpkg -i) while every guest asks every 20 ms: no failed request; the store and the networks carry on',
    { timeout: 600_000 },
    () =>
      explained(async () => {
        const old = await mainPid();
        let dpkgMs = 0;
        const s = await storm('upgrade', async () => {
          const t0 = Date.now();
          await c.exec(['dpkg', '-i', `${TOOLS}/upgrade.deb`], { timeoutMs: 300_000 });
          dpkgMs = Date.now() - t0;
        });
        const pid = await mainPid();
        assert.notEqual(pid, old, 'the postinst restarted the daemon');
        const status = await statusJson();
        assert.equal(status.daemon.version, upgradeVersion);
        assert.deepEqual(
          status.networks.map((n) => [n.id, n.state]),
          [[NET.id, 'serving']],
        );
        assert.equal(status.vms, VMS.length);
        assert.deepEqual((await readyOf(pid)).sockets, { adopted: 1, opened: 0 }, 'the socket came back from the fd store');
        await leaseAll();
        for (const [i, g] of guests.entries()) await fetchOwn(g, VMS[i] as (typeof VMS)[number]);
        const restart = measured['restart'];
        say(
          `# measured: failed guest requests under a boot storm (${guests.length} guests, each a new connection every ${INTERVAL_MS} ms): ` +
            `systemctl restart: ${restart === undefined ? 'not measured' : describeStorm(restart)}; ` +
            `upgrade ${baseVersion} -> ${upgradeVersion} (dpkg -i ${(dpkgMs / 1000).toFixed(1)} s): ${describeStorm(s)}`,
        );
        assert.ok(s.ok > guests.length * 50, `the guests asked across it: ${describeStorm(s)}`);
        assert.equal(s.failed, 0, `failed guest requests across the upgrade: ${describeStorm(s)} ${JSON.stringify(s.failures)}`);
      }),
  );

  it(
    'with a registry (etcd in the container): the installed daemon loads its etcd client, serves a VM written through the CLI, and reports the registry',
    { timeout: 300_000 },
    () =>
      explained(async () => {
        // etcd and etcdctl from the host's Debian packages (the container is the same Debian), under the
        // test's directory (left out of the purge's comparison); etcd as a transient unit.
        for (const bin of ['etcd', 'etcdctl']) await c.writeFile(`${TOOLS}/etcd/${bin}`, readFileSync(`/usr/bin/${bin}`), '0755');
        const url = 'http://127.0.0.1:2379';
        await systemctl(['reset-failed', 'imds-test-etcd'], { allowFailure: true });
        await c.exec([
          'systemd-run',
          '--unit',
          'imds-test-etcd',
          '--collect',
          `${TOOLS}/etcd/etcd`,
          '--name',
          'sys',
          '--data-dir',
          `${TOOLS}/etcd/data`,
          '--listen-client-urls',
          url,
          '--advertise-client-urls',
          url,
          '--listen-peer-urls',
          'http://127.0.0.1:2380',
          '--initial-advertise-peer-urls',
          'http://127.0.0.1:2380',
          '--initial-cluster',
          'sys=http://127.0.0.1:2380',
        ]);
        const etcdctl = (args: readonly string[]): Promise<Result> => c.exec([`${TOOLS}/etcd/etcdctl`, '--endpoints', url, ...args]);
        await until(
          'etcd healthy',
          async () =>
            (await c.exec([`${TOOLS}/etcd/etcdctl`, '--endpoints', url, 'endpoint', 'health'], { allowFailure: true })).code === 0
              ? true
              : undefined,
          30_000,
          250,
        );
        await c.exec(['cp', CONFIG, `${TOOLS}/imds.yaml.before-registry`]);
        await c.sh('printf "%s\\n" "host_id: hv-sys" "registry:" "  etcd:" "    endpoints: [127.0.0.1:2379]" >> "$1"', [CONFIG]);
        await systemctl(['restart', 'imds']);
        const status = JSON.parse((await imds(['status', '--json'])).stdout) as {
          daemon: { registry?: { connected: boolean; host_id: string } };
        };
        assert.deepEqual([status.daemon.registry?.host_id, status.daemon.registry?.connected], ['hv-sys', true]);
        await imds(['network', 'add', 'reg1', '--cidr', '203.0.113.0/24', '--service-ip', '203.0.113.2']);
        const vm = { id: '5e0a7c1d-9b2f-4c3e-8a1d-0000000000aa', ip: '203.0.113.10', mac: '52:54:00:5e:00:aa' };
        await imds(['vm', 'add', vm.id, '--network', 'reg1', '--ip', vm.ip, '--mac', vm.mac, '--hostname', 'reg-vm']);
        const doc = JSON.parse((await etcdctl(['get', `/imds/v1/vms/${vm.id}`, '--print-value-only'])).stdout) as { host: string };
        assert.equal(doc.host, 'hv-sys', 'the VM document is in etcd, placed on this host');
        const g = await ContainerGuest.create(c, { netns: 'systest-reg', hostEnd: 'sysgreg', bridge: 'imdsb-reg1', mac: vm.mac });
        try {
          await g.exec(['ip', 'addr', 'add', `${vm.ip}/24`, 'dev', 'eth0']);
          await g.exec(['ip', 'route', 'add', '169.254.169.254', 'via', '203.0.113.2']);
          const r = await g.fetch('/openstack/latest/meta_data.json');
          assert.equal(r.status, 200, JSON.stringify(r));
          assert.equal((JSON.parse(r.body as string) as { uuid: string }).uuid, vm.id);
          await imds(['network', 'rm', 'reg1', '--force']);
        } finally {
          await g.remove();
        }
        assert.equal((await etcdctl(['get', '--prefix', '/imds/v1/vms/', '--keys-only'])).stdout.trim(), '', 'removed from etcd too');
        await c.exec(['cp', `${TOOLS}/imds.yaml.before-registry`, CONFIG]);
        await systemctl(['restart', 'imds']);
        await systemctl(['stop', 'imds-test-etcd']);
        assert.equal((await imds(['status'], { allowFailure: true })).code, 0, 'back to the local store alone');
      }),
  );

  it('`apt-get purge` leaves no namespace, link, table, process or file behind', { timeout: 300_000 }, () =>
    explained(async () => {
      const daemon = await mainPid();
      const dns = (await dnsmasq()).pid;
      // The test's own: its guests (their veths go with their namespaces).
      for (const g of guests.splice(0)) await g.remove();
      const built = await snapshot(c);
      assert.ok(built.netns.includes(`imds-${NET.id}`) && built.links.includes(NET.bridge), 'there is something to remove');
      await c.exec(['apt-get', 'purge', '-y', 'imds'], { timeoutMs: 300_000 });
      assert.equal(await alive(daemon), false, 'the daemon stopped');
      assert.equal(await alive(dns), false, 'dnsmasq stopped');
      const left = leftAfterPurge(pristine, await snapshot(c));
      assert.deepEqual(left, [], `left after apt-get purge:\n${left.join('\n')}`);
      const status = await c.exec(['dpkg-query', '-W', '-f', '${Status}', 'imds'], { allowFailure: true });
      assert.ok(status.code !== 0 || /not-installed/.test(status.stdout), `dpkg knows nothing of it: ${status.stdout}`);
      assert.equal(await prop('LoadState'), 'not-found');
    }),
  );
});
