// Many hypervisors, one registry, as root with real processes: a 3-member etcd cluster in its own
// namespace (on TEST-NET-1 addresses 192.0.2.9-11, routed over a veth from each hypervisor) and two
// hypervisor sandboxes, each with its own imds daemon (host_id hv1, hv2), bridge and guests. Covers
// placement, a conflicting concurrent write, migration (within 1 s of the write, also to a host that
// has to build the VM's network first), hosts registering themselves (a VM placed on an unknown host is
// refused), all members stopped (serving goes on, writes refused, status degraded), catch-up of a
// write made while the daemons were cut off, one member killed (writes still work), a daemon
// restarted after changes made while it was down, and a layout version it does not know.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { EtcdCluster } from '../helpers/etcd-cluster.ts';
import { Guest, Sandbox, sh, type DaemonProcess } from '../helpers/sandbox.ts';
import type { RunResult } from '../../src/netns/run.ts';
import { until } from '../helpers/wait.ts';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const VM1 = '11111111-2fa1-11d2-883f-0016d3cca427';
const VM2 = '22222222-2fa1-11d2-883f-0016d3cca427';
const VM3 = '33333333-2fa1-11d2-883f-0016d3cca427';
const VM4 = '44444444-2fa1-11d2-883f-0016d3cca427';
const VM5 = '55555555-2fa1-11d2-883f-0016d3cca427';
const PASSWORD = 'c2VjcmV0LWFmdGVyLW1pZ3JhdGlvbg==';
const VM6 = '66666666-2fa1-11d2-883f-0016d3cca427';
const VM7 = '99999999-2fa1-11d2-883f-0016d3cca427';
const VM8 = '88888888-2fa1-11d2-883f-0016d3cca427';
const ETCD_IPS = ['192.0.2.9', '192.0.2.10', '192.0.2.11'];
const NET = { cidr: '198.51.100.0/24', service: '198.51.100.2' };
const ON_NET1 = { bridge: 'imdsb-net1', prefix: 24, metadataVia: NET.service };

interface Host {
  name: string;
  sb: Sandbox;
  daemon?: DaemonProcess;
}

/** The status code a guest gets for its meta_data.json (0: no answer at all). */
async function metaStatus(g: Guest, maxTimeS = 5): Promise<number> {
  try {
    return (await g.http('/openstack/latest/meta_data.json', { maxTimeS })).status;
  } catch {
    return 0;
  }
}

async function metaUuid(g: Guest): Promise<string> {
  const r = await g.http('/openstack/latest/meta_data.json');
  assert.equal(r.status, 200, `${g.name}: ${r.body.toString()}`);
  return (JSON.parse(r.body.toString()) as { uuid: string }).uuid;
}

/**
 * PATCH /v1/vms/ID {"host": HOST} on a daemon's admin socket (what `imds vm migrate` sends), with curl:
 * the timing tests start their clock right before it, so the bound is not spent on the CLI's own start
 * (node and its modules: 0.4-0.8 s on the 2-core test hosts).
 */
async function migrateThrough(h: Host, vm: string, to: string): Promise<number> {
  const r = await sh([
    'curl',
    '-s',
    '-o',
    '/dev/null',
    '-w',
    '%{http_code}',
    '--unix-socket',
    h.sb.adminSocket(),
    '-X',
    'PATCH',
    '-H',
    'content-type: application/json',
    '--data',
    JSON.stringify({ host: to }),
    `http://imds/v1/vms/${vm}`,
  ]);
  return Number(r.stdout.trim());
}

/** GET /v1/health on a daemon's admin socket: its HTTP status. */
async function healthStatus(h: Host): Promise<number> {
  const r = await sh(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--unix-socket', h.sb.adminSocket(), 'http://imds/v1/health']);
  return Number(r.stdout.trim());
}

function vmDoc(id: string, ip: string, mac: string, host: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ id, network: 'net1', ip, mac, hostname: `vm-${id.slice(0, 4)}`, host, ...extra });
}

/**
 * Polls a guest until `done(status)`; the time (Date.now()) it first was. Each try gives up after
 * 0.25 s: a SYN lost while the path was not there yet would otherwise wait for TCP's 1 s retransmit.
 */
async function firstTime(g: Guest, done: (status: number) => boolean, timeoutMs: number): Promise<number> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const status = await metaStatus(g, 0.25);
    const at = Date.now();
    if (done(status)) return at;
    if (at > end) throw new Error(`${g.name}: still ${status} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Runs every step whatever the earlier ones did; then throws the first error (all of them when several). */
async function allSteps(steps: (() => unknown)[]): Promise<void> {
  const errors: unknown[] = [];
  for (const step of steps) {
    try {
      await step();
    } catch (err) {
      errors.push(err);
    }
  }
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) throw new AggregateError(errors, `${errors.length} teardown steps failed`);
}

interface HostRow {
  host_id: string;
  live: boolean;
  vms: number;
  registered: boolean;
  version: string;
}

describe('registry: two hypervisors on a 3-member etcd cluster', () => {
  const hv1: Host = { name: 'hv1', sb: new Sandbox() };
  const hv2: Host = { name: 'hv2', sb: new Sandbox() };
  const etcdNs = `${hv1.sb.base}etcd`;
  const links: string[] = [];
  let cluster: EtcdCluster | undefined;
  const guests: Record<string, Guest> = {};

  const imds = (h: Host, args: string[], allowFailure = false): Promise<RunResult> =>
    h.sb.cli(['--admin-socket', h.sb.adminSocket(), ...args], { allowFailure });
  const etcd = (): EtcdCluster => {
    if (cluster === undefined) throw new Error('no etcd cluster');
    return cluster;
  };

  /** A veth from the etcd namespace to a hypervisor: etcd side .1+4k/30, hypervisor side .2+4k/30, route to the members. */
  async function linkToEtcd(h: Host, k: number): Promise<void> {
    const outer = `xe${hv1.sb.id}${k}`;
    links.push(outer);
    await sh(['ip', '-n', etcdNs, 'link', 'add', outer, 'type', 'veth', 'peer', 'name', 'etcd0', 'netns', h.sb.hv]);
    await sh(['ip', '-n', etcdNs, 'addr', 'add', `192.0.2.${1 + 4 * k}/30`, 'dev', outer]);
    await sh(['ip', '-n', etcdNs, 'link', 'set', outer, 'up']);
    await sh(['ip', '-n', h.sb.hv, 'addr', 'add', `192.0.2.${2 + 4 * k}/30`, 'dev', 'etcd0']);
    await sh(['ip', '-n', h.sb.hv, 'link', 'set', 'etcd0', 'up']);
    await sh(['ip', '-n', h.sb.hv, 'route', 'add', '192.0.2.8/29', 'via', `192.0.2.${1 + 4 * k}`]);
  }

  /** Cuts (or restores) both hypervisors' paths to etcd; etcdctl inside the etcd namespace still works. */
  async function partition(cut: boolean): Promise<void> {
    for (const l of links) await sh(['ip', '-n', etcdNs, 'link', 'set', l, cut ? 'down' : 'up']);
  }

  async function startDaemon(h: Host): Promise<void> {
    // max_txn_ops 4 (etcd's own limit is 128): a 20-VM import, or removing a network with 4 VMs,
    // takes several transactions here.
    const cfg = h.sb.config({ host_id: h.name, log_level: 'info', registry: { etcd: { endpoints: etcd().endpoints, max_txn_ops: 4 } } });
    h.daemon = await h.sb.startDaemon(h.sb.writeConfig(cfg));
  }

  async function bridgeUp(h: Host): Promise<void> {
    await until(`${h.name} builds net1's bridge`, async () => ((await h.sb.hvLinks())['imdsb-net1'] === undefined ? undefined : true));
  }

  before(async () => {
    await hv1.sb.setup();
    await hv2.sb.setup();
    await sh(['ip', 'netns', 'add', etcdNs]);
    await sh(['ip', '-n', etcdNs, 'link', 'set', 'lo', 'up']);
    for (const ip of ETCD_IPS) await sh(['ip', '-n', etcdNs, 'addr', 'add', `${ip}/32`, 'dev', 'lo']);
    await linkToEtcd(hv1, 0);
    await linkToEtcd(hv2, 1);
    cluster = await EtcdCluster.start({ netns: etcdNs, ips: ETCD_IPS });
    await startDaemon(hv1);
    await startDaemon(hv2);
  });

  afterEach(() => {
    hv1.sb.assertNoDeaths();
    hv2.sb.assertNoDeaths();
  });

  // A daemon that exits badly on its stop fails the suite (cleanupDaemons throws); every step runs anyway.
  after(() =>
    allSteps([
      () => hv1.sb.assertNoDeaths(),
      () => hv2.sb.assertNoDeaths(),
      () => hv1.sb.cleanupDaemons(),
      () => hv2.sb.cleanupDaemons(),
      () => cluster?.cleanup(),
      () => hv2.sb.cleanup(),
      () => hv1.sb.cleanup(), // also removes the etcd namespace (named after hv1's sandbox)
    ]),
  );

  const hostList = async (h: Host): Promise<HostRow[]> => JSON.parse((await imds(h, ['host', 'list', '--json'])).stdout) as HostRow[];
  const liveness = async (h: Host): Promise<string> =>
    (await hostList(h)).map((r) => `${r.host_id}:${r.live ? 'live' : 'down'}${r.registered ? '' : ':unregistered'}`).join(' ');

  it('places a VM written through either daemon on its host only', async () => {
    await imds(hv1, ['network', 'add', 'net1', '--cidr', NET.cidr, '--service-ip', NET.service, '--gateway', '198.51.100.1']);
    // VM1 on hv1 written through hv2's CLI; VM2 on hv2 written through hv1's.
    await imds(hv2, [
      'vm',
      'add',
      VM1,
      '--network',
      'net1',
      '--ip',
      '198.51.100.10',
      '--mac',
      '52:54:00:00:00:10',
      '--hostname',
      'one',
      '--host',
      'hv1',
    ]);
    await imds(hv1, [
      'vm',
      'add',
      VM2,
      '--network',
      'net1',
      '--ip',
      '198.51.100.11',
      '--mac',
      '52:54:00:00:00:11',
      '--hostname',
      'two',
      '--host',
      'hv2',
    ]);
    await bridgeUp(hv1);
    await bridgeUp(hv2);
    guests['a1'] = await hv1.sb.addGuest('a1', { ...ON_NET1, ip: '198.51.100.10', mac: '52:54:00:00:00:10' });
    guests['b2'] = await hv2.sb.addGuest('b2', { ...ON_NET1, ip: '198.51.100.11', mac: '52:54:00:00:00:11' });
    // VM1's twin on hv2's bridge: where VM1 will run after its migration.
    guests['b1'] = await hv2.sb.addGuest('b1', { ...ON_NET1, ip: '198.51.100.10', mac: '52:54:00:00:00:10' });

    await until('hv1 serves VM1 to its guest', async () => ((await metaStatus(guests['a1'] as Guest)) === 200 ? true : undefined));
    assert.equal(await metaUuid(guests['a1']), VM1);
    assert.equal(await metaUuid(guests['b2']), VM2);
    assert.equal(await metaStatus(guests['b1']), 404, 'hv2 does not serve VM1');

    const shown2 = await imds(hv2, ['vm', 'show', VM1], true);
    assert.equal(shown2.code, 4, `vm show VM1 on hv2 is NOT_FOUND: ${shown2.stdout}${shown2.stderr}`);
    const shown1 = JSON.parse((await imds(hv1, ['vm', 'show', VM1, '--json'])).stdout) as { id: string; host?: string };
    assert.equal(shown1.id, VM1);
    const list2 = JSON.parse((await imds(hv2, ['vm', 'list', '--json'])).stdout) as { id: string }[];
    assert.deepEqual(
      list2.map((v) => v.id),
      [VM2],
    );
  });

  it('lets exactly one of two concurrent adds of the same VM through two daemons win (the other: ALREADY_EXISTS, exit 5)', async () => {
    const add = (h: Host): Promise<RunResult> =>
      imds(
        h,
        [
          'vm',
          'add',
          VM3,
          '--network',
          'net1',
          '--ip',
          '198.51.100.12',
          '--mac',
          '52:54:00:00:00:12',
          '--hostname',
          'three',
          '--host',
          'hv1',
        ],
        true,
      );
    const results = await Promise.all([add(hv1), add(hv2)]);
    const codes = results.map((r) => r.code).sort();
    assert.deepEqual(codes, [0, 5], results.map((r) => r.stderr).join('\n'));
    const loser = results.find((r) => r.code === 5) as RunResult;
    assert.match(loser.stderr, /already exists/i);
    const stored = JSON.parse(await etcd().ctl(['get', `/imds/v1/vms/${VM3}`, '--print-value-only'])) as { host: string; ip: string };
    assert.deepEqual([stored.host, stored.ip], ['hv1', '198.51.100.12']);
    guests['a3'] = await hv1.sb.addGuest('a3', { ...ON_NET1, ip: '198.51.100.12', mac: '52:54:00:00:00:12' });
    assert.equal(await metaUuid(guests['a3']), VM3);
  });

  it('migrates a VM: the destination serves it within 1 s of the write, the source stops; its password and token go with it', async () => {
    const a1 = guests['a1'] as Guest;
    const b1 = guests['b1'] as Guest;
    // Before: the guest posts its password on hv1 (published create-only to etcd) and takes an IMDSv2 token.
    assert.equal((await a1.http('/openstack/latest/password', { method: 'POST', data: PASSWORD })).status, 200);
    await until('the password reaches etcd', async () =>
      (await etcd().ctl(['get', `/imds/v1/passwords/${VM1}`, '--print-value-only'])).trim() === PASSWORD ? true : undefined,
    );
    const put = await a1.http('/latest/api/token', { method: 'PUT', headers: ['X-aws-ec2-metadata-token-ttl-seconds: 600'] });
    assert.equal(put.status, 200);
    const token = put.body.toString();
    assert.equal(await metaStatus(b1), 404, 'hv2 does not serve VM1 before the write');
    // t0 is taken right before the request that writes (so a little before the write itself): both
    // guests are polled from then on, while the request runs.
    const t0 = Date.now();
    const [out, served, stopped] = await Promise.all([
      migrateThrough(hv1, VM1, 'hv2').then((status) => ({ status, at: Date.now() })),
      firstTime(b1, (s) => s === 200, 10_000),
      firstTime(a1, (s) => s !== 200, 10_000),
    ]);
    assert.equal(out.status, 200);
    process.stdout.write(
      `# migrate: the request returned after ${out.at - t0} ms; ` +
        `hv2 served VM1 ${served - t0} ms, hv1 stopped ${stopped - t0} ms after it was sent\n`,
    );
    assert.ok(served - t0 <= 1000, `hv2 served VM1 ${served - t0} ms after the write`);
    assert.ok(stopped - t0 <= 1000, `hv1 stopped serving VM1 ${stopped - t0} ms after the write`);
    // The request returns once hv1, whose API was used, applied the write (docs/registry.md, "Writes").
    assert.equal(await metaStatus(a1), 404, 'the source answers 404');
    assert.equal(await metaUuid(guests['b1'] as Guest), VM1);
    assert.equal((await imds(hv1, ['vm', 'show', VM1], true)).code, 4, 'hv1 no longer has VM1');
    const pw = await b1.http('/openstack/latest/password');
    assert.deepEqual([pw.status, pw.body.toString()], [200, PASSWORD], 'the password moved with the VM');
    const withToken = await b1.http('/latest/meta-data/instance-id', { headers: [`x-aws-ec2-metadata-token: ${token}`] });
    assert.equal(withToken.status, 200, `the token taken on hv1 is valid on hv2: ${withToken.body.toString()}`);
    assert.equal((await b1.http('/latest/meta-data/instance-id', { headers: ['x-aws-ec2-metadata-token: junk'] })).status, 401);
  });

  it('migrates a VM to a host without its network: the destination builds it and serves within 1 s of the write', async () => {
    const net3 = { cidr: '198.18.0.0/24', service: '198.18.0.2' };
    await imds(hv1, ['network', 'add', 'net3', '--cidr', net3.cidr, '--service-ip', net3.service]);
    await imds(hv1, [
      'vm',
      'add',
      VM7,
      '--network',
      'net3',
      '--ip',
      '198.18.0.10',
      '--mac',
      '52:54:00:00:03:10',
      '--hostname',
      'seven',
      '--host',
      'hv1',
    ]);
    const onNet3 = { bridge: 'imdsb-net3', prefix: 24, metadataVia: net3.service, ip: '198.18.0.10', mac: '52:54:00:00:03:10' };
    const a7 = await hv1.sb.addGuest('a7', onNet3);
    assert.equal(await metaUuid(a7), VM7);
    assert.equal((await hv2.sb.hvLinks())['imdsb-net3'], undefined, 'hv2 has no bridge for net3');
    assert.ok(!(await hv2.sb.namespaces()).some((n) => n.endsWith('net3')), 'nor its namespace');
    // VM7's twin on hv2: a guest whose veth is put on net3's bridge as soon as hv2 has built it.
    const netns = `${hv2.sb.base}g-b7`;
    const hostEnd = `tg${hv2.sb.id.slice(0, 4)}b7`;
    await sh(['ip', 'netns', 'add', netns]);
    await sh(['ip', '-n', hv2.sb.hv, 'link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns]);
    const inside = [
      'link set lo up',
      `link set eth0 address ${onNet3.mac}`,
      `addr add ${onNet3.ip}/24 dev eth0`,
      'link set eth0 up',
      `route add 169.254.169.254/32 via ${net3.service}`,
    ];
    await sh(['ip', '-n', netns, '-batch', '-'], { stdin: `${inside.join('\n')}\n` });
    // ARP for the service address is retried every 20 ms, not every 1 s, while net3 is being built on hv2
    // (a migrated guest keeps its entry in practice: every imds0 of a namespace_prefix has the same MAC).
    await sh(['ip', 'netns', 'exec', netns, 'sysctl', '-qw', 'net.ipv4.neigh.eth0.retrans_time_ms=20']);
    const b7 = new Guest('b7', netns, onNet3.ip, onNet3.mac);
    const attached = async (): Promise<number> => {
      for (const end = Date.now() + 10_000; Date.now() < end;) {
        const links = await hv2.sb.hvLinks();
        if (links['imdsb-net3'] !== undefined) {
          await sh(['ip', '-n', hv2.sb.hv, '-batch', '-'], { stdin: `link set ${hostEnd} master imdsb-net3\nlink set ${hostEnd} up\n` });
          return Date.now();
        }
        await new Promise((r) => setTimeout(r, 5));
      }
      throw new Error('hv2 did not build net3 within 10 s');
    };
    try {
      const t0 = Date.now();
      const [status, bridged, served, stopped] = await Promise.all([
        migrateThrough(hv1, VM7, 'hv2'),
        attached(),
        (async () => {
          await until('the bridge', async () => ((await hv2.sb.hvLinks())['imdsb-net3'] === undefined ? undefined : true), 10_000, 5);
          return firstTime(b7, (s) => s === 200, 10_000);
        })(),
        firstTime(a7, (s) => s !== 200, 10_000),
      ]);
      assert.equal(status, 200);
      process.stdout.write(
        `# migrate to a host without the network: bridge ${bridged - t0} ms, served ${served - t0} ms, source stopped ${stopped - t0} ms\n`,
      );
      assert.ok(served - t0 <= 1000, `hv2 built net3 and served VM7 ${served - t0} ms after the write`);
      assert.ok(stopped - t0 <= 1000, `hv1 stopped serving VM7 ${stopped - t0} ms after the write`);
      assert.equal(await metaUuid(b7), VM7);
      await until('hv1 removes net3 (no VM of it left there)', async () =>
        (await hv1.sb.hvLinks())['imdsb-net3'] === undefined ? true : undefined,
      );
    } finally {
      // Leave the registry as the later tests expect it: no VM7, no net3 (whatever failed above).
      await hv1.sb.removeGuest(a7);
      await sh(['ip', 'netns', 'del', netns]);
      await imds(hv1, ['network', 'rm', 'net3', '--force'], true);
    }
    assert.equal((await etcd().ctl(['get', `/imds/v1/vms/${VM7}`, '--print-value-only'])).trim(), '');
    await until('hv2 removes net3', async () => ((await hv2.sb.hvLinks())['imdsb-net3'] === undefined ? true : undefined));
  });

  it('registers every host (live while its daemon runs) and refuses a VM placed on a host that never registered', async () => {
    assert.deepEqual(await liveness(hv1), 'hv1:live hv2:live');
    const rows = await hostList(hv2);
    assert.deepEqual(
      rows.map((r) => [r.host_id, r.vms]),
      [
        ['hv1', 1],
        ['hv2', 2],
      ],
    );
    assert.ok(
      rows.every((r) => r.version !== ''),
      'each with its version',
    );
    const stored = JSON.parse(await etcd().ctl(['get', '/imds/v1/hosts/hv1', '--print-value-only'])) as { host_id: string };
    assert.equal(stored.host_id, 'hv1');
    const lease = await etcd().ctl(['get', '/imds/v1/alive/hv1', '-w', 'json']);
    assert.notEqual((JSON.parse(lease) as { kvs: { lease?: number }[] }).kvs[0]?.lease ?? 0, 0, 'the alive key has a lease');

    const typo = await imds(hv1, ['vm', 'migrate', VM3, '--to', 'hv3typo'], true);
    assert.equal(typo.code, 2, typo.stderr);
    assert.match(typo.stderr, /host: no host "hv3typo" is registered \(known: hv1 \(live\), hv2 \(live\)\)/);
    assert.equal((JSON.parse(await etcd().ctl(['get', `/imds/v1/vms/${VM3}`, '--print-value-only'])) as { host: string }).host, 'hv1');
    const add = [
      'vm',
      'add',
      VM8,
      '--network',
      'net1',
      '--ip',
      '198.51.100.18',
      '--mac',
      '52:54:00:00:00:18',
      '--hostname',
      'eight',
      '--host',
      'hv3',
    ];
    const refused = await imds(hv2, add, true);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /VALIDATION_FAILED.*host: no host "hv3"|host: no host "hv3".*VALIDATION_FAILED/s);
    assert.equal((await etcd().ctl(['get', `/imds/v1/vms/${VM8}`, '--print-value-only'])).trim(), '', 'nothing was written');
    // A controller placing a VM before hv3's daemon first starts says so.
    await imds(hv2, [...add, '--allow-unknown-host']);
    const listed = 'hv1:live hv2:live hv3:down:unregistered';
    await until('hv1 lists hv3, not registered', async () => ((await liveness(hv1)) === listed ? true : undefined));
    // From there to a registered host, with the CLI: it returns once hv2 (whose CLI it is) serves the VM.
    const moved = await imds(hv2, ['vm', 'migrate', VM8, '--to', 'hv2']);
    assert.match(moved.stdout, new RegExp(`vm ${VM8} migrated to hv2`));
    assert.equal((await imds(hv2, ['vm', 'show', VM8], true)).code, 0);
    await imds(hv2, ['vm', 'rm', VM8]);
  });

  it('lets a controller write only over the revision it read: the second writer with the same --if-revision loses (exit 5)', async () => {
    const shown = JSON.parse((await imds(hv1, ['vm', 'show', VM3, '--json'])).stdout) as { revision: number; host: string };
    assert.equal(shown.host, 'hv1');
    const stored = JSON.parse(await etcd().ctl(['get', `/imds/v1/vms/${VM3}`, '-w', 'json'])) as { kvs: { mod_revision: number }[] };
    assert.equal(shown.revision, stored.kvs[0]?.mod_revision, 'vm show prints the mod revision in etcd');
    const rev = String(shown.revision);
    const first = await imds(hv1, ['vm', 'set', VM3, '--name', 'first-controller', '--if-revision', rev], true);
    assert.equal(first.code, 0, first.stderr);
    const second = await imds(hv2, ['vm', 'set', VM3, '--name', 'second-controller', '--if-revision', rev], true);
    assert.equal(second.code, 5, second.stderr);
    assert.match(second.stderr, /REGISTRY_CONFLICT/);
    const after = JSON.parse(await etcd().ctl(['get', `/imds/v1/vms/${VM3}`, '--print-value-only'])) as { name: string };
    assert.equal(after.name, 'first-controller', 'the second write did not overwrite the first');
    const meta = JSON.parse((await (guests['a3'] as Guest).http('/openstack/latest/meta_data.json')).body.toString()) as { name: string };
    assert.equal(meta.name, 'first-controller');
  });

  it('imports a file through one daemon into etcd, in several transactions, placed on both hosts; --prune through the other', async () => {
    const net2 = { id: 'net2', cidr: '203.0.113.0/24', service_ip: '203.0.113.2' };
    const ids = Array.from({ length: 20 }, (_, k) => `77777777-0000-4000-8000-${String(k).padStart(12, '0')}`);
    const vms = ids.map((id, k) => ({
      id,
      network: 'net2',
      ip: `203.0.113.${100 + k}`,
      mac: `52:54:00:00:01:${String(k).padStart(2, '0')}`,
      hostname: `imp${k}`,
      host: k % 2 === 0 ? 'hv1' : 'hv2',
    }));
    const file = join(hv1.sb.dir, 'import.json');
    writeFileSync(file, JSON.stringify({ networks: [net2], vms }));
    const out = await imds(hv1, ['vm', 'import', file, '--json']);
    const result = JSON.parse(out.stdout) as { networks: { created: string[] }; vms: { created: string[] } };
    assert.deepEqual([result.networks.created, result.vms.created.length], [['net2'], 20]);
    const revisions = new Set<number>();
    for (const id of ids) {
      const kv = JSON.parse(await etcd().ctl(['get', `/imds/v1/vms/${id}`, '-w', 'json'])) as { kvs?: { mod_revision: number }[] };
      const rev = kv.kvs?.[0]?.mod_revision;
      assert.ok(rev !== undefined, `${id} is in etcd`);
      revisions.add(rev);
    }
    assert.ok(revisions.size >= 2, `written in ${revisions.size} transactions (max_txn_ops 4)`);
    const listed = async (h: Host): Promise<number> =>
      (JSON.parse((await imds(h, ['vm', 'list', '--network', 'net2', '--json'])).stdout) as unknown[]).length;
    assert.equal(await listed(hv1), 10, 'hv1 serves its half when the import returns');
    await until('hv2 serves its half', async () => ((await listed(hv2)) === 10 ? true : undefined), 10_000, 100);
    writeFileSync(file, JSON.stringify({ networks: [net2], vms: vms.slice(0, 4) }));
    const dry = JSON.parse((await imds(hv2, ['vm', 'import', file, '--prune', '--dry-run', '--json'])).stdout) as {
      vms: { deleted: string[]; unchanged: string[] };
    };
    assert.deepEqual([dry.vms.deleted.length, dry.vms.unchanged.length], [16, 4], "only net2, the file's network, is pruned");
    assert.equal(await listed(hv2), 10, 'a dry run changes nothing');
    await imds(hv2, ['vm', 'import', file, '--prune']);
    assert.equal(await listed(hv2), 2, 'hv2 applied the prune before the command returned');
    await until('hv1 applies the prune', async () => ((await listed(hv1)) === 2 ? true : undefined), 10_000, 100);
    const left = await etcd().ctl(['get', '--prefix', '/imds/v1/vms/7777', '--keys-only']);
    assert.equal(left.split('\n').filter((l) => l.startsWith('/imds/v1/vms/')).length, 4);
    assert.equal(await metaUuid(guests['a3'] as Guest), VM3, 'net1 untouched');
    // 4 VMs, their password keys and the network: 9 deletions, in 3 transactions of at most 4.
    const revision = async (): Promise<number> =>
      (JSON.parse(await etcd().ctl(['get', '/imds/v1/layout', '-w', 'json'])) as { header: { revision: number } }).header.revision;
    const before = await revision();
    const removed = JSON.parse((await imds(hv1, ['network', 'rm', 'net2', '--force', '--json'])).stdout) as unknown;
    assert.deepEqual(removed, { deleted: 'net2', vms_deleted: 4 });
    assert.equal((await revision()) - before, 3, 'three transactions');
    assert.equal(
      (await etcd().ctl(['get', '--prefix', '/imds/v1/', '--keys-only'])).match(/net2|\/vms\/7777/g),
      null,
      'nothing of net2 is left',
    );
    await until('hv2 removes net2', async () => ((await hv2.sb.hvLinks())['imdsb-net2'] === undefined ? true : undefined), 10_000, 100);
  });

  it('keeps serving with every member stopped, reports degraded, refuses writes (REGISTRY_UNAVAILABLE, exit 3)', async () => {
    for (let i = 1; i <= 3; i++) await etcd().stopMember(i);
    for (const h of [hv1, hv2]) {
      await until(
        `${h.name} reports the registry down`,
        async () => ((await imds(h, ['status'], true)).code !== 0 ? true : undefined),
        30_000,
        250,
      );
    }
    assert.equal(await metaUuid(guests['a3'] as Guest), VM3, 'hv1 serves from its local copy');
    assert.equal(await metaUuid(guests['b1'] as Guest), VM1, 'hv2 serves from its local copy');
    assert.equal(await metaUuid(guests['b2'] as Guest), VM2);
    assert.equal(hv1.sb.metric('imds_registry_connected'), 0);
    assert.equal(await healthStatus(hv2), 503, 'GET /v1/health says degraded');
    const refused = await imds(
      hv2,
      ['vm', 'add', VM4, '--network', 'net1', '--ip', '198.51.100.13', '--mac', '52:54:00:00:00:13', '--hostname', 'four', '--host', 'hv2'],
      true,
    );
    assert.equal(refused.code, 3, refused.stderr);
    assert.match(refused.stderr, /registry|etcd/i);
    // A guest posts its password meanwhile: answered from the local copy, published once etcd is back (next test).
    const posted = await (guests['b2'] as Guest).http('/openstack/latest/password', {
      method: 'POST',
      data: 'cG9zdGVkLWR1cmluZy1vdXRhZ2U=',
    });
    assert.equal(posted.status, 200);
    assert.equal((await (guests['b2'] as Guest).http('/openstack/latest/password')).body.toString(), 'cG9zdGVkLWR1cmluZy1vdXRhZ2U=');
  });

  it('catches up on reconnect with a write made by etcdctl while the daemons were cut off, nothing lost or doubled', async () => {
    // The daemons stay cut off (partition) while the members come back, so that the write happens meanwhile.
    await partition(true);
    for (let i = 1; i <= 3; i++) etcd().startMember(i);
    await etcd().waitHealthy(30_000);
    await etcd().ctl(['put', `/imds/v1/vms/${VM4}`, vmDoc(VM4, '198.51.100.13', '52:54:00:00:00:13', 'hv2')]);
    assert.notEqual((await imds(hv2, ['status'], true)).code, 0, 'hv2 is still cut off');
    await partition(false);
    for (const h of [hv1, hv2]) {
      await until(
        `${h.name} reports the registry back`,
        async () => ((await imds(h, ['status'], true)).code === 0 ? true : undefined),
        30_000,
        250,
      );
    }
    await until('hv2 has VM4', async () => ((await imds(hv2, ['vm', 'show', VM4], true)).code === 0 ? true : undefined), 10_000, 100);
    guests['b4'] = await hv2.sb.addGuest('b4', { ...ON_NET1, ip: '198.51.100.13', mac: '52:54:00:00:00:13' });
    assert.equal(await metaUuid(guests['b4']), VM4);
    const ids = (h: Host): Promise<string[]> =>
      imds(h, ['vm', 'list', '--json']).then((r) => (JSON.parse(r.stdout) as { id: string }[]).map((v) => v.id).sort());
    assert.deepEqual(await ids(hv1), [VM3]);
    assert.deepEqual(await ids(hv2), [VM1, VM2, VM4]);
    assert.equal(hv2.sb.metric('imds_registry_connected'), 1);
    assert.equal(await healthStatus(hv2), 200);
    // The password VM2's guest posted during the outage was retried until published.
    const key = `/imds/v1/passwords/${VM2}`;
    await until('the password posted during the outage reaches etcd', async () =>
      (await etcd().ctl(['get', key, '--print-value-only'])).trim() === 'cG9zdGVkLWR1cmluZy1vdXRhZ2U=' ? true : undefined,
    );
    // Cleared through the other host's CLI: hv2 clears its copy from the watch, and the guest may post again.
    await imds(hv1, ['vm', 'password', 'clear', VM2]);
    assert.equal((await etcd().ctl(['get', key, '--print-value-only'])).trim(), '');
    const b2 = guests['b2'] as Guest;
    await until('hv2 cleared its copy', async () =>
      (await b2.http('/openstack/latest/password')).body.toString() === '' ? true : undefined,
    );
    assert.equal((await b2.http('/openstack/latest/password', { method: 'POST', data: 'c2Vjb25k' })).status, 200);
    await until('the new password reaches etcd', async () =>
      (await etcd().ctl(['get', key, '--print-value-only'])).trim() === 'c2Vjb25k' ? true : undefined,
    );
  });

  it('resyncs in full when its watch revision was compacted while cut off (a delete and a re-add meanwhile)', async () => {
    const before = Number(hv2.sb.metric('imds_registry_revision'));
    const daemon = hv2.daemon as DaemonProcess;
    const mark = daemon.logs.length;
    await partition(true);
    // A cut link is noticed by the keepalive (a ping every 10 s, 3 s to answer) and failed reconnects.
    await until('hv2 notices the cut', async () => ((await imds(hv2, ['status'], true)).code !== 0 ? true : undefined), 60_000, 250);
    await etcd().ctl(['del', `/imds/v1/vms/${VM4}`]);
    await etcd().ctl(['put', `/imds/v1/vms/${VM6}`, vmDoc(VM6, '198.51.100.16', '52:54:00:00:00:16', 'hv2')]);
    await etcd().ctl(['put', `/imds/v1/vms/${VM6}`, vmDoc(VM6, '198.51.100.15', '52:54:00:00:00:15', 'hv2')]);
    const compactedAt = await etcd().compact();
    assert.ok(compactedAt > before, `compacted at ${compactedAt}, past hv2's revision ${before}`);
    await partition(false);
    await daemon.waitForAfter(mark, (l) => l['msg'] === 'registry watch compacted: reading everything again');
    await until(
      'hv2 reports the registry back',
      async () => ((await imds(hv2, ['status'], true)).code === 0 ? true : undefined),
      30_000,
      250,
    );
    await until(
      'hv2 no longer has VM4',
      async () => ((await imds(hv2, ['vm', 'show', VM4], true)).code === 4 ? true : undefined),
      10_000,
      100,
    );
    const shown = JSON.parse((await imds(hv2, ['vm', 'show', VM6, '--json'])).stdout) as { ip: string };
    assert.equal(shown.ip, '198.51.100.15', 'the last version of VM6');
    assert.equal(await metaStatus(guests['b4'] as Guest), 404, "VM4's guest is no longer served");
    const ids = (JSON.parse((await imds(hv2, ['vm', 'list', '--json'])).stdout) as { id: string }[]).map((v) => v.id).sort();
    assert.deepEqual(ids, [VM1, VM2, VM6]);
    assert.ok(Number(hv2.sb.metric('imds_registry_revision')) >= compactedAt);
  });

  it('writes with one member killed', async () => {
    const leader = await etcd().leader();
    const victim = leader === 1 ? 2 : 1;
    await etcd().killMember(victim);
    const out = await imds(hv2, [
      'vm',
      'add',
      VM5,
      '--network',
      'net1',
      '--ip',
      '198.51.100.14',
      '--mac',
      '52:54:00:00:00:14',
      '--hostname',
      'five',
      '--host',
      'hv1',
    ]);
    assert.match(out.stdout, new RegExp(`vm ${VM5} added`));
    await until('hv1 has VM5', async () => ((await imds(hv1, ['vm', 'show', VM5], true)).code === 0 ? true : undefined), 10_000, 100);
    assert.equal((await imds(hv2, ['vm', 'show', VM5], true)).code, 4);
    assert.equal((await imds(hv1, ['status'], true)).code, 0, 'one member down is not degraded');
  });

  it('serves from its local copy when started while etcd is down, and connects when etcd comes back', async () => {
    await (hv1.daemon as DaemonProcess).stop();
    for (let i = 1; i <= 3; i++) await etcd().stopMember(i);
    await startDaemon(hv1);
    assert.equal(await metaUuid(guests['a3'] as Guest), VM3, 'hv1 serves VM3 from its local copy');
    assert.equal((await imds(hv1, ['vm', 'show', VM5], true)).code, 0, 'and VM5');
    assert.notEqual((await imds(hv1, ['status'], true)).code, 0, 'degraded while etcd is down');
    const refused = await imds(hv1, ['vm', 'rm', VM5], true);
    assert.equal(refused.code, 3, refused.stderr);
    for (let i = 1; i <= 3; i++) etcd().startMember(i);
    await etcd().waitHealthy(30_000);
    await until(
      'hv1 reports the registry back',
      async () => ((await imds(hv1, ['status'], true)).code === 0 ? true : undefined),
      30_000,
      250,
    );
    await imds(hv1, ['vm', 'rm', VM5]);
    assert.equal((await imds(hv1, ['vm', 'show', VM5], true)).code, 4, 'the removal was applied before the command returned');
    assert.equal((await etcd().ctl(['get', `/imds/v1/vms/${VM5}`, '--print-value-only'])).trim(), '');
  });

  it('serves exactly the new set after VMs were added, removed and changed in etcd while its daemon was stopped', async () => {
    const ids = async (h: Host): Promise<string[]> =>
      (JSON.parse((await imds(h, ['vm', 'list', '--json'])).stdout) as { id: string }[]).map((v) => v.id).sort();
    assert.deepEqual(await ids(hv2), [VM1, VM2, VM6]);
    await (hv2.daemon as DaemonProcess).stop();
    await until('hv2 shows as not live on hv1', async () => ((await liveness(hv1)) === 'hv1:live hv2:down' ? true : undefined));
    // While hv2 is down: VM2 removed, VM6 changed (its name), VM8 added on hv2, VM1 moved to hv1.
    await etcd().ctl(['del', `/imds/v1/vms/${VM2}`]);
    await etcd().ctl(['put', `/imds/v1/vms/${VM6}`, vmDoc(VM6, '198.51.100.15', '52:54:00:00:00:15', 'hv2', { name: 'renamed' })]);
    await etcd().ctl(['put', `/imds/v1/vms/${VM8}`, vmDoc(VM8, '198.51.100.18', '52:54:00:00:00:18', 'hv2')]);
    const vm1 = JSON.parse(await etcd().ctl(['get', `/imds/v1/vms/${VM1}`, '--print-value-only'])) as Record<string, unknown>;
    await etcd().ctl(['put', `/imds/v1/vms/${VM1}`, JSON.stringify({ ...vm1, host: 'hv1' })]);
    await startDaemon(hv2);
    assert.deepEqual(await ids(hv2), [VM6, VM8], 'the new set when ready: nothing lost, nothing stale, nothing twice');
    assert.equal((JSON.parse((await imds(hv2, ['vm', 'show', VM6, '--json'])).stdout) as { name: string }).name, 'renamed');
    assert.equal(await metaStatus(guests['b2'] as Guest), 404, "the removed VM2's guest is not served");
    assert.equal(await metaStatus(guests['b1'] as Guest), 404, "VM1's guest on hv2 is not served: VM1 moved to hv1");
    guests['b8'] = await hv2.sb.addGuest('b8', { ...ON_NET1, ip: '198.51.100.18', mac: '52:54:00:00:00:18' });
    assert.equal(await metaUuid(guests['b8']), VM8);
    assert.equal(hv2.sb.metric('imds_vms'), 2, 'two VMs in the local store');
    await until('hv1 has VM1', async () => ((await ids(hv1)).includes(VM1) ? true : undefined));
    assert.deepEqual(await ids(hv1), [VM1, VM3]);
    const live = 'hv1:live hv2:live';
    await until('hv2 is live again', async () => ((await liveness(hv1)) === live ? true : undefined));
  });

  it('refuses a layout it does not know: serves its local copy, degraded, writes refused; applies the registry once fixed', async () => {
    const layout = '/imds/v1/layout';
    assert.deepEqual(JSON.parse(await etcd().ctl(['get', layout, '--print-value-only'])), { version: 1 });
    await etcd().ctl(['put', layout, JSON.stringify({ version: 2 })]);
    await until('hv2 reports the layout', async () => ((await imds(hv2, ['status'], true)).code !== 0 ? true : undefined), 10_000, 100);
    // A daemon started on it refuses it too, and serves its local copy.
    await (hv1.daemon as DaemonProcess).stop();
    await etcd().ctl(['put', `/imds/v1/vms/${VM3}`, vmDoc(VM3, '198.51.100.12', '52:54:00:00:00:12', 'hv1', { name: 'not-applied' })]);
    await startDaemon(hv1);
    const status = await imds(hv1, ['status', '--json'], true);
    assert.equal(status.code, 1, status.stdout);
    const registry = (JSON.parse(status.stdout) as { daemon: { registry: { connected: boolean; last_error: string } } }).daemon.registry;
    assert.equal(registry.connected, false);
    assert.match(registry.last_error, /layout is version 2; this imds knows version 1 only/);
    assert.equal(await metaUuid(guests['a3'] as Guest), VM3, 'hv1 serves its local copy');
    const meta = JSON.parse((await (guests['a3'] as Guest).http('/openstack/latest/meta_data.json')).body.toString()) as { name: string };
    assert.notEqual(meta.name, 'not-applied', 'nothing of the unknown layout is applied');
    const refused = await imds(hv1, ['vm', 'set', VM3, '--name', 'x'], true);
    assert.equal(refused.code, 3, refused.stderr);
    assert.match(refused.stderr, /layout is version 2/);
    await etcd().ctl(['put', layout, JSON.stringify({ version: 1 })]);
    for (const h of [hv1, hv2])
      await until(`${h.name} applies the registry again`, async () => ((await imds(h, ['status'], true)).code === 0 ? true : undefined));
    await until('hv1 applies the change made meanwhile', async () => {
      const m = JSON.parse((await (guests['a3'] as Guest).http('/openstack/latest/meta_data.json')).body.toString()) as { name: string };
      return m.name === 'not-applied' ? true : undefined;
    });
  });
});

describe('registry over TLS (client certificates required)', () => {
  const sb = new Sandbox();
  let cluster: EtcdCluster | undefined;
  const imds = (args: string[], instance = 'main'): Promise<RunResult> =>
    sb.cli(['--admin-socket', sb.adminSocket(instance), ...args], { allowFailure: true });

  before(async () => {
    await sb.setup();
    cluster = await EtcdCluster.start({ netns: sb.hv, tls: true });
  });
  afterEach(() => sb.assertNoDeaths());
  after(() => allSteps([() => sb.assertNoDeaths(), () => sb.cleanupDaemons(), () => cluster?.cleanup(), () => sb.cleanup()]));

  it('serves a VM written through the CLI over TLS; without a client certificate the daemon is degraded and refuses writes', async () => {
    const c = cluster as EtcdCluster;
    const tls = c.tls as NonNullable<EtcdCluster['tls']>;
    const good = sb.config({
      host_id: 'hv1',
      log_level: 'info',
      registry: { etcd: { endpoints: c.endpoints, tls: { ca: tls.ca, cert: tls.cert, key: tls.key } } },
    });
    await sb.startDaemon(sb.writeConfig(good));
    assert.equal((await imds(['status'])).code, 0, 'connected over TLS');
    const net = await imds(['network', 'add', 'net1', '--cidr', NET.cidr, '--service-ip', NET.service]);
    assert.equal(net.code, 0, net.stderr);
    const vm = await imds([
      'vm',
      'add',
      VM1,
      '--network',
      'net1',
      '--ip',
      '198.51.100.10',
      '--mac',
      '52:54:00:00:00:10',
      '--hostname',
      'one',
    ]);
    assert.equal(vm.code, 0, vm.stderr);
    const doc = JSON.parse(await c.ctl(['get', `/imds/v1/vms/${VM1}`, '--print-value-only'])) as { host: string };
    assert.equal(doc.host, 'hv1', "--host defaults to the daemon's own host_id");
    const guest = await sb.addGuest('a1', { ...ON_NET1, ip: '198.51.100.10', mac: '52:54:00:00:00:10' });
    assert.equal(await metaUuid(guest), VM1);

    // A second daemon (its own state, sockets and namespace prefix) with the CA but no client certificate.
    const bad = sb.config(
      {
        host_id: 'hv2',
        log_level: 'info',
        listen_port: 8776,
        namespace_prefix: `${sb.base}x-`,
        registry: { etcd: { endpoints: c.endpoints, tls: { ca: tls.ca } } },
      },
      'nocert',
    );
    await sb.startDaemon(sb.writeConfig(bad, 'nocert.yaml'));
    await until(
      'the daemon without a client certificate reports itself degraded',
      async () => ((await imds(['status'], 'nocert')).code !== 0 ? true : undefined),
      30_000,
      250,
    );
    const refused = await imds(
      ['vm', 'add', VM2, '--network', 'net1', '--ip', '198.51.100.11', '--mac', '52:54:00:00:00:11', '--hostname', 'two'],
      'nocert',
    );
    assert.equal(refused.code, 3, refused.stderr);
    assert.equal((await c.ctl(['get', `/imds/v1/vms/${VM2}`, '--print-value-only'])).trim(), '', 'nothing was written');
  });
});
