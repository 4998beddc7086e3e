// The data path end to end, as root, inside a throwaway hypervisor namespace: guest namespaces on
// imds's bridges fetch their own metadata through the bridge, the nft DNAT and the one daemon.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { Guest, useSandbox, type DaemonProcess, type Sandbox } from '../helpers/sandbox.ts';

const VM_A = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const VM_B = '6f0c3a7e-91f2-4b8a-a1c4-0f6e2b9d7c31';
const VM_C = '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d';
const USER_DATA_A = '#cloud-config\nhostname: alpha\nruncmd:\n  - [echo, "héllo ☃"]\n';
const USER_DATA_C = gzipSync(Buffer.from('#!/bin/sh\necho charlie\n'));

describe('data path', () => {
  const current = useSandbox({ before, after, afterEach });
  let sb: Sandbox;
  let daemon: DaemonProcess;
  let gA: Guest;
  let gB: Guest;
  let gC: Guest;
  let gX: Guest;

  before(async () => {
    sb = current();
    const config = sb.config({
      headers_timeout_ms: 1500,
      request_timeout_ms: 3000,
      networks: [
        { id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2', gateway: '198.51.100.1' },
        { id: 'net2', cidr: '198.51.100.0/24', service_ip: '198.51.100.2', mtu: 1400 },
      ],
      vms: [
        {
          id: VM_A,
          network: 'net1',
          ip: '198.51.100.10',
          mac: '52:54:00:00:00:0a',
          hostname: 'alpha',
          user_data: USER_DATA_A,
          public_keys: { deploy: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA deploy@build' },
          meta: { role: 'web' },
        },
        { id: VM_B, network: 'net1', ip: '198.51.100.11', mac: '52:54:00:00:00:0b', hostname: 'bravo' },
        { id: VM_C, network: 'net2', ip: '198.51.100.10', mac: '52:54:00:00:00:0c', hostname: 'charlie', user_data: USER_DATA_C },
      ],
    });
    daemon = await sb.startDaemon(sb.writeConfig(config));
    const on1 = { bridge: 'imdsb-net1', prefix: 24, metadataVia: '198.51.100.2' };
    const on2 = { bridge: 'imdsb-net2', prefix: 24, metadataVia: '198.51.100.2' };
    gA = await sb.addGuest('a', { ...on1, ip: '198.51.100.10', mac: '52:54:00:00:00:0a' });
    gB = await sb.addGuest('b', { ...on1, ip: '198.51.100.11', mac: '52:54:00:00:00:0b' });
    gC = await sb.addGuest('c', { ...on2, ip: '198.51.100.10', mac: '52:54:00:00:00:0c' });
    gX = await sb.addGuest('x', { ...on1, ip: '198.51.100.12', mac: '52:54:00:00:00:0f' });
  });

  it('serves two guests on one network their own meta_data.json and user_data', async () => {
    const a = await gA.http('/openstack/latest/meta_data.json');
    assert.equal(a.status, 200);
    assert.equal(a.headers['content-type'], 'application/json');
    const metaA = JSON.parse(a.body.toString()) as Record<string, unknown>;
    assert.equal(metaA['uuid'], VM_A);
    assert.equal(metaA['hostname'], 'alpha.novalocal');
    assert.equal(metaA['name'], 'alpha');
    assert.deepEqual(metaA['public_keys'], { deploy: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA deploy@build' });
    assert.deepEqual(metaA['meta'], { role: 'web' });
    assert.equal(Buffer.from(metaA['random_seed'] as string, 'base64').length, 512);

    const b = await gB.http('/openstack/latest/meta_data.json');
    assert.equal(b.status, 200);
    assert.equal((JSON.parse(b.body.toString()) as { uuid: string }).uuid, VM_B);

    const userA = await gA.http('/openstack/latest/user_data');
    assert.equal(userA.status, 200);
    assert.equal(userA.headers['content-type'], 'text/plain; charset=UTF-8');
    assert.ok(userA.body.equals(Buffer.from(USER_DATA_A, 'utf8')), 'user_data must be byte-exact');
  });

  it('tells apart two networks with the same CIDR and a guest with the same IP in each', async () => {
    const a = JSON.parse((await gA.http('/openstack/latest/meta_data.json')).body.toString()) as { uuid: string };
    const c = JSON.parse((await gC.http('/openstack/latest/meta_data.json')).body.toString()) as { uuid: string; hostname: string };
    assert.equal(a.uuid, VM_A);
    assert.equal(c.uuid, VM_C);
    assert.equal(c.hostname, 'charlie.novalocal');
    const userC = await gC.http('/openstack/latest/user_data');
    assert.equal(userC.status, 200);
    assert.equal(userC.headers['content-encoding'], undefined, 'gzip user data is passed through, not declared as an encoding');
    assert.ok(userC.body.equals(USER_DATA_C), 'binary (gzip) user data is byte-exact');
  });

  it('answers 404 to an unregistered guest and for user_data of a VM without any', async () => {
    assert.equal((await gX.http('/openstack/latest/meta_data.json')).status, 404);
    assert.equal((await gX.http('/openstack/latest/user_data')).status, 404);
    assert.equal((await gB.http('/openstack/latest/user_data')).status, 404);
    assert.equal((await gB.http('/openstack/latest/meta_data.json')).status, 200);
    assert.equal((await gA.http('/openstack/1999-01-01/meta_data.json')).status, 404, 'unknown version');
  });

  it('reaches the listener only through the DNAT, not directly', async () => {
    const direct = await gA.exec(['curl', '-s', '--max-time', '2', '-o', '/dev/null', '-w', '%{http_code}', 'http://198.51.100.2:8775/openstack/latest/meta_data.json'], { allowFailure: true });
    assert.notEqual(direct.code, 0, 'direct access to the in-namespace port must be dropped');
    assert.equal(direct.stdout, '000');
  });

  it('builds exactly the declared kernel state, and a second plan is empty', async () => {
    const links = await sb.hvLinks();
    assert.equal(links['imdsb-net1']?.linkinfo?.info_kind, 'bridge');
    assert.equal(links['imdsb-net1']?.ifalias, 'imds:net1:bridge');
    assert.equal(links['imdsv-net1']?.master, 'imdsb-net1');
    assert.equal(links['imdsv-net2']?.mtu, 1400);
    const ns = `${sb.nsPrefix}net2`;
    const addrs = JSON.parse((await gA.exec(['ip', '-n', ns, '-j', 'addr', 'show', 'imds0'])).stdout) as { mtu: number; addr_info: { family: string; local: string; prefixlen: number }[] }[];
    assert.deepEqual(
      addrs[0]?.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`).sort(),
      ['169.254.169.254/32', '198.51.100.2/24'],
    );
    assert.equal(addrs[0]?.mtu, 1400);
    const nft = JSON.parse((await sb.hvRun(['nsenter', `--net=/run/netns/${ns}`, 'nft', '-j', 'list', 'table', 'ip', 'imds'])).stdout) as { nftables: { rule?: { expr: unknown[] } }[] };
    const dnat = nft.nftables.flatMap((i) => i.rule?.expr ?? []).find((e) => typeof e === 'object' && e !== null && 'dnat' in e);
    assert.deepEqual(dnat, { dnat: { addr: '169.254.169.254', port: 8775 } });
    const again = await sb.cli(['plan', '--config', `${sb.dir}/imds.yaml`]);
    assert.equal(again.stdout.trim(), 'nothing to change');
  });

  it('cuts off a client that connects and sends nothing', async () => {
    // A Node client inside the guest namespace: connect, send nothing, report when the server closes.
    const script = `const s=require('net').connect(80,'169.254.169.254');const t=Date.now();let d='';s.on('data',c=>d+=c);s.on('close',()=>{console.log(JSON.stringify({ms:Date.now()-t,d}));process.exit(0)});setTimeout(()=>{console.log(JSON.stringify({ms:-1}));process.exit(0)},10000);`;
    const out = await gA.exec([process.execPath, '-e', script]);
    const { ms, d } = JSON.parse(out.stdout.trim()) as { ms: number; d: string };
    assert.ok(ms > 0, 'the server must close the idle connection');
    assert.ok(ms >= 1000 && ms < 4000, `closed after ${ms} ms; headers_timeout_ms is 1500`);
    assert.match(d, /^HTTP\/1\.1 408 /);
    // And the daemon is still serving.
    assert.equal((await gA.http('/openstack/latest/meta_data.json')).status, 200);
  });

  it("works with cloud-init's own OpenStack reader", async () => {
    // MetadataReader.read_v2(): reads /openstack, picks the newest version it knows (2018-08-27 in
    // cloud-init 22.4), reads meta_data.json (required), user_data and the optional files, then
    // crawls the EC2 tree. Debian's cloud-init lives in /usr/bin/python3.
    const py = [
      'import json',
      'from cloudinit.sources.helpers import openstack',
      "r = openstack.MetadataReader('http://169.254.169.254', timeout=5, retries=0)",
      'res = r.read_v2()',
      "md = res['metadata']",
      "print(json.dumps({'version': r._find_working_version(), 'uuid': md['uuid'], 'instance_id': md['instance-id'], 'local_hostname': md['local-hostname'], 'userdata': res['userdata'].decode('utf-8'), 'ec2_hostname': res['ec2-metadata'].get('hostname'), 'seed_len': len(md['random_seed'])}))",
    ].join('\n');
    const out = await gA.exec(['/usr/bin/python3', '-c', py], { timeoutMs: 60_000 });
    const res = JSON.parse(out.stdout.trim().split('\n').pop() as string) as Record<string, unknown>;
    assert.equal(res['version'], '2018-08-27');
    assert.equal(res['uuid'], VM_A);
    assert.equal(res['instance_id'], VM_A);
    assert.equal(res['local_hostname'], 'alpha.novalocal');
    assert.equal(res['userdata'], USER_DATA_A);
    assert.equal(res['seed_len'], 512);
    assert.equal(res['ec2_hostname'], 'alpha.novalocal');
  });

  it('logged one debug line per request, never user data, no 5xx, and never crashed', () => {
    assert.equal(daemon.child.exitCode, null);
    assert.equal(daemon.logs.filter((l) => l['msg'] === 'metadata request failed').length, 0);
    const requests = daemon.logs.filter((l) => l['msg'] === 'request');
    const served = requests.find((l) => l['vm'] === VM_A && l['path'] === '/openstack/latest/user_data');
    assert.ok(served, 'a request line for VM A');
    assert.deepEqual(
      { network: served['network'], status: served['status'], level: served['level'], src: served['src'] },
      { network: 'net1', status: 200, level: 20, src: '198.51.100.10' },
    );
    assert.equal(typeof served['ms'], 'number');
    const all = JSON.stringify(daemon.logs);
    assert.ok(!all.includes('hostname: alpha') && !all.includes('echo charlie'), 'user data never reaches the log');
  });
});
