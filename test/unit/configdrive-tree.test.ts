import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { configDriveFiles } from '../../src/configdrive/tree.ts';
import { OPENSTACK_VERSIONS } from '../../src/documents/versions.ts';
import { networkSchema, vmSchema } from '../../src/model/schema.ts';
import { answerGet } from '../../src/server/guest-api.ts';
import { MetadataIndex } from '../../src/store/metadata-index.ts';

const VM = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const net = networkSchema.parse({
  id: 'net1',
  cidr: '198.51.100.0/24',
  service_ip: '198.51.100.2',
  gateway: '198.51.100.1',
  vendor_data: { a: 1 },
});
const entryOf = (extra: Record<string, unknown>) =>
  MetadataIndex.build(
    [net],
    [vmSchema.parse({ id: VM, network: 'net1', ip: '198.51.100.10', mac: '52:54:00:00:00:0a', hostname: 'vm1', ...extra })],
    { dhcpDomain: 'novalocal' },
  ).lookupById('net1', VM);

const SEED = /"random_seed": "[^"]*"/;

describe('config drive tree', () => {
  it('holds every OpenStack version and latest with the files each version has, the EC2 JSON, and no password', () => {
    const vm = entryOf({ user_data: 'hello', public_keys: { k: 'ssh-ed25519 AAAA k@x' } });
    assert.ok(vm);
    const files = configDriveFiles(vm);
    const paths = files.map((f) => f.path);
    assert.equal(new Set(paths).size, paths.length, 'no duplicates');
    for (const v of [...OPENSTACK_VERSIONS, 'latest']) {
      assert.ok(paths.includes(`openstack/${v}/meta_data.json`), v);
      assert.ok(paths.includes(`openstack/${v}/user_data`), v);
    }
    assert.ok(!paths.includes('openstack/2013-04-04/vendor_data.json'));
    assert.ok(paths.includes('openstack/2013-10-17/vendor_data.json'));
    assert.ok(!paths.includes('openstack/2013-10-17/network_data.json'));
    assert.ok(paths.includes('openstack/2015-10-15/network_data.json'));
    assert.ok(paths.includes('openstack/2016-10-06/vendor_data2.json'));
    assert.ok(!paths.some((p) => p.includes('password')));
    for (const v of ['2009-04-04', 'latest']) assert.ok(paths.includes(`ec2/${v}/meta-data.json`) && paths.includes(`ec2/${v}/user-data`));
    assert.equal(paths.filter((p) => p.startsWith('ec2/')).length, 4);
  });

  it('has the bytes the HTTP tree serves (the random seed aside)', () => {
    const vm = entryOf({ user_data: Buffer.from([0x1f, 0x8b, 0, 1, 2, 255]), vendor_data: { b: [1, 'x'] } });
    assert.ok(vm);
    for (const f of configDriveFiles(vm).filter((x) => x.path.startsWith('openstack/'))) {
      const http = answerGet(vm, `/${f.path}`, () => '');
      assert.equal(http.status, 200, f.path);
      if (f.path.endsWith('meta_data.json'))
        assert.equal(f.body.toString().replace(SEED, ''), http.body.toString().replace(SEED, ''), f.path);
      else assert.deepEqual(f.body, http.body, f.path);
    }
  });

  it('writes the EC2 meta-data as Nova does: a JSON dictionary with nested keys and lists, Python formatting', () => {
    const vm = entryOf({ public_keys: { k: 'ssh-ed25519 AAAA k@x' }, security_groups: ['web', 'db'] });
    assert.ok(vm);
    const files = configDriveFiles(vm);
    const ec2 = files.find((f) => f.path === 'ec2/latest/meta-data.json');
    assert.ok(ec2);
    assert.ok(!files.some((f) => f.path.endsWith('user-data')), 'no user-data without user data');
    const text = ec2.body.toString();
    assert.match(text, /^\{"ami-id": /);
    const md = JSON.parse(text) as Record<string, unknown>;
    assert.equal(md['local-ipv4'], '198.51.100.10');
    assert.deepEqual(md['security-groups'], ['web', 'db']);
    assert.deepEqual(md['placement'], { 'availability-zone': 'nova' });
    assert.deepEqual((md['public-keys'] as Record<string, Record<string, string>>)['0']?.['openssh-key'], 'ssh-ed25519 AAAA k@x');
  });
});
