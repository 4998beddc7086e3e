// `imds doctor`, as root, with real guests: it passes (exit 0, every hop ✓) once a guest has fetched
// its metadata, then each hop is broken in turn and doctor must name it (✗ on that hop, exit 1,
// the JSON shape exactly {ok, hops: [{name, ok, detail, fix}]}), and pass again once repaired.
// The daemon runs with IMDS_FAULT_NO_DRIFT_REPAIR=1: its drift watch would otherwise repair most
// kernel damage within milliseconds, before doctor could see it (src/daemon/faults.ts). dnsmasq is
// started through a wrapper on the daemon's PATH that fails while a marker file exists, so a killed
// dnsmasq stays down (the supervisor would restart it in 0.5 s); a `bridge` wrapper there fails
// forwarding-table reads the same way (the `reads` hop). The per-VM contact doctor reads is kept
// across a restart and a hand-over (`imds restart`): checked at the end.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { until } from '../helpers/wait.ts';
import { sh, useSandbox, type DaemonProcess, type Guest, type Sandbox } from '../helpers/sandbox.ts';

const VM_A = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
/** Registered with a MAC its guest does not use (the guest's real one is REAL_W). */
const VM_W = '6f0c3a7e-91f2-4b8a-a1c4-0f6e2b9d7c31';
const MAC_A = '52:54:00:00:00:0a';
const WRONG_W = '52:54:00:00:00:99';
const REAL_W = '52:54:00:00:00:20';
const VM_HOPS = [
  'vm',
  'network',
  'bridge',
  'bridge-port',
  'interception',
  'namespace',
  'veth',
  'addresses',
  'neighbour',
  'nft-table',
  'guard',
  'dhcp-server',
  'dhcp-lease',
  'listener',
  'endpoint',
  'tokens',
  'rate-limit',
  'requests',
];

interface Hop {
  name: string;
  ok: boolean;
  detail: string;
  fix: string | null;
}
interface Report {
  ok: boolean;
  hops: Hop[];
}

describe('imds doctor', () => {
  const current = useSandbox({ before, after, afterEach });
  let sb: Sandbox;
  let daemon: DaemonProcess;
  let gA: Guest;
  let ns: string;
  let marker: string;
  let readsMarker: string;
  let configPath: string;
  let daemonEnv: Record<string, string>;
  const inNs = (...argv: string[]) => sh(['nsenter', `--net=/run/netns/${ns}`, '--', ...argv]);
  const cli = (...args: string[]) => sb.cli(['--admin-socket', sb.adminSocket(), ...args], { allowFailure: true });

  /** Runs doctor both ways; checks the JSON's exact shape and that the two agree; prints the human form. */
  async function doctor(...args: string[]): Promise<{ code: number; report: Report; text: string }> {
    const json = await cli('doctor', ...args, '--json');
    const human = await cli('doctor', ...args);
    assert.equal(json.stderr, '', 'doctor --json wrote nothing to stderr');
    const report = JSON.parse(json.stdout) as Report;
    assert.deepEqual(Object.keys(report), ['ok', 'hops']);
    for (const h of report.hops) {
      assert.deepEqual(Object.keys(h), ['name', 'ok', 'detail', 'fix'], JSON.stringify(h));
      assert.equal(typeof h.detail, 'string');
      assert.equal(h.fix === null, h.ok, `a fix exactly for failed hops: ${JSON.stringify(h)}`);
    }
    assert.equal(
      report.ok,
      report.hops.every((h) => h.ok),
    );
    assert.equal(json.code, report.ok ? 0 : 1, 'exit status');
    assert.equal(human.code, json.code, 'the same exit status without --json');
    for (const h of report.hops) assert.ok(human.stdout.includes(`${h.ok ? '✓' : '✗'} ${h.name} `), `${h.name} in:\n${human.stdout}`);
    process.stdout.write(`# imds doctor ${args.join(' ')} (exit ${human.code}):\n# ${human.stdout.trimEnd().split('\n').join('\n# ')}\n`);
    return { code: json.code, report, text: human.stdout };
  }

  /** Doctor of `args` fails, on `hop` among others; returns that hop. */
  async function broken(hop: string, ...args: string[]): Promise<Hop> {
    const { code, report } = await doctor(...args);
    assert.equal(code, 1);
    assert.equal(report.ok, false);
    const h = report.hops.find((x) => x.name === hop);
    assert.ok(h !== undefined, `hop ${hop} in ${JSON.stringify(report.hops.map((x) => x.name))}`);
    assert.equal(h.ok, false, `${hop} fails: ${JSON.stringify(report, null, 2)}`);
    assert.ok(h.fix !== null && h.fix.length > 0);
    return h;
  }

  /** The bridge port (tap) the guest with `mac` is on. */
  async function tapOf(mac: string): Promise<string> {
    const fdb = JSON.parse((await sb.hvRun(['bridge', '-j', 'fdb', 'show', 'br', 'imdsb-net1'])).stdout) as {
      mac: string;
      ifname: string;
    }[];
    return fdb.find((e) => e.mac === mac)?.ifname as string;
  }

  interface Contact {
    requests: number;
    first_seen: string;
    last_seen: string;
    last_status: number;
    recent?: { at: string; method?: string; path?: string; status: number; requests: number; by: string }[];
  }

  /** The VM's contact as `vm show --json` gives it. */
  async function vmContact(vm: string): Promise<Contact | undefined> {
    const shown = await cli('vm', 'show', vm, '--json');
    assert.equal(shown.code, 0, shown.stderr);
    return (JSON.parse(shown.stdout) as { contact?: Contact }).contact;
  }

  /** The guest fetches its metadata, then doctor passes for it: every hop ✓, exit 0. */
  async function healthy(): Promise<Report> {
    assert.equal((await gA.http('/openstack/latest/meta_data.json', { maxTimeS: 5 })).status, 200);
    const { code, report } = await doctor(VM_A);
    assert.equal(code, 0, JSON.stringify(report, null, 2));
    return report;
  }

  before(async () => {
    sb = current();
    ns = `${sb.nsPrefix}net1`;
    const bin = join(sb.dir, 'bin');
    marker = join(sb.dir, 'dnsmasq-fails');
    mkdirSync(bin);
    const real = (await sh(['sh', '-c', 'command -v dnsmasq || echo /usr/sbin/dnsmasq'])).stdout.trim();
    writeFileSync(
      join(bin, 'dnsmasq'),
      `#!/bin/sh\nif [ -e ${marker} ]; then\n` +
        '  echo "dnsmasq: failed to bind DHCP server socket: Address in use (doctor test)" >&2; exit 2\n' +
        `fi\nexec ${real} "$@"\n`,
    );
    chmodSync(join(bin, 'dnsmasq'), 0o755);
    readsMarker = join(sb.dir, 'fdb-read-fails');
    const realBridge = (await sh(['sh', '-c', 'command -v bridge || echo /usr/sbin/bridge'])).stdout.trim();
    writeFileSync(
      join(bin, 'bridge'),
      `#!/bin/sh\nif [ -e ${readsMarker} ] && [ "$2" = fdb ]; then\n` +
        '  echo "RTNETLINK answers: Operation not permitted (doctor test)" >&2; exit 1\n' +
        `fi\nexec ${realBridge} "$@"\n`,
    );
    chmodSync(join(bin, 'bridge'), 0o755);
    configPath = sb.writeConfig(
      sb.config({
        log_level: 'info',
        rate_limit_per_second: 1,
        rate_limit_burst: 30,
        networks: [{ id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2', dhcp: true }],
        vms: [
          { id: VM_A, network: 'net1', ip: '198.51.100.10', mac: MAC_A, hostname: 'alpha' },
          { id: VM_W, network: 'net1', ip: '198.51.100.20', mac: WRONG_W, hostname: 'whiskey' },
        ],
      }),
    );
    daemonEnv = { IMDS_FAULT_NO_DRIFT_REPAIR: '1', PATH: `${bin}:${process.env['PATH'] ?? ''}` };
    daemon = await sb.startDaemon(configPath, { env: daemonEnv });
    gA = await sb.addGuest('a', { bridge: 'imdsb-net1', prefix: 24, ip: '198.51.100.10', mac: MAC_A, metadataVia: '198.51.100.2' });
  });

  it('passes once the guest fetched its metadata: every hop ✓, in the order of the path, exit 0', async () => {
    const { code: before, report: first } = await doctor(VM_A);
    assert.equal(before, 1, 'before any request, the VM has not been heard from');
    // Its guest is up but has not asked: no requests (and its MAC may be on the bridge already, from IPv6 autoconfiguration).
    const failed = first.hops.filter((h) => !h.ok).map((h) => h.name);
    assert.ok(failed.includes('requests') && failed.every((n) => n === 'requests' || n === 'bridge-port'), failed.join(', '));
    const report = await healthy();
    assert.deepEqual(
      report.hops.map((h) => h.name),
      VM_HOPS,
    );
    assert.match(report.hops.find((h) => h.name === 'bridge-port')?.detail ?? '', new RegExp(`${MAC_A} is on port tg`));
    assert.match(report.hops.find((h) => h.name === 'requests')?.detail ?? '', /answered 200/);
    // Network level, one network and every network.
    const net = await doctor('--network', 'net1');
    assert.equal(net.code, 0);
    assert.deepEqual(
      net.report.hops.map((h) => h.name),
      ['network', 'bridge', 'interception', 'namespace', 'veth', 'addresses', 'nft-table', 'guard', 'dhcp-server', 'listener'],
    );
    const all = await doctor();
    assert.equal(all.code, 0);
    assert.ok(all.report.hops.every((h) => h.name.startsWith('net1/')));
    // Unknown subjects are errors, not reports.
    const unknown = await cli('doctor', '0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e');
    assert.equal(unknown.code, 4);
    assert.match(unknown.stderr, /^imds: NOT_FOUND: /);
    assert.equal((await cli('doctor', '--network', 'nope')).code, 4);
    assert.equal((await cli('doctor', VM_A, '--network', 'net1')).code, 2);
  });

  it("bridge-port: the guest's tap taken off the bridge", async () => {
    const fdb = JSON.parse((await sb.hvRun(['bridge', '-j', 'fdb', 'show', 'br', 'imdsb-net1'])).stdout) as {
      mac: string;
      ifname: string;
    }[];
    const tap = fdb.find((e) => e.mac === MAC_A)?.ifname as string;
    await sb.hvRun(['ip', 'link', 'set', tap, 'nomaster']);
    const hop = await broken('bridge-port', VM_A);
    assert.match(hop.detail, new RegExp(`${MAC_A} is not in imdsb-net1's forwarding table`));
    await sb.hvRun(['ip', 'link', 'set', tap, 'master', 'imdsb-net1']);
    await healthy();
  });

  it('bridge: the bridge set down', async () => {
    await sb.hvRun(['ip', 'link', 'set', 'imdsb-net1', 'down']);
    assert.match((await broken('bridge', VM_A)).detail, /bridge imdsb-net1 is down/);
    await broken('net1/bridge');
    await sb.hvRun(['ip', 'link', 'set', 'imdsb-net1', 'up']);
    await healthy();
  });

  it("interception: the VM's pair deleted from the bridge table's set (also at network level)", async () => {
    const element = `{ ${MAC_A} . 198.51.100.10 }`;
    const table = `${sb.nsPrefix}interception`;
    await sb.hvRun(['nft', 'delete', 'element', 'bridge', table, 'guests_net1', element]);
    const hop = await broken('interception', VM_A);
    assert.match(hop.detail, /52:54:00:00:00:0a \. 198\.51\.100\.10 is not in set guests_net1 of table bridge \S+interception/);
    assert.match((await broken('interception', '--network', 'net1')).detail, /missing 52:54:00:00:00:0a \. 198\.51\.100\.10/);
    await broken('net1/interception');
    await sb.hvRun(['nft', 'add', 'element', 'bridge', table, 'guests_net1', element]);
    await healthy();
  });

  it("guard: the VM's pair deleted from the namespace's guard set", async () => {
    const element = `{ ${MAC_A} . 198.51.100.10 }`;
    await inNs('nft', 'delete', 'element', 'ip', 'imds', 'guests', element);
    const hop = await broken('guard', VM_A);
    assert.match(hop.detail, /not in set guests of table ip imds: 198\.51\.100\.10 is a registered address/);
    await inNs('nft', 'add', 'element', 'ip', 'imds', 'guests', element);
    await healthy();
  });

  it('addresses: 169.254.169.254 removed from the namespace', async () => {
    await inNs('ip', 'addr', 'del', '169.254.169.254/32', 'dev', 'imds0');
    assert.match((await broken('addresses', VM_A)).detail, /imds0 in .* lacks 169\.254\.169\.254\/32/);
    await inNs('ip', 'addr', 'add', '169.254.169.254/32', 'dev', 'imds0');
    await healthy();
  });

  it('nft-table: the DNAT rule deleted (repaired by `imds reload`)', async () => {
    const chain = JSON.parse((await inNs('nft', '-a', '-j', 'list', 'chain', 'ip', 'imds', 'prerouting')).stdout) as {
      nftables: { rule?: { handle: number } }[];
    };
    const handle = chain.nftables.find((i) => i.rule !== undefined)?.rule?.handle;
    await inNs('nft', 'delete', 'rule', 'ip', 'imds', 'prerouting', 'handle', String(handle));
    assert.match((await broken('nft-table', VM_A)).detail, /the DNAT of 169\.254\.169\.254:80 is missing/);
    assert.equal((await cli('reload')).code, 0);
    await healthy();
  });

  it('veth: the veth pair deleted (repaired by `imds reload`)', async () => {
    await sb.hvRun(['ip', 'link', 'del', 'imdsv-net1']);
    assert.match((await broken('veth', VM_A)).detail, /imdsv-net1 \(the veth end on the bridge\) does not exist/);
    await broken('addresses', VM_A);
    assert.equal((await cli('reload')).code, 0);
    await healthy();
  });

  it("dhcp-lease: the VM's static lease line removed from dnsmasq's hosts file", async () => {
    const hosts = join(sb.dir, 'main-dhcp', 'net1', 'hosts');
    const text = readFileSync(hosts, 'utf8');
    writeFileSync(hosts, text.replace(`${MAC_A},198.51.100.10,alpha\n`, ''));
    assert.match((await broken('dhcp-lease', VM_A)).detail, /has no line 52:54:00:00:00:0a,198\.51\.100\.10,alpha/);
    writeFileSync(hosts, text);
    await healthy();
  });

  it('endpoint: http_endpoint disabled', async () => {
    assert.equal((await cli('vm', 'set', VM_A, '--http-endpoint', 'disabled')).code, 0);
    assert.match((await broken('endpoint', VM_A)).detail, /http_endpoint is disabled/);
    assert.equal((await cli('vm', 'set', VM_A, '--http-endpoint', 'enabled')).code, 0);
    await healthy();
  });

  it('tokens: http_tokens required and the guest asks without a token (401)', async () => {
    assert.equal((await cli('vm', 'set', VM_A, '--http-tokens', 'required')).code, 0);
    assert.equal((await gA.http('/latest/meta-data/instance-id')).status, 401);
    assert.match((await broken('tokens', VM_A)).detail, /refused 401: http_tokens required/);
    assert.equal((await cli('vm', 'set', VM_A, '--http-tokens', 'optional')).code, 0);
    await healthy();
  });

  it('neighbour: a VM registered with the wrong MAC; doctor names both MACs', async () => {
    const gW = await sb.addGuest('w', { bridge: 'imdsb-net1', prefix: 24, ip: '198.51.100.20', mac: REAL_W, metadataVia: '198.51.100.2' });
    const asked = await gW.http('/openstack/latest/meta_data.json', { maxTimeS: 2 }).catch(() => undefined);
    assert.equal(asked, undefined, 'the guard drops its requests: no answer');
    const hop = await broken('neighbour', VM_W);
    assert.ok(hop.detail.includes(REAL_W) && hop.detail.includes(WRONG_W), hop.detail);
    assert.match(hop.detail, /the guard drops its requests as spoofed \([1-9]\d* packets/);
    assert.match(hop.fix ?? '', new RegExp(`imds vm set ${VM_W} --mac ${REAL_W}`));
    assert.ok((await broken('bridge-port', VM_W)).detail.includes(`198.51.100.20 was seen from ${REAL_W} on port`));
    await gW.exec(['ip', 'link', 'set', 'eth0', 'down']);
  });

  it("vm: the VM's tap moved to another bridge (plugged into another network than the one it is registered on)", async () => {
    const tap = await tapOf(MAC_A);
    await sb.hvRun(['ip', 'link', 'add', 'brdoc0', 'type', 'bridge']);
    await sb.hvRun(['ip', 'link', 'set', 'brdoc0', 'up']);
    await sb.hvRun(['ip', 'link', 'set', tap, 'master', 'brdoc0']);
    // The guest speaks (it asks for its metadata, unanswered), so brdoc0 learns its MAC on that port.
    await gA.http('/openstack/latest/meta_data.json', { maxTimeS: 2 }).catch(() => undefined);
    const hop = await broken('vm', VM_A);
    assert.match(hop.detail, new RegExp(`but ${MAC_A} is on port ${tap} of brdoc0 \\(a bridge of no imds network\\), not on imdsb-net1`));
    assert.match(hop.fix ?? '', new RegExp(`ip link set ${tap} master imdsb-net1`));
    await broken('bridge-port', VM_A);
    await sb.hvRun(['ip', 'link', 'set', tap, 'master', 'imdsb-net1']);
    await sb.hvRun(['ip', 'link', 'del', 'brdoc0']);
    await healthy();
  });

  it('reads: a kernel read that fails (the forwarding table) is a hop of its own, naming the command and its error', async () => {
    writeFileSync(readsMarker, '');
    try {
      const hop = await broken('reads', VM_A);
      assert.match(
        hop.detail,
        /forwarding table: bridge -j fdb show br imdsb-net1 exited 1: RTNETLINK answers: Operation not permitted \(doctor test\)/,
      );
      assert.match(hop.fix ?? '', /unreliable/);
      assert.match((await broken('reads', '--network', 'net1')).detail, /forwarding table: /);
    } finally {
      rmSync(readsMarker);
    }
    await healthy();
  });

  it('requests and bridge-port stay ✓ across a restart: the per-VM contact is kept in state_dir', async () => {
    const before = await vmContact(VM_A);
    assert.ok(before !== undefined && before.requests > 0 && before.recent !== undefined && before.recent.length > 0);
    // Forwarding entries age out after 5 s meanwhile: a silent VM's MAC leaves the bridge's table, which
    // bridge-port accepts only for a VM heard from before (the kept contact), not for one never heard from.
    await sb.hvRun(['ip', 'link', 'set', 'imdsb-net1', 'type', 'bridge', 'ageing_time', '500']);
    assert.equal(await daemon.stop(), 0);
    const file = join(sb.dir, 'main', 'state', 'contacts.json');
    assert.ok(existsSync(file), 'written at stop');
    daemon = await sb.startDaemon(configPath, { env: daemonEnv });
    await daemon.waitFor((l) => l['msg'] === 'per-VM contact of the previous run read' && Number(l['vms']) >= 1, 10_000);
    await until(
      'the silent guest to age out of the forwarding table',
      async () => ((await tapOf(MAC_A)) === undefined ? true : undefined),
      20_000,
      500,
    )
      .then(() => process.stdout.write('# measured: the guest aged out of the forwarding table\n'))
      .catch(() => process.stdout.write('# measured: the guest stayed in the forwarding table (it spoke meanwhile)\n'));
    const { code, report } = await doctor(VM_A);
    await sb.hvRun(['ip', 'link', 'set', 'imdsb-net1', 'type', 'bridge', 'ageing_time', '30000']);
    assert.equal(code, 0, JSON.stringify(report, null, 2));
    const requests = report.hops.find((h) => h.name === 'requests')?.detail ?? '';
    assert.match(requests, /^no request since the daemon started \(.*\); the last one before it was .*, answered 200; /);
    assert.ok(requests.includes(before.last_seen), requests);
    const after = await vmContact(VM_A);
    assert.deepEqual(
      { ...after, recent: undefined },
      { ...before, recent: undefined },
      'the same counts, first and last contact; the recent requests are this run only',
    );
    assert.deepEqual(after?.recent, []);
    // A request now is counted on top, and is this run's first recent request (its path when Node answered it).
    assert.equal((await gA.http('/openstack/latest/meta_data.json', { maxTimeS: 5 })).status, 200);
    const again = await vmContact(VM_A);
    assert.equal(again?.requests, before.requests + 1);
    const [latest] = again?.recent ?? [];
    assert.ok(latest !== undefined && latest.status === 200 && latest.requests === 1, JSON.stringify(again));
    if (latest.by === 'node') assert.equal(latest.path, '/openstack/latest/meta_data.json');
    else assert.equal(latest.path, undefined, 'the native loop records no paths');
  });

  it('rate-limit: the guest over its burst (429), read from the limiter itself', async () => {
    const url = 'http://169.254.169.254/openstack/latest/meta_data.json';
    const argv = ['curl', '-s', '-w', '%{http_code}\\n'];
    for (let i = 0; i < 60; i++) argv.push('-o', '/dev/null', url);
    const codes = (await gA.exec(argv)).stdout.trim().split('\n');
    assert.equal(codes.at(-1), '429', `the last of 60 requests over a burst of 30: ${codes.join(' ')}`);
    // The guest goes on asking (20 a second; the bucket refills 1 a second) until the marker goes: its
    // bucket stays empty while doctor looks (twice: --json and the text, which must agree).
    const asking = join(sb.dir, 'guest-keeps-asking');
    writeFileSync(asking, '');
    const flood = gA.exec(['sh', '-c', `while [ -e ${asking} ]; do curl -s -o /dev/null ${url}; sleep 0.05; done`], { timeoutMs: 120_000 });
    const rateLimit = async (): Promise<Hop | undefined> =>
      (JSON.parse((await cli('doctor', VM_A, '--json')).stdout) as Report).hops.find((h) => h.name === 'rate-limit');
    try {
      await until('doctor to see the bucket empty', async () => ((await rateLimit())?.ok === false ? true : undefined), 20_000, 100);
      const hop = await broken('rate-limit', VM_A);
      assert.match(
        hop.detail,
        /^limited now: 0(\.\d)? of 30 tokens left in 198\.51\.100\.10's bucket .*; [1-9]\d* requests refused with 429/,
      );
    } finally {
      rmSync(asking);
      await flood;
    }
    // Served again once the bucket refills; doctor then says so, with the refusals still counted (once
    // a few tokens are back, so that the two runs below cannot straddle the first one).
    await until(
      'the guest to be served again',
      async () => ((await gA.http('/openstack/latest/meta_data.json')).status === 200 ? true : undefined),
      20_000,
      500,
    );
    await until(
      'a few tokens back in the bucket',
      async () => (/^not limited now: ([3-9]|[1-3]\d)(\.\d)? of 30/.test((await rateLimit())?.detail ?? '') ? true : undefined),
      20_000,
      500,
    );
    const after = await doctor(VM_A);
    assert.equal(after.code, 0);
    assert.match(after.report.hops.find((h) => h.name === 'rate-limit')?.detail ?? '', /^not limited now: .*requests refused with 429/);
  });

  it('dhcp-server: dnsmasq killed and unable to start again', async () => {
    writeFileSync(marker, '');
    const pid = Number(readFileSync(join(sb.dir, 'main-dhcp', 'net1', 'dnsmasq.pid'), 'utf8').trim());
    process.kill(pid, 'SIGKILL');
    await daemon.waitFor((l) => l['msg'] === 'dnsmasq died; restarting' && String(l['err']).includes('doctor test'), 20_000);
    assert.match((await broken('dhcp-server', VM_A)).detail, /Address in use \(doctor test\)/);
    await broken('dhcp-server', '--network', 'net1');
    assert.match((await broken('network', VM_A)).detail, /net1 is degraded: .*doctor test/);
    rmSync(marker);
  });

  it("namespace: the network's namespace deleted (the listener's socket is left in the old one)", async () => {
    await sh(['ip', 'netns', 'del', ns]);
    assert.match((await broken('namespace', VM_A)).detail, /does not exist/);
    assert.match((await broken('listener', '--network', 'net1')).detail, /the namespace was replaced/);
  });

  it('the per-VM contact survives a hand-over (`imds restart`): read once the old daemon exited, nothing counted twice', async () => {
    const before = await vmContact(VM_A);
    assert.ok(before !== undefined);
    void daemon.expectExit(60_000);
    const restart = await cli('restart', '--json');
    assert.equal(restart.code, 0, restart.stderr);
    const successor = await sb.successorOf(daemon, (JSON.parse(restart.stdout) as { successor: number }).successor);
    try {
      assert.equal((await daemon.expectExit(30_000)).code, 0, 'the old daemon stopped cleanly');
      // The successor reads the file once the old daemon has exited (it wrote its last counts then).
      const after = await until(
        'the successor to read the per-VM contact',
        async () => {
          const c = await vmContact(VM_A);
          return c !== undefined && c.requests >= before.requests ? c : undefined;
        },
        10_000,
        100,
      );
      assert.deepEqual({ ...after, recent: undefined }, { ...before, recent: undefined }, 'the same counts: none lost, none twice');
    } finally {
      assert.equal(await successor.stop(), 0, 'the successor stops cleanly');
    }
  });
});
