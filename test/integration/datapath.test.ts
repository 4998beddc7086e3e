// The data path end to end, as root, inside a throwaway hypervisor namespace: guest namespaces on
// imds's bridges fetch their own metadata through the bridge, the nft DNAT and the one daemon.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { guestRaw, guestRequests, type GuestReply } from '../helpers/guest-requests.ts';
import { CapturedOutput } from '../helpers/captured-output.ts';
import type { Guest } from '../helpers/sandbox.ts';
import { useSandbox, type DaemonProcess, type Sandbox } from '../helpers/sandbox.ts';

const VM_A = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const VM_B = '6f0c3a7e-91f2-4b8a-a1c4-0f6e2b9d7c31';
const VM_C = '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d';
const USER_DATA_A = '#cloud-config\nhostname: alpha\nruncmd:\n  - [echo, "héllo ☃"]\n';
const USER_DATA_C = gzipSync(Buffer.from('#!/bin/sh\necho charlie\n'));

/** The paths a listing leads to (`/`, `/ec2`, `/openstack`, a version, a meta-data directory); none for a file. */
function listed(path: string, body: string): string[] {
  const lines = body.split('\n').filter(Boolean);
  if (path === '/') return lines.map((v) => `/${v}`);
  if (path === '/ec2' || path === '/openstack' || /^\/openstack\/[^/]+$/.test(path) || /^(\/ec2)?\/[^/]+$/.test(path))
    return lines.map((l) => `${path}/${l}`);
  if (path.endsWith('/')) return lines.map((l) => (/^\d+=/.test(l) ? `${path}${l.split('=')[0]}/` : `${path}${l}`));
  return [];
}

/**
 * Every path of a guest's tree, found the way clients find them: from `/`, `/ec2` and `/openstack`,
 * following every listing (one guest process per level). Returns each path's GET answer.
 */
async function crawl(guest: Guest): Promise<Map<string, GuestReply>> {
  const tree = new Map<string, GuestReply>();
  let frontier = ['/', '/ec2', '/openstack'];
  while (frontier.length > 0) {
    const replies = await guestRequests(
      guest,
      frontier.map((path) => ({ path })),
      { concurrency: 4 },
    );
    const next = new Set<string>();
    frontier.forEach((path, i) => {
      const r = replies[i] as GuestReply;
      tree.set(path, r);
      if (r.status === 200) for (const child of listed(path, r.body.toString())) if (!tree.has(child)) next.add(child);
    });
    frontier = [...next];
  }
  return tree;
}

/** Header names and values but the date, which moves. */
const stable = (h: Record<string, string>): Record<string, string> => Object.fromEntries(Object.entries(h).filter(([k]) => k !== 'date'));

describe('data path', () => {
  const current = useSandbox({ before, after, afterEach });
  let sb: Sandbox;
  let daemon: DaemonProcess;
  /** Every byte the daemon wrote, from its start. */
  let output: CapturedOutput;
  let gA: Guest;
  let gB: Guest;
  let gC: Guest;
  let gX: Guest;

  before(async () => {
    sb = current();
    const config = sb.config({
      // The tree crawls below make a few thousand requests from one guest; the rate limit has its own tests.
      rate_limit_per_second: 0,
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
    daemon = await sb.startDaemon(sb.writeConfig(config), { waitReady: false });
    output = new CapturedOutput(daemon);
    await daemon.waitFor((l) => l['msg'] === 'ready');
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

  it('counts each VM’s contact and the requests of unregistered callers, whichever side answers', async () => {
    const show = async (id: string) =>
      JSON.parse((await sb.cli(['--admin-socket', sb.adminSocket(), 'vm', 'show', id, '--json'])).stdout) as {
        contact?: { requests: number; first_seen: string; last_seen: string; last_status: number };
      };
    const unknown = async (): Promise<number> => {
      const text = (await sb.hvRun(['curl', '-s', '--unix-socket', sb.adminSocket(), 'http://imds/metrics'])).stdout;
      return Number(/^imds_unknown_caller_requests_total\{network="net1"\} (\d+)/m.exec(text)?.[1] ?? 0);
    };
    const before = (await show(VM_B)).contact?.requests ?? 0;
    const unknownBefore = await unknown();
    const t0 = Date.now();
    // A GET the table holds (the native loop answers it), then a token PUT (node:http answers it).
    assert.equal((await gB.http('/openstack/latest/meta_data.json')).status, 200);
    const put = await gB.http('/latest/api/token', { method: 'PUT', headers: ['X-aws-ec2-metadata-token-ttl-seconds: 60'] });
    assert.equal(put.status, 200);
    assert.equal((await gB.http('/openstack/latest/user_data')).status, 404);
    const after = (await show(VM_B)).contact;
    assert.ok(after !== undefined, 'vm show has the contact');
    assert.equal(after.requests - before, 3, 'both sides counted');
    assert.equal(after.last_status, 404);
    assert.ok(Date.parse(after.last_seen) >= t0 - 1000 && Date.parse(after.last_seen) <= Date.now() + 1000, after.last_seen);
    assert.ok(Date.parse(after.first_seen) <= Date.parse(after.last_seen));
    // An address that is no VM of the network: counted per network (not per VM), never shown as a VM's contact.
    assert.equal((await gX.http('/openstack/latest/meta_data.json')).status, 404);
    assert.equal(
      (await gX.http('/latest/api/token', { method: 'PUT', headers: ['X-aws-ec2-metadata-token-ttl-seconds: 60'] })).status,
      404,
    );
    assert.equal((await unknown()) - unknownBefore, 2);
  });

  it('reaches the listener only through the DNAT, not directly', async () => {
    const direct = await gA.exec(
      [
        'curl',
        '-s',
        '--max-time',
        '2',
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        'http://198.51.100.2:8775/openstack/latest/meta_data.json',
      ],
      { allowFailure: true },
    );
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
    const addrs = JSON.parse((await gA.exec(['ip', '-n', ns, '-j', 'addr', 'show', 'imds0'])).stdout) as {
      mtu: number;
      addr_info: { family: string; local: string; prefixlen: number }[];
    }[];
    assert.deepEqual(
      addrs[0]?.addr_info
        .filter((a) => a.family === 'inet')
        .map((a) => `${a.local}/${a.prefixlen}`)
        .sort(),
      ['169.254.169.254/32', '198.51.100.2/24'],
    );
    assert.equal(addrs[0]?.mtu, 1400);
    const nft = JSON.parse((await sb.hvRun(['nsenter', `--net=/run/netns/${ns}`, 'nft', '-j', 'list', 'table', 'ip', 'imds'])).stdout) as {
      nftables: { rule?: { expr: unknown[] } }[];
    };
    const dnat = nft.nftables.flatMap((i) => i.rule?.expr ?? []).find((e) => typeof e === 'object' && e !== null && 'dnat' in e);
    assert.deepEqual(dnat, { dnat: { addr: '169.254.169.254', port: 8775 } });
    const again = await sb.cli(['plan', '--config', `${sb.dir}/imds.yaml`]);
    assert.equal(again.stdout.trim(), 'nothing to change');
  });

  it('cuts off a client that connects and sends nothing, and one that sends part of a head and stalls (slow loris)', async () => {
    // Node clients inside the guest namespace: connect, send `first` (or nothing), then wait and
    // report when the server closes. Nothing sent is the fast path's timer; a partial head is
    // handed to node:http, whose headers timeout must cut it off too.
    const stall = (first: string): string =>
      `const s=require('net').connect(80,'169.254.169.254');const t=Date.now();let d='';` +
      `s.on('connect',()=>{if(${JSON.stringify(first)})s.write(${JSON.stringify(first)})});s.on('data',c=>d+=c);` +
      `s.on('close',()=>{console.log(JSON.stringify({ms:Date.now()-t,d}));process.exit(0)});` +
      `setTimeout(()=>{console.log(JSON.stringify({ms:-1}));process.exit(0)},15000);`;
    for (const [what, first] of [
      ['nothing', ''],
      ['a partial head', 'GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\n'],
    ] as const) {
      const out = await gA.exec([process.execPath, '-e', stall(first)]);
      const { ms, d } = JSON.parse(out.stdout.trim()) as { ms: number; d: string };
      assert.ok(ms > 0, `${what}: the server must close the connection`);
      // headers_timeout_ms is 1500; generous on both sides for a busy machine.
      assert.ok(ms >= 1000 && ms < 10_000, `${what}: closed after ${ms} ms; headers_timeout_ms is 1500`);
      assert.match(d, /^HTTP\/1\.1 408 /, `${what}: answered 408`);
    }
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
      "print(json.dumps({'version': r._find_working_version(), 'uuid': md['uuid'], 'instance_id': md['instance-id'], " +
        "'local_hostname': md['local-hostname'], 'userdata': res['userdata'].decode('utf-8'), 'ec2_hostname': " +
        "res['ec2-metadata'].get('hostname'), 'seed_len': len(md['random_seed'])}))",
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

  it('answers 431 to a request head over 8 KiB, and serves one just under it', async () => {
    const head = (pad: number) =>
      Buffer.from(
        `GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\nX-Pad: ${'p'.repeat(pad)}\r\nConnection: close\r\n\r\n`,
      );
    const [over, under] = await guestRaw(gA, [head(9 * 1024), head(7 * 1024)]);
    assert.match(over?.text ?? '', /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/, `a 9 KiB head: ${JSON.stringify(over)}`);
    assert.match(
      under?.text ?? '',
      /^HTTP\/1\.1 200 OK\r\n[\s\S]*"uuid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427"/,
      `a 7 KiB head: ${JSON.stringify(under?.text.slice(0, 200))}`,
    );
  });

  it('answers 400 to a body over 64 KiB (any route, the password too) and stores nothing', async () => {
    const token = (body: Buffer) => ({
      method: 'PUT',
      path: '/latest/api/token',
      headers: { 'x-aws-ec2-metadata-token-ttl-seconds': '60' },
      body,
    });
    const password = (body: Buffer) => ({ method: 'POST', path: '/openstack/latest/password', body });
    const [tokenUnder, tokenOver, passwordOver, passwordLong, stored] = await guestRequests(gB, [
      token(Buffer.alloc(60 * 1024, 'a')),
      token(Buffer.alloc(64 * 1024 + 1, 'a')),
      password(Buffer.alloc(70 * 1024, 'a')),
      password(Buffer.alloc(1021, 'a')),
      { path: '/openstack/latest/password' },
    ]);
    // The 64 KiB limit holds for any body (the password's own is 1020 bytes): a token PUT with 60 KiB
    // of body is served, one with 64 KiB + 1 is refused.
    assert.equal(tokenUnder?.status, 200, `a 60 KiB body to the token endpoint: ${tokenUnder?.body.toString()}`);
    assert.match(tokenUnder?.body.toString() ?? '', /^[A-Za-z0-9_-]{20,}$/, 'a token');
    assert.deepEqual(
      [tokenOver?.status, tokenOver?.body.toString()],
      [400, '400 Bad Request\n\nRequest is too large.\n'],
      'a body of 64 KiB + 1',
    );
    assert.deepEqual(
      [passwordOver?.status, passwordOver?.body.toString()],
      [400, '400 Bad Request\n\nRequest is too large.\n'],
      'a 70 KiB password',
    );
    assert.deepEqual(
      [passwordLong?.status, passwordLong?.body.toString()],
      [400, '400 Bad Request\n\nRequest is too large.\n'],
      "a password of 1021 bytes (Nova's 4 x 255 + 1)",
    );
    assert.deepEqual([stored?.status, stored?.body.length], [200, 0], 'no password stored');
    assert.deepEqual(JSON.parse((await sb.cli(['--admin-socket', sb.adminSocket(), 'vm', 'password', VM_B, '--json'])).stdout), {
      password: '',
    });
  });

  it('stores nothing for an empty password POST: the password stays unset and a later one is taken, once', async () => {
    const post = (body: string) => ({ method: 'POST', path: '/openstack/latest/password', body: Buffer.from(body) });
    const get = { path: '/openstack/2013-04-04/password' };
    const [empty, afterEmpty] = await guestRequests(gB, [post(''), get]);
    assert.deepEqual([empty?.status, empty?.body.toString()], [200, ''], 'an empty POST is answered 200, as Nova answers it');
    assert.deepEqual([afterEmpty?.status, afterEmpty?.body.toString()], [200, ''], 'GET: still no password');
    assert.deepEqual(
      JSON.parse((await sb.cli(['--admin-socket', sb.adminSocket(), 'vm', 'password', VM_B, '--json'])).stdout),
      { password: '' },
      'the admin API: none',
    );
    const [real, afterReal, again, afterAgain, emptyAgain] = await guestRequests(gB, [
      post('c2VjcmV0'),
      get,
      post('b3RoZXI='),
      get,
      post(''),
    ]);
    assert.equal(real?.status, 200, 'the first real password is taken');
    assert.equal(afterReal?.body.toString(), 'c2VjcmV0');
    assert.deepEqual(
      [again?.status, again?.body.toString()],
      [409, '409 Conflict\n\nA password has already been set.\n'],
      'a second one is refused',
    );
    assert.equal(afterAgain?.body.toString(), 'c2VjcmV0', 'and changes nothing');
    assert.equal(emptyAgain?.status, 409, 'an empty POST does not clear it either');
    assert.deepEqual(JSON.parse((await sb.cli(['--admin-socket', sb.adminSocket(), 'vm', 'password', VM_B, '--json'])).stdout), {
      password: 'c2VjcmV0',
    });
  });

  it('answers 405 with Allow: GET, HEAD to other methods outside the password endpoint (400 there, as Nova)', async () => {
    const methods = ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'];
    const paths = [
      '/',
      '/openstack',
      '/openstack/latest/meta_data.json',
      '/latest/meta-data/hostname',
      '/2009-04-04/user-data',
      '/ec2/latest/meta-data/',
    ];
    const asked = methods.flatMap((method) => paths.map((path) => ({ method, path, headers: { 'content-length': '0' } })));
    const replies = await guestRequests(gA, asked, { concurrency: 4 });
    const wrong = asked
      .map((r, i) => ({ r, a: replies[i] as GuestReply }))
      .filter(({ a }) => a.status !== 405 || a.headers['allow'] !== 'GET, HEAD' || a.body.toString() !== '405 Method Not Allowed\n')
      .map(({ r, a }) => `${r.method} ${r.path}: ${a.status} allow=${a.headers['allow']}`);
    assert.deepEqual(wrong, [], 'every one 405 with Allow: GET, HEAD');
    // Methods without a route (TRACE, PROPFIND) and CONNECT (node:http's upgrade path) too.
    const [trace, propfind, connect] = await guestRaw(gA, [
      Buffer.from('TRACE /openstack/latest/user_data HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n'),
      Buffer.from('PROPFIND /openstack/latest/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n'),
      Buffer.from('CONNECT 169.254.169.254:443 HTTP/1.1\r\nHost: 169.254.169.254:443\r\n\r\n'),
    ]);
    for (const [method, reply] of [
      ['TRACE', trace],
      ['PROPFIND', propfind],
      ['CONNECT', connect],
    ] as const) {
      assert.match(reply?.text ?? '', /^HTTP\/1\.1 405 Method Not Allowed\r\n/, `${method}: ${JSON.stringify(reply?.text.slice(0, 200))}`);
      assert.match(reply?.text ?? '', /\r\nallow: GET, HEAD\r\n/i, `${method} carries Allow`);
      assert.doesNotMatch(reply?.text ?? '', /user-data|uuid/, `${method} is not answered as a GET`);
    }
    const password = await guestRequests(
      gA,
      ['PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'].map((method) => ({ method, path: '/openstack/latest/password' })),
    );
    for (const a of password) {
      assert.equal(a.status, 400);
      assert.equal(a.headers['allow'], undefined, 'no Allow on the password endpoint (Nova answers 400)');
    }
  });

  it('answers HEAD on every path a GET answers 200 with the same status and headers and no body, on both paths', async () => {
    const tree = await crawl(gA);
    const paths = [...tree.keys()];
    const notOk = paths.filter((p) => tree.get(p)?.status !== 200);
    assert.deepEqual(notOk, [], 'every listed path loads');
    // The crawl found the whole tree: both listings, every version, the deep EC2 leaves.
    for (const p of [
      '/openstack/2012-08-10/meta_data.json',
      '/openstack/latest/user_data',
      '/openstack/latest/password',
      '/openstack/latest/vendor_data2.json',
      '/1.0/meta-data/hostname',
      '/latest/user-data',
      '/ec2/2009-04-04/meta-data/placement/availability-zone',
      '/latest/meta-data/public-keys/0/openssh-key',
    ]) {
      assert.ok(tree.has(p), `the crawl reached ${p}`);
    }
    assert.ok(paths.length > 300, `${paths.length} paths`);

    const heads = await guestRequests(
      gA,
      paths.map((path) => ({ method: 'HEAD', path })),
      { concurrency: 4 },
    );
    // The same through node:http and the Fastify app (a connection the fast path handed over).
    const handedGets = await guestRequests(
      gA,
      paths.map((path) => ({ path })),
      { mode: 'handed' },
    );
    const handedHeads = await guestRequests(
      gA,
      paths.map((path) => ({ method: 'HEAD', path })),
      { mode: 'handed' },
    );
    assert.ok(
      [...handedGets, ...handedHeads].every((r) => r.reused),
      'every handed request came on the handed-over connection',
    );

    const wrong: string[] = [];
    paths.forEach((path, i) => {
      for (const [how, get, head] of [
        ['fast path', tree.get(path), heads[i]],
        ['handed over', handedGets[i], handedHeads[i]],
      ] as const) {
        if (get === undefined || head === undefined) throw new Error(`no answer for ${path}`);
        if (get.status !== 200) wrong.push(`${how}: GET ${path}: ${get.status}`);
        if (path.endsWith('/password')) {
          // metadata-api.md §5 and docs/metadata.md: the password answers HEAD with 400, as Nova (webob) does.
          if (head.status !== 400) wrong.push(`${how}: HEAD ${path}: ${head.status}, not 400`);
          continue;
        }
        if (head.status !== get.status) wrong.push(`${how}: HEAD ${path}: ${head.status}, GET ${get.status}`);
        if (head.body.length !== 0) wrong.push(`${how}: HEAD ${path}: a body of ${head.body.length} bytes`);
        if (head.headers['content-length'] !== String(get.body.length))
          wrong.push(`${how}: HEAD ${path}: content-length ${head.headers['content-length']}, GET's body ${get.body.length}`);
        try {
          assert.deepEqual(stable(head.headers), stable(get.headers));
        } catch {
          wrong.push(`${how}: HEAD ${path}: headers ${JSON.stringify(stable(head.headers))}, GET ${JSON.stringify(stable(get.headers))}`);
        }
      }
    });
    assert.deepEqual(wrong, [], `HEAD differs from GET on ${wrong.length} of ${paths.length * 2} answers`);
  });

  it('logged one debug line per request, never user data, no 5xx, and never crashed', () => {
    assert.ok(daemon.alive, 'the daemon is still running');
    assert.equal(daemon.logs.filter((l) => l['msg'] === 'metadata request failed').length, 0);
    const requests = daemon.logs.filter((l) => l['msg'] === 'request');
    const served = requests.find((l) => l['vm'] === VM_A && l['path'] === '/openstack/latest/user_data');
    assert.ok(served, 'a request line for VM A');
    assert.deepEqual(
      { network: served['network'], status: served['status'], level: served['level'], src: served['src'] },
      { network: 'net1', status: 200, level: 20, src: '198.51.100.10' },
    );
    assert.equal(typeof served['ms'], 'number');
    // VM C's (gzip) user data was served during this run, so the check below could see it.
    assert.ok(
      requests.some(
        (l) => l['vm'] === VM_C && l['network'] === 'net2' && l['path'] === '/openstack/latest/user_data' && l['status'] === 200,
      ),
      'VM C fetched its user data',
    );
    // Neither user data in the daemon's output (stdout and stderr, from its start), in any form a
    // logger could give it: raw bytes, text (latin1 or UTF-8) JSON-escaped, base64, hex, a byte array.
    const out = output.bytes;
    assert.ok(out.length > 0 && out.includes(VM_C), 'the output was captured');
    const text = out.toString('utf8');
    for (const [what, data] of [
      ['VM A', Buffer.from(USER_DATA_A, 'utf8')],
      ['VM C', USER_DATA_C],
    ] as const) {
      const forms = {
        raw: data,
        latin1: Buffer.from(data.toString('latin1'), 'utf8'),
        'latin1, JSON-escaped': Buffer.from(JSON.stringify(data.toString('latin1')).slice(1, -1), 'utf8'),
        'utf8, JSON-escaped': Buffer.from(JSON.stringify(data.toString('utf8')).slice(1, -1), 'utf8'),
        base64: Buffer.from(data.toString('base64')),
        hex: Buffer.from(data.toString('hex')),
        'a Buffer as JSON': Buffer.from(JSON.stringify([...data]).slice(1, -1)),
      };
      for (const [form, bytes] of Object.entries(forms))
        assert.ok(!out.includes(bytes), `${what}'s user data (${form}) is in the daemon's output`);
    }
    assert.ok(!text.includes('hostname: alpha') && !text.includes('echo charlie'), 'user data never reaches the log');
  });
});
