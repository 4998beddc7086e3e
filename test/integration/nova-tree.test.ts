// Nova faithfulness through the real data path, as root: cloud-init's own OpenStack and EC2 readers
// in a guest namespace, and cloudbase-init's password flow reproduced with Node's crypto.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import type { Guest } from '../helpers/sandbox.ts';
import { MAIN, sh, useSandbox, type DaemonProcess, type Sandbox } from '../helpers/sandbox.ts';
import { rsaKeyPair } from '../helpers/ssh.ts';

const VM = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const MAC = '52:54:00:12:34:56';
const USER_DATA = '#cloud-config\nhostname: nova-1\n';
const key = rsaKeyPair(2048, 'deploy@build');

/** The daemon's debug line for one guest request (src/server/metadata-app.ts, fast-path.ts): the fields read here. */
type RequestLine = { msg: 'request'; src: string; path: string; status: number };

describe('Nova faithfulness through the data path', () => {
  const current = useSandbox({ before, after, afterEach });
  let sb: Sandbox;
  let daemon: DaemonProcess;
  let guest: Guest;
  let cfgPath: string;

  let markers = 0;
  /**
   * Requests the daemon logged from the guest since `mark`. The native data plane's lines reach the
   * log some time after their answers (the loop records them in order; the JS writes them in
   * batches every 50 ms), while a request handed over to Node is logged at once. So the guest then
   * asks for a marker that the same side answers as the crawl's documents: a metadata document with
   * a query string (the route ignores it, the log keeps it). Once the marker's line is in the log,
   * so are those of every request answered before it, on either data plane. Its line is not returned.
   */
  const requestsSince = async (mark: number): Promise<RequestLine[]> => {
    const marker = `/openstack/latest/meta_data.json?imds-test-marker=${++markers}`;
    assert.equal((await guest.http(marker)).status, 200, 'the marker is a metadata document');
    await daemon.waitForAfter(mark, (l) => l['msg'] === 'request' && l['path'] === marker, 10_000);
    return daemon.logs
      .slice(mark)
      .filter((l) => l['msg'] === 'request' && l['src'] === '198.51.100.10' && l['path'] !== marker) as RequestLine[];
  };

  before(async () => {
    sb = current();
    cfgPath = sb.writeConfig(
      sb.config({
        networks: [
          {
            id: 'nova',
            cidr: '198.51.100.0/24',
            service_ip: '198.51.100.2',
            gateway: '198.51.100.1',
            mtu: 1450,
            dns: ['192.0.2.53'],
            vendor_data: { 'cloud-init': '#cloud-config\nruncmd: [[touch, /vendor]]\n' },
          },
        ],
        vms: [
          {
            id: VM,
            network: 'nova',
            ip: '198.51.100.10',
            mac: MAC,
            hostname: 'nova-1',
            user_data: USER_DATA,
            public_keys: { deploy: key.sshPublic },
            availability_zone: 'az-east',
            public_ipv4: '203.0.113.10',
            vendor_data: { owner: 'team-a' },
          },
        ],
      }),
    );
    daemon = await sb.startDaemon(cfgPath);
    guest = await sb.addGuest('nova', { bridge: 'imdsb-nova', ip: '198.51.100.10', prefix: 24, mac: MAC, metadataVia: '198.51.100.2' });
  });

  it("cloud-init's OpenStack reader picks 2018-08-27 and reads metadata, user data, vendor data and network config", async () => {
    const mark = daemon.logs.length;
    const res = await guest.python<Record<string, unknown>>([
      'import json',
      'from cloudinit.sources.helpers import openstack',
      "r = openstack.MetadataReader('http://169.254.169.254', timeout=5, retries=5)",
      'v = r._find_working_version()',
      'res = r.read_v2()',
      "md = res['metadata']",
      `net = openstack.convert_net_json(res['networkdata'], known_macs={'${MAC}': 'eth0'})`,
      "ec2 = res['ec2-metadata']",
      "print(json.dumps({'version': v, 'uuid': md['uuid'], 'hostname': md['local-hostname'], 'keys': md['public_keys'], " +
        "'az': md['availability_zone'], 'seed': len(md['random_seed']), 'userdata': res['userdata'].decode(), " +
        "'vendor': res['vendordata'], 'vendor2': res['vendordata2'], 'net': net, " +
        "'ec2_id': ec2.get('instance-id'), 'ec2_keys': ec2.get('public-keys')}))",
    ]);
    assert.equal(res['version'], '2018-08-27');
    assert.equal(res['uuid'], VM);
    assert.equal(res['hostname'], 'nova-1.novalocal');
    assert.deepEqual(res['keys'], { deploy: key.sshPublic });
    assert.equal(res['az'], 'az-east');
    assert.equal(res['seed'], 512);
    assert.equal(res['userdata'], USER_DATA);
    assert.deepEqual(res['vendor'], { 'cloud-init': '#cloud-config\nruncmd: [[touch, /vendor]]\n', owner: 'team-a' });
    assert.deepEqual(res['vendor2'], { static: { 'cloud-init': '#cloud-config\nruncmd: [[touch, /vendor]]\n', owner: 'team-a' } });
    const net = res['net'] as { version: number; config: Record<string, unknown>[] };
    assert.equal(net.version, 1);
    const phys = net.config.find((c) => c['type'] === 'physical') as Record<string, unknown>;
    assert.equal(phys['name'], 'eth0');
    assert.equal(phys['mac_address'], MAC);
    assert.equal(phys['mtu'], 1450);
    const subnet = (phys['subnets'] as Record<string, unknown>[])[0] as Record<string, unknown>;
    assert.deepEqual(
      { type: subnet['type'], address: subnet['address'], netmask: subnet['netmask'] },
      { type: 'static', address: '198.51.100.10', netmask: '255.255.255.0' },
    );
    assert.deepEqual(
      net.config.find((c) => c['type'] === 'nameserver'),
      { type: 'nameserver', address: '192.0.2.53' },
      'services become a nameserver entry',
    );
    assert.deepEqual((subnet['routes'] as unknown[])[0], { network: '0.0.0.0', netmask: '0.0.0.0', gateway: '198.51.100.1' });
    assert.match(String(res['ec2_id']), /^i-[0-9a-f]{8}$/);
    assert.deepEqual(res['ec2_keys'], { deploy: key.sshPublic });

    const paths = (await requestsSince(mark)).map((l) => `${l['status']} ${l['path']}`);
    assert.ok(paths.includes('200 /openstack/2018-08-27/meta_data.json'), paths.join('\n'));
    assert.ok(!paths.some((p) => p.startsWith('5')), 'no 5xx');
    assert.ok(!paths.some((p) => p.startsWith('404 /latest/meta-data')), 'no listed EC2 key 404s');
  });

  for (const version of ['2009-04-04', 'latest']) {
    it(`cloud-init's EC2 readers read ${version} with no retries`, async () => {
      const mark = daemon.logs.length;
      const res = await guest.python<Record<string, unknown>>([
        'import json',
        'from cloudinit.sources.helpers import ec2',
        `md = ec2.get_instance_metadata(api_version='${version}', retries=5)`,
        `ud = ec2.get_instance_userdata(api_version='${version}', retries=5)`,
        "print(json.dumps({'md': md, 'ud': ud.decode()}))",
      ]);
      const md = res['md'] as Record<string, unknown>;
      assert.match(String(md['instance-id']), /^i-[0-9a-f]{8}$/);
      assert.equal(md['local-ipv4'], '198.51.100.10');
      assert.equal(md['public-ipv4'], '203.0.113.10');
      assert.equal(md['hostname'], 'nova-1.novalocal');
      assert.equal(md['local-hostname'], 'nova-1.novalocal');
      assert.deepEqual(md['public-keys'], { deploy: key.sshPublic });
      assert.deepEqual(md['placement'], { 'availability-zone': 'az-east' });
      assert.deepEqual(md['block-device-mapping'], { ami: 'vda', root: '/dev/vda' });
      assert.equal(md['instance-action'], 'none');
      assert.equal(res['ud'], USER_DATA);
      const seen = await requestsSince(mark);
      const counts = new Map<string, number>();
      for (const l of seen) counts.set(String(l['path']), (counts.get(String(l['path'])) ?? 0) + 1);
      assert.ok(seen.length >= 18, `crawled ${seen.length} paths`);
      assert.ok(
        seen.every((l) => l['status'] === 200),
        seen
          .filter((l) => l['status'] !== 200)
          .map((l) => `${l['status']} ${l['path']}`)
          .join(', '),
      );
      assert.deepEqual(
        [...counts.entries()].filter(([, n]) => n > 1),
        [],
        'every path was requested once: no retries',
      );
    });
  }

  it("answers cloudbase-init's route probe and its EC2 service sequence", async () => {
    assert.equal((await guest.http('/')).status, 200);
    assert.equal((await guest.http('/2009-04-04/meta-data/local-hostname')).body.toString(), 'nova-1.novalocal');
    assert.equal((await guest.http('/2009-04-04/meta-data/public-keys')).body.toString(), '0=deploy');
    assert.equal((await guest.http('/2009-04-04/meta-data/public-keys/0/openssh-key')).body.toString(), key.sshPublic);
    assert.equal((await guest.http('/2009-04-04/user-data')).body.toString(), USER_DATA);
    assert.equal(
      (await guest.http('/2021-03-23/meta-data/instance-id')).status,
      404,
      'newer AWS versions are absent, as cloud-init expects',
    );
  });

  it("cloudbase-init's password flow: encrypt to the ssh-rsa key, POST once, 409 after, admin reads it, it survives a restart", async () => {
    // The guest side, as SetUserPasswordPlugin does it: meta_data from 2013-04-04, GET password
    // (empty), encrypt to the first ssh-rsa key with RSA PKCS#1 v1.5, base64, POST without a
    // Content-Type; then a second POST.
    const script = `
const http = require('http'); const crypto = require('crypto');
const req = (method, path, body) => new Promise((resolve, reject) => {
  const headers = body === undefined ? {} : { 'content-length': Buffer.byteLength(body) };
  const r = http.request({ host: '169.254.169.254', path, method, headers, agent: false }, (res) => {
    let b = ''; res.on('data', (c) => b += c); res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'], body: b }));
  });
  r.on('error', reject); r.end(body);
});
(async () => {
  const md = JSON.parse((await req('GET', '/openstack/2013-04-04/meta_data.json')).body);
  const before = await req('GET', '/openstack/2013-04-04/password');
  const sshKey = Object.values(md.public_keys).find((k) => k.startsWith('ssh-rsa '));
  const blob = Buffer.from(sshKey.split(' ')[1], 'base64');
  const fields = []; for (let o = 0; o < blob.length;) { const n = blob.readUInt32BE(o); fields.push(blob.subarray(o + 4, o + 4 + n)); o += 4 + n; }
  const strip = (b) => (b[0] === 0 ? b.subarray(1) : b);
  const jwk = { kty: 'RSA', e: strip(fields[1]).toString('base64url'), n: strip(fields[2]).toString('base64url') };
  const pub = crypto.createPublicKey({ key: jwk, format: 'jwk' });
  const enc = crypto.publicEncrypt({ key: pub, padding: crypto.constants.RSA_PKCS1_PADDING }, Buffer.from(process.argv[1], 'utf8')).toString('base64');
  const first = await req('POST', '/openstack/2013-04-04/password', enc);
  const second = await req('POST', '/openstack/2013-04-04/password', enc);
  const after = await req('GET', '/openstack/latest/password');
  console.log(JSON.stringify({ before, enc, first, second, after }));
})();`;
    const secret = 'S3cret-Passw0rd!';
    const out = await guest.exec([process.execPath, '-e', script, secret]);
    type Answer = { status: number; type: string; body: string };
    const r = JSON.parse(out.stdout.trim()) as { before: Answer; first: Answer; second: Answer; after: Answer; enc: string };
    assert.deepEqual(
      [r.before.status, r.before.body, r.before.type],
      [200, '', 'text/html; charset=UTF-8'],
      'empty before a password is set',
    );
    assert.equal(r.enc.length, 344, 'a 2048-bit key gives 344 base64 characters');
    assert.equal(r.first.status, 200);
    assert.equal(r.second.status, 409);
    assert.equal(r.after.body, r.enc);

    const imds = (args: string[]) => sh([process.execPath, MAIN, '--admin-socket', sb.adminSocket(), ...args]);
    const posted = (await imds(['vm', 'password', VM])).stdout.trim();
    assert.equal(posted, r.enc, 'the admin reads what the guest posted');
    const keyFile = join(sb.dir, 'key.pem');
    const encFile = join(sb.dir, 'password.bin');
    writeFileSync(keyFile, key.privatePem, { mode: 0o600 });
    writeFileSync(encFile, Buffer.from(posted, 'base64'));
    const decrypted = await sh(['openssl', 'pkeyutl', '-decrypt', '-inkey', keyFile, '-in', encFile, '-pkeyopt', 'rsa_padding_mode:pkcs1']);
    assert.equal(decrypted.stdout, secret, 'decrypting with the private key gives the password');

    // Other sizes and methods.
    assert.equal((await guest.http('/openstack/latest/password', { method: 'POST', data: 'x'.repeat(1021) })).status, 400);
    assert.equal((await guest.http('/openstack/latest/password', { method: 'PUT', data: 'x' })).status, 400);
    assert.equal((await guest.http('/openstack/2012-08-10/password')).status, 404);

    // Durable: a restart serves the same password; clearing lets the guest post again.
    assert.equal(await daemon.stop(), 0);
    daemon = await sb.startDaemon(cfgPath);
    assert.equal((await guest.http('/openstack/2013-04-04/password')).body.toString(), r.enc);
    assert.equal((await imds(['vm', 'password', VM])).stdout.trim(), r.enc);
    await imds(['vm', 'password', VM, '--clear']);
    assert.equal((await guest.http('/openstack/2013-04-04/password')).body.toString(), '');
    assert.equal((await guest.http('/openstack/2013-04-04/password', { method: 'POST', data: 'bmV3' })).status, 200);
  });

  it('handles methods and paths as Nova does', async () => {
    assert.equal((await guest.http('/openstack/latest/meta_data.json?x=1')).status, 200);
    assert.equal((await guest.http('/openstack/latest/meta_data.json/')).status, 200);
    assert.equal((await guest.http('/openstack/latest/../latest/user_data')).body.toString(), USER_DATA);
    assert.equal((await guest.http('/latest/meta-data/hostname/below')).status, 404);
    assert.equal((await guest.http('/openstack/2019-01-01/meta_data.json')).status, 404);
    const head = await guest.http('/openstack/latest/user_data', { method: 'HEAD' });
    assert.deepEqual([head.status, head.headers['content-length']], [200, String(Buffer.byteLength(USER_DATA))]);
    assert.equal((await guest.http('/latest/meta-data/', { method: 'DELETE' })).status, 405);
  });
});
