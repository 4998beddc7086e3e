// Security through the real data path, as root, from guest namespaces: IMDSv2 tokens (issue, use,
// expiry, binding, rotation, restart), the hop limit on the wire and through a NATing container,
// anti-spoofing in the namespace, the per-guest rate limit with a neighbour's latency measured,
// token-fetching clients with `http_tokens: required`, and a bounded fuzz run.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { Guest, useSandbox, type DaemonProcess, type Sandbox } from '../helpers/sandbox.ts';

const VM_A = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const VM_B = '6f0c3a7e-91f2-4b8a-a1c4-0f6e2b9d7c31';
const VM_R = '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d';
const VM_H = '3c2b1a09-8f7e-4d6c-9b5a-4f3e2d1c0b9a';
const VM_D = '5e4d3c2b-1a09-4f8e-8d7c-6b5a4f3e2d1c';
const VM_E = '7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d';
const SECRET_E = 'user-data-of-echo-81bd2a';
const SECRET_B = 'user-data-of-bravo-3f9c1e';
const GUEST_DIR = new URL('../helpers/guest/', import.meta.url).pathname;
const TTL = 'X-aws-ec2-metadata-token-ttl-seconds';
const TOKEN = 'X-aws-ec2-metadata-token';

/** HTTP that reports "no answer" as status 0 instead of throwing. */
async function tryHttp(g: Guest, path: string, options: Parameters<Guest['http']>[1] = {}) {
  try {
    return await g.http(path, options);
  } catch {
    return { status: 0, headers: {} as Record<string, string>, body: Buffer.alloc(0) };
  }
}

async function node<T>(guest: Guest, script: string, args: (string | number)[], timeoutMs = 180_000): Promise<T> {
  const out = await guest.exec([process.execPath, join(GUEST_DIR, script), ...args.map(String)], { timeoutMs });
  return JSON.parse(out.stdout.trim().split('\n').pop() as string) as T;
}

describe('security: tokens, anti-spoofing, rate limits', () => {
  const current = useSandbox({ before, after, afterEach });
  let sb: Sandbox;
  let daemon: DaemonProcess;
  let cfgPath: string;
  let gA: Guest;
  let gB: Guest;
  let gR: Guest;
  let gH: Guest;

  const net = { id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2', gateway: '198.51.100.1' };
  const on1 = { bridge: 'imdsb-net1', prefix: 24, metadataVia: '198.51.100.2' };

  before(async () => {
    sb = current();
    cfgPath = sb.writeConfig(
      sb.config({
        log_level: 'info',
        spoof_check_interval_s: 0.5,
        networks: [net],
        vms: [
          { id: VM_A, network: 'net1', ip: '198.51.100.10', mac: '52:54:00:00:00:0a', hostname: 'alpha', user_data: 'user-data-of-alpha' },
          { id: VM_B, network: 'net1', ip: '198.51.100.11', mac: '52:54:00:00:00:0b', hostname: 'bravo', user_data: SECRET_B },
          { id: VM_R, network: 'net1', ip: '198.51.100.12', mac: '52:54:00:00:00:0c', hostname: 'romeo', http_tokens: 'required', user_data: 'user-data-of-romeo' },
          { id: VM_H, network: 'net1', ip: '198.51.100.13', mac: '52:54:00:00:00:0d', hostname: 'hotel', http_hop_limit: 2 },
          { id: VM_D, network: 'net1', ip: '198.51.100.14', mac: '52:54:00:00:00:0e', hostname: 'delta', http_endpoint: 'disabled' },
          // Registered, but its guest is not running: the forger takes its address.
          { id: VM_E, network: 'net1', ip: '198.51.100.15', mac: '52:54:00:00:00:0f', hostname: 'echo', user_data: SECRET_E },
        ],
      }),
    );
    daemon = await sb.startDaemon(cfgPath);
    gA = await sb.addGuest('a', { ...on1, ip: '198.51.100.10', mac: '52:54:00:00:00:0a' });
    gB = await sb.addGuest('b', { ...on1, ip: '198.51.100.11', mac: '52:54:00:00:00:0b' });
    gR = await sb.addGuest('r', { ...on1, ip: '198.51.100.12', mac: '52:54:00:00:00:0c' });
    gH = await sb.addGuest('h', { ...on1, ip: '198.51.100.13', mac: '52:54:00:00:00:0d' });
  });

  const token = async (g: Guest, ttl = '21600', extra: string[] = [], path = '/latest/api/token') => g.http(path, { method: 'PUT', headers: [`${TTL}: ${ttl}`, ...extra] });

  it('issues tokens that serve their VM, refuses them elsewhere, when expired, forwarded or under a dated path', async () => {
    const t = await token(gA);
    assert.equal(t.status, 200);
    assert.equal(t.headers[TTL.toLowerCase()], '21600');
    const tokA = t.body.toString();
    const ok = await gA.http('/latest/meta-data/instance-id', { headers: [`${TOKEN}: ${tokA}`] });
    assert.equal(ok.status, 200);
    assert.equal((await gA.http('/latest/user-data', { headers: [`${TOKEN}: ${tokA}`] })).body.toString(), 'user-data-of-alpha');
    assert.equal((await gB.http('/latest/meta-data/instance-id', { headers: [`${TOKEN}: ${tokA}`] })).status, 401, "another VM presenting A's token");
    assert.equal((await gA.http('/latest/meta-data/instance-id', { headers: [`${TOKEN}: ${tokA.slice(0, -3)}AAA`] })).status, 401);
    const short = (await token(gA, '1')).body.toString();
    assert.equal((await gA.http('/latest/meta-data/', { headers: [`${TOKEN}: ${short}`] })).status, 200);
    await new Promise((r) => setTimeout(r, 2100));
    assert.equal((await gA.http('/latest/meta-data/', { headers: [`${TOKEN}: ${short}`] })).status, 401, 'expired');
    for (const ttl of ['0', '21601', 'x']) assert.equal((await token(gA, ttl)).status, 400, `ttl ${ttl}`);
    assert.equal((await gA.http('/latest/api/token', { method: 'PUT' })).status, 400, 'no ttl header');
    assert.equal((await token(gA, '60', ['X-Forwarded-For: 203.0.113.9'])).status, 403);
    assert.equal((await token(gA, '60', [], '/2021-03-23/api/token')).status, 403);
    assert.ok(sb.metric('imds_rejected_requests_total', { reason: 'token_invalid' }) >= 2, 'invalid tokens counted');
    assert.equal(sb.metric('imds_rejected_requests_total', { reason: 'token_expired' }), 1);
    assert.equal(sb.metric('imds_rejected_requests_total', { reason: 'token_forwarded' }), 1);
  });

  it('tokens survive a restart and die when the key is rotated', async () => {
    const tokA = (await token(gA)).body.toString();
    await daemon.stop();
    daemon = await sb.startDaemon(cfgPath);
    assert.equal((await gA.http('/latest/meta-data/instance-id', { headers: [`${TOKEN}: ${tokA}`] })).status, 200, 'valid after a restart');
    const r = await sb.cli(['--admin-socket', sb.adminSocket(), 'token', 'rotate-key']);
    assert.match(r.stdout, /token key rotated/);
    assert.equal((await gA.http('/latest/meta-data/instance-id', { headers: [`${TOKEN}: ${tokA}`] })).status, 401, 'dead after rotation');
    const fresh = (await token(gA)).body.toString();
    assert.equal((await gA.http('/latest/meta-data/instance-id', { headers: [`${TOKEN}: ${fresh}`] })).status, 200);
  });

  it('sends the token with IP TTL = the hop limit: seen on the wire, and lost behind a NATing container unless raised', async () => {
    // Capture the token reply on A's interface: TTL 1 (the default limit).
    const cap = gA.exec(['timeout', '4', 'tcpdump', '-l', '-n', '-v', '-i', 'eth0', '-c', '40', 'tcp src port 80 and greater 60'], { allowFailure: true });
    await new Promise((r) => setTimeout(r, 700));
    const t = await token(gA);
    assert.equal(t.status, 200);
    const dump = (await cap).stdout;
    const ttls = [...dump.matchAll(/\bttl (\d+),/g)].map((m) => Number(m[1]));
    assert.ok(ttls.includes(64), `the handshake leaves with the default TTL:\n${dump}`);
    assert.ok(ttls.includes(1), `the token reply leaves with TTL 1:\n${dump}`);

    // A container behind NAT in guest A (default hop limit 1) and in guest H (hop limit 2).
    const container = async (g: Guest, tag: string): Promise<Guest> => {
      const ns = `${g.netns}-ctr`;
      const sh = (argv: string[]) => execFileSync(argv[0] as string, argv.slice(1), { stdio: 'pipe' });
      sh(['ip', 'netns', 'add', ns]);
      sh(['ip', '-n', g.netns, 'link', 'add', `c${tag}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      sh(['ip', '-n', g.netns, 'addr', 'add', '203.0.113.1/24', 'dev', `c${tag}`]);
      sh(['ip', '-n', g.netns, 'link', 'set', `c${tag}`, 'up']);
      sh(['ip', '-n', ns, 'addr', 'add', '203.0.113.2/24', 'dev', 'eth0']);
      sh(['ip', '-n', ns, 'link', 'set', 'eth0', 'up']);
      sh(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
      sh(['ip', '-n', ns, 'route', 'add', 'default', 'via', '203.0.113.1']);
      sh(['ip', 'netns', 'exec', g.netns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
      execFileSync('ip', ['netns', 'exec', g.netns, 'nft', '-f', '-'], { input: 'table ip ctr {\n  chain post {\n    type nat hook postrouting priority srcnat;\n    oifname "eth0" masquerade\n  }\n}\n' });
      return new Guest(`${g.name}-ctr`, ns, '203.0.113.2', '');
    };
    const cA = await container(gA, 'a');
    const cH = await container(gH, 'h');
    try {
      assert.equal((await cA.http('/openstack/latest/meta_data.json')).status, 200, 'GETs work through the NAT (TTL 64)');
      const lost = await tryHttp(cA, '/latest/api/token', { method: 'PUT', headers: [`${TTL}: 60`], maxTimeS: 3 });
      assert.equal(lost.status, 0, 'the token reply dies at the guest (TTL 1), so the container gets nothing');
      const got = await cH.http('/latest/api/token', { method: 'PUT', headers: [`${TTL}: 60`], maxTimeS: 5 });
      assert.equal(got.status, 200, 'hop limit 2: the container behind H gets its token');
      assert.equal((await cH.http('/latest/meta-data/instance-id', { headers: [`${TOKEN}: ${got.body.toString()}`] })).status, 200);
    } finally {
      for (const ns of [cA.netns, cH.netns]) execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    }
  });

  it('http_tokens required: the EC2 tree needs a token (cloud-init with a token), the OpenStack tree does not; disabled endpoint: 403', async () => {
    assert.equal((await gR.http('/latest/meta-data/instance-id')).status, 401);
    assert.equal((await gR.http('/openstack/latest/meta_data.json')).status, 200);
    // cloud-init's own EC2 reader, given a token the way its AWS datasource sends one.
    const res = await gR.python<Record<string, unknown>>([
      'import json',
      'from cloudinit import url_helper',
      'from cloudinit.sources.helpers import ec2',
      `tok = url_helper.readurl('http://169.254.169.254/latest/api/token', request_method='PUT', headers={'${TTL}': '21600'}, timeout=5).contents.decode()`,
      `h = lambda url: {'${TOKEN}': tok}`,
      "md = ec2.get_instance_metadata(api_version='latest', headers_cb=h, retries=0)",
      "ud = ec2.get_instance_userdata(api_version='latest', headers_cb=h, retries=0)",
      'bare = ec2.get_instance_metadata(api_version=\'latest\', retries=0)',
      "print(json.dumps({'md': md, 'ud': ud.decode(), 'bare': bare}))",
    ]);
    assert.equal((res['md'] as Record<string, unknown>)['local-ipv4'], '198.51.100.12');
    assert.equal(res['ud'], 'user-data-of-romeo');
    assert.deepEqual(res['bare'], {}, 'without a token cloud-init reads nothing (401)');
    const gD = await sb.addGuest('d', { ...on1, ip: '198.51.100.14', mac: '52:54:00:00:00:0e' });
    for (const path of ['/', '/openstack/latest/meta_data.json', '/latest/meta-data/']) assert.equal((await gD.http(path)).status, 403, path);
  });

  it("drops a guest that forges a registered VM's address with its own MAC, counts it and logs it", async () => {
    // The forger takes E's address (E's guest is not running) and answers the namespace's ARP for it.
    const forger = await sb.addGuest('f', { ...on1, ip: '198.51.100.15', mac: '52:54:00:00:00:ff' });
    try {
      const before = sb.metric('imds_spoofed_packets_total', { network: 'net1' });
      const r = await tryHttp(forger, '/openstack/latest/user_data', { maxTimeS: 3 });
      assert.equal(r.status, 0, 'no answer at all');
      assert.ok(!r.body.includes(Buffer.from(SECRET_E)));
      const line = await daemon.waitFor((l) => l['component'] === 'spoofing' && l['network'] === 'net1', 5000);
      assert.ok(Number(line['packets']) > 0);
      const counter = (await sb.hvRun(['nsenter', `--net=/run/netns/${sb.nsPrefix}net1`, 'nft', '-j', 'list', 'counter', 'ip', 'imds', 'spoofed'])).stdout;
      assert.ok((JSON.parse(counter).nftables[1].counter.packets as number) > 0, counter);
      await new Promise((res) => setTimeout(res, 1200));
      assert.ok(sb.metric('imds_spoofed_packets_total', { network: 'net1' }) > before);
      // Control: the same namespace with E's registered MAC is E, and is served.
      await forger.exec(['ip', 'link', 'set', 'eth0', 'address', '52:54:00:00:00:0f']);
      await sb.hvRun(['nsenter', `--net=/run/netns/${sb.nsPrefix}net1`, 'ip', 'neigh', 'flush', 'all']);
      const asE = await forger.http('/openstack/latest/user_data', { maxTimeS: 5 });
      assert.equal(asE.status, 200);
      assert.equal(asE.body.toString(), SECRET_E);
    } finally {
      await forger.exec(['ip', 'link', 'set', 'eth0', 'down']);
    }
  });

  it('keeps the allowed pairs in line with the VMs: a MAC change through the CLI moves the guard with it', async () => {
    const VM_G = '0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e';
    const g = await sb.addGuest('g', { ...on1, ip: '198.51.100.16', mac: '52:54:00:00:01:16' });
    const cli = (...args: string[]) => sb.cli(['--admin-socket', sb.adminSocket(), ...args]);
    await cli('vm', 'add', VM_G, '--network', 'net1', '--ip', '198.51.100.16', '--mac', '52:54:00:00:01:16', '--hostname', 'golf');
    assert.equal((await g.http('/openstack/latest/meta_data.json')).status, 200);
    const flushNeigh = () => sb.hvRun(['nsenter', `--net=/run/netns/${sb.nsPrefix}net1`, 'ip', 'neigh', 'flush', 'all']);
    await cli('vm', 'set', VM_G, '--mac', '52:54:00:00:02:16');
    // The old MAC is now a forger of golf's address: dropped once the set is rewritten (ms).
    let status = 200;
    for (let i = 0; i < 20 && status !== 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = (await tryHttp(g, '/openstack/latest/meta_data.json', { maxTimeS: 1 })).status;
    }
    assert.equal(status, 0, 'the old MAC is refused');
    await g.exec(['ip', 'link', 'set', 'eth0', 'address', '52:54:00:00:02:16']);
    await flushNeigh();
    assert.equal((await g.http('/openstack/latest/meta_data.json', { maxTimeS: 5 })).status, 200, 'the new MAC is served');
    const set = (await sb.hvRun(['nsenter', `--net=/run/netns/${sb.nsPrefix}net1`, 'nft', 'list', 'set', 'ip', 'imds', 'guests'])).stdout;
    assert.match(set, /52:54:00:00:02:16 \. 198\.51\.100\.16/);
    assert.doesNotMatch(set, /52:54:00:00:01:16/);
    await cli('vm', 'rm', VM_G);
    await g.exec(['ip', 'link', 'set', 'eth0', 'down']);
  });

  it("lets full cloud-init boots through the default limit, and keeps a neighbour's p99 within 2x while a VM floods", async () => {
    // cloud-init's OpenStack and EC2 readers, twice each, from one guest: no 429.
    for (let i = 0; i < 2; i++) {
      await gB.python([
        'import json',
        'from cloudinit.sources.helpers import openstack, ec2',
        "r = openstack.MetadataReader('http://169.254.169.254', retries=0)",
        'md = r.read_v2()',
        "e = ec2.get_instance_metadata(api_version='2009-04-04', retries=0)",
        "print(json.dumps({'ok': bool(md) and bool(e)}))",
      ]);
    }
    assert.equal(sb.metric('imds_rejected_requests_total', { reason: 'rate_limited' }), 0, 'two full boots, no 429');

    // The neighbour probes at ~16 requests a second, inside its own budget (20/s), on a new
    // connection each time as cloud-init does; the flooder asks for 2,000 a second, 100x its budget.
    // 20 s probes (~320 samples each): p99 is then the 4th-slowest answer, not the 2nd (measured
    // ratios ran 0.9-1.8x with 10 s probes on these 2-core machines).
    type Probe = { n: number; p99: number; p50: number; statuses: Record<string, number> };
    const PROBE_S = 20;
    const FLOOD_S = PROBE_S + 2;
    const unloaded = await node<Probe>(gB, 'load.mjs', ['probe', PROBE_S, 60]);
    const [flood, loaded] = await Promise.all([
      node<{ sent: number; statuses: Record<string, number> }>(gA, 'load.mjs', ['flood', 2000, FLOOD_S, 8]),
      new Promise((r) => setTimeout(r, 1000)).then(() => node<Probe>(gB, 'load.mjs', ['probe', PROBE_S, 60])),
    ]);
    process.stdout.write(
      `# measured: neighbour p50/p99 ms unloaded ${unloaded.p50.toFixed(2)}/${unloaded.p99.toFixed(2)} (n=${unloaded.n}), during a 2000 req/s flood ${loaded.p50.toFixed(2)}/${loaded.p99.toFixed(2)} (n=${loaded.n}); flood statuses ${JSON.stringify(flood.statuses)}\n`,
    );
    assert.ok((flood.statuses['429'] ?? 0) > flood.sent * 0.8, `the flood was limited: ${JSON.stringify(flood)}`);
    assert.ok((flood.statuses['200'] ?? 0) <= 300 + FLOOD_S * 20 + 50, 'no more than the burst and the rate got through');
    assert.deepEqual(Object.keys(loaded.statuses), ['200'], 'the neighbour was never refused');
    assert.ok(loaded.p99 <= 2 * unloaded.p99, `neighbour p99 ${loaded.p99.toFixed(2)} ms vs ${unloaded.p99.toFixed(2)} ms unloaded`);
    const r = await gA.http('/openstack/latest/meta_data.json');
    if (r.status === 429) assert.match(r.headers['retry-after'] ?? '', /^\d+$/);
  });
});

describe('security: bounded fuzz from a guest', () => {
  const current = useSandbox({ before, after, afterEach });
  let sb: Sandbox;
  let daemon: DaemonProcess;
  let gA: Guest;

  before(async () => {
    sb = current();
    // No rate limit here: every request must reach the parsers and the handlers.
    daemon = await sb.startDaemon(
      sb.writeConfig(
        sb.config({
          log_level: 'info',
          rate_limit_per_second: 0,
          headers_timeout_ms: 2000,
          networks: [{ id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' }],
          vms: [
            { id: VM_A, network: 'net1', ip: '198.51.100.10', mac: '52:54:00:00:00:0a', hostname: 'alpha', user_data: 'user-data-of-alpha' },
            { id: VM_B, network: 'net1', ip: '198.51.100.11', mac: '52:54:00:00:00:0b', hostname: 'bravo', user_data: SECRET_B, public_keys: { b: 'ssh-ed25519 AAAAbravokey b@x' } },
          ],
        }),
      ),
    );
    gA = await sb.addGuest('a', { bridge: 'imdsb-net1', prefix: 24, ip: '198.51.100.10', mac: '52:54:00:00:00:0a', metadataVia: '198.51.100.2' });
  });

  it('answers 100,000 hostile requests with no 5xx, no crash and nothing of another VM', async () => {
    const r = await node<{ sent: number; connections_silent: number; statuses: Record<string, number>; leaks: string[]; ms: number }>(
      gA,
      'fuzz.mjs',
      [100_000, 16, 20261127, SECRET_B, VM_B, 'bravo', 'AAAAbravokey'],
      600_000,
    );
    process.stdout.write(`# measured: fuzz ${r.sent} requests in ${r.ms} ms; statuses ${JSON.stringify(r.statuses)}; connections without any answer ${r.connections_silent}\n`);
    assert.ok(r.sent >= 100_000);
    assert.deepEqual(r.leaks, []);
    assert.deepEqual(Object.keys(r.statuses).filter((s) => s.startsWith('5')), [], JSON.stringify(r.statuses));
    assert.ok((r.statuses['200'] ?? 0) > 1000 && (r.statuses['400'] ?? 0) > 1000, JSON.stringify(r.statuses));
    assert.equal(daemon.child.exitCode, null, 'the daemon is alive');
    assert.ok(!daemon.logs.some((l) => Number(l['level']) >= 50), JSON.stringify(daemon.logs.filter((l) => Number(l['level']) >= 50).slice(0, 3)));
    const after = await gA.http('/openstack/latest/user_data');
    assert.equal(after.status, 200);
    assert.equal(after.body.toString(), 'user-data-of-alpha');
  });
});
