import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { EC2_VERSIONS } from '../../src/documents/ec2.ts';
import { ec2MetaData, resolveEc2Version, resolveMetaData } from '../../src/documents/ec2.ts';
import { instanceFacts } from '../../src/documents/instance.ts';
import { hasFile, versionDirectory } from '../../src/documents/openstack.ts';
import { metaDataFields } from '../../src/documents/meta-data.ts';
import { VmEntry } from '../../src/store/metadata-index.ts';
import { pythonJson } from '../../src/documents/python-json.ts';
import type { OPENSTACK_VERSIONS } from '../../src/documents/versions.ts';
import { resolveOpenStackVersion } from '../../src/documents/versions.ts';
import { networkSchema, vmSchema } from '../../src/model/schema.ts';

const network = networkSchema.parse({ id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' });
const vm = vmSchema.parse({
  id: '1b4e28ba-2fa1-11d2-883f-0016d3cca427',
  network: 'net1',
  ip: '198.51.100.10',
  mac: '52:54:00:12:34:56',
  hostname: 'vm1',
  public_keys: { deploy: 'ssh-ed25519 AAAA deploy@build' },
  meta: { role: 'db' },
  availability_zone: 'az1',
  project_id: '8e1f0c2d4b6a49c7a3e5d7f9b1c2e4a6',
});
const facts = instanceFacts(vm, network, { dhcpDomain: 'novalocal' });

describe('python-compatible JSON', () => {
  it("matches Python's json.dumps defaults", () => {
    assert.equal(pythonJson({ a: 1, b: [true, null, 'x'], c: {} }), '{"a": 1, "b": [true, null, "x"], "c": {}}');
    assert.equal(pythonJson('héllo ☃ \u007f \n "q"'), '"h\\u00e9llo \\u2603 \\u007f \\n \\"q\\""');
    assert.equal(pythonJson('😀'), '"\\ud83d\\ude00"');
  });
});

describe('meta_data.json', () => {
  it("has Nova's key order and every field at the newest version", () => {
    const keys = metaDataFields(facts, '2025-04-04').map(([k]) => k);
    assert.deepEqual(keys, [
      'uuid',
      'meta',
      'public_keys',
      'keys',
      'hostname',
      'name',
      'launch_index',
      'availability_zone',
      'random_seed',
      'project_id',
      'devices',
      'dedicated_cpus',
    ]);
  });

  it('gates fields by version', () => {
    const keysAt = (v: (typeof OPENSTACK_VERSIONS)[number]) => metaDataFields(facts, v).map(([k]) => k);
    assert.deepEqual(keysAt('2012-08-10'), [
      'uuid',
      'meta',
      'public_keys',
      'keys',
      'hostname',
      'name',
      'launch_index',
      'availability_zone',
    ]);
    assert.ok(keysAt('2013-04-04').includes('random_seed') && !keysAt('2013-04-04').includes('project_id'));
    assert.ok(keysAt('2015-10-15').includes('project_id') && !keysAt('2015-10-15').includes('devices'));
    assert.ok(keysAt('2016-06-30').includes('devices') && !keysAt('2018-08-27').includes('dedicated_cpus'));
    assert.ok(keysAt('2020-10-14').includes('dedicated_cpus'));
  });

  it('renders byte-exact JSON with a fresh 684-character random seed per materialisation', () => {
    const entry = new VmEntry(facts);
    const one = entry.metaData('2025-04-04').toString();
    const two = entry.metaData('2025-04-04').toString();
    const parsed = JSON.parse(one) as Record<string, unknown>;
    assert.equal((parsed['random_seed'] as string).length, 684);
    assert.equal(Buffer.from(parsed['random_seed'] as string, 'base64').length, 512);
    assert.notEqual(one, two);
    assert.equal(
      one.replace(/"random_seed": "[^"]+"/, '"random_seed": "SEED"'),
      '{"uuid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "meta": {"role": "db"}, "public_keys": {"deploy": "ssh-ed25519 AAAA deploy@build"}, ' +
        '"keys": [{"name": "deploy", "type": "ssh", "data": "ssh-ed25519 AAAA deploy@build"}], "hostname": "vm1.novalocal", "name": "vm1", ' +
        '"launch_index": 0, "availability_zone": "az1", "random_seed": "SEED", "project_id": "8e1f0c2d4b6a49c7a3e5d7f9b1c2e4a6", ' +
        '"devices": [], "dedicated_cpus": []}',
    );
    const old = entry.metaData('2012-08-10').toString();
    assert.ok(!old.includes('random_seed'));
    assert.deepEqual(JSON.parse(old), {
      uuid: vm.id,
      meta: { role: 'db' },
      public_keys: { deploy: 'ssh-ed25519 AAAA deploy@build' },
      keys: [{ name: 'deploy', type: 'ssh', data: 'ssh-ed25519 AAAA deploy@build' }],
      hostname: 'vm1.novalocal',
      name: 'vm1',
      launch_index: 0,
      availability_zone: 'az1',
    });
  });

  it('omits meta and keys when the VM has none, and keeps dotted host names as they are', () => {
    const bare = instanceFacts(
      vmSchema.parse({ ...vm, user_data: undefined, public_keys: undefined, meta: {}, hostname: 'db.example.org' }),
      network,
      { dhcpDomain: 'novalocal' },
    );
    const keys = metaDataFields(bare, '2025-04-04').map(([k]) => k);
    assert.ok(!keys.includes('meta') && !keys.includes('public_keys') && !keys.includes('keys'));
    assert.equal(bare.hostname, 'db.example.org');
    assert.equal(instanceFacts(vm, { ...network, domain: '' }, { dhcpDomain: 'novalocal' }).hostname, 'vm1');
  });

  it('resolves latest to the newest version and refuses unknown ones', () => {
    assert.equal(resolveOpenStackVersion('latest'), '2025-04-04');
    assert.equal(resolveOpenStackVersion('2018-08-27'), '2018-08-27');
    assert.equal(resolveOpenStackVersion('2019-01-01'), undefined);
  });
});

describe('EC2 tree', () => {
  const ec2vm = vmSchema.parse({ ...vm, user_data: undefined, public_ipv4: '203.0.113.5', security_groups: ['default', 'web'] });
  const md = ec2MetaData(instanceFacts(ec2vm, network, { dhcpDomain: 'novalocal' }));

  it('gates top-level keys by version, as Nova', () => {
    const at = (v: (typeof EC2_VERSIONS)[number]) => (resolveMetaData(md, v, []) ?? '').split('\n');
    assert.deepEqual(at('1.0'), [
      'ami-id',
      'ami-launch-index',
      'ami-manifest-path',
      'hostname',
      'instance-id',
      'local-ipv4',
      'public-keys/',
      'reservation-id',
      'security-groups',
    ]);
    assert.ok(
      at('2007-01-19').includes('local-hostname') &&
        at('2007-01-19').includes('public-ipv4') &&
        !at('2007-01-19').includes('instance-type'),
    );
    assert.ok(at('2007-08-29').includes('instance-type') && !at('2007-08-29').includes('block-device-mapping/'));
    assert.ok(at('2007-12-15').includes('block-device-mapping/') && !at('2007-12-15').includes('placement/'));
    assert.ok(at('2008-02-01').includes('placement/') && !at('2008-02-01').includes('instance-action'));
    assert.ok(at('2008-09-01').includes('instance-action'));
    assert.equal(resolveMetaData(md, '1.0', ['instance-type']), undefined, 'a key newer than the version is not found');
  });

  it('prints listings and leaves as ec2_md_print does', () => {
    assert.equal(resolveMetaData(md, '2009-04-04', ['public-keys']), '0=deploy');
    assert.equal(resolveMetaData(md, '2009-04-04', ['public-keys', '0']), 'openssh-key');
    assert.equal(resolveMetaData(md, '2009-04-04', ['public-keys', '0', 'openssh-key']), 'ssh-ed25519 AAAA deploy@build');
    assert.equal(resolveMetaData(md, '2009-04-04', ['public-keys', '0', '_name']), undefined);
    assert.equal(resolveMetaData(md, '2009-04-04', ['security-groups']), 'default\nweb');
    assert.equal(resolveMetaData(md, '2009-04-04', ['block-device-mapping']), 'ami\nroot');
    assert.equal(resolveMetaData(md, '2009-04-04', ['hostname', 'below']), undefined, 'nothing below a leaf');
    assert.match(resolveMetaData(md, '2009-04-04', ['instance-id']) ?? '', /^i-[0-9a-f]{8}$/);
    assert.match(resolveMetaData(md, '2009-04-04', ['reservation-id']) ?? '', /^r-[0-9a-z]{8}$/);
    assert.equal(resolveMetaData(md, '2009-04-04', ['ami-id']), 'None', "Nova's text for an instance without an image");
    assert.equal(resolveEc2Version('latest'), '2009-04-04');
    assert.equal(resolveEc2Version('2021-03-23'), undefined);
  });

  it('derives ids stably from the VM', () => {
    const again = ec2MetaData(instanceFacts(ec2vm, network, { dhcpDomain: 'novalocal' }));
    assert.equal(again['instance-id'], md['instance-id']);
    const other = ec2MetaData(
      instanceFacts({ ...ec2vm, id: '2b4e28ba-2fa1-11d2-883f-0016d3cca427' }, network, { dhcpDomain: 'novalocal' }),
    );
    assert.notEqual(other['instance-id'], md['instance-id']);
  });
});

describe('OpenStack directories', () => {
  it('lists files in fixed order, user_data only when present', () => {
    assert.equal(versionDirectory('2012-08-10', false), 'meta_data.json');
    assert.equal(
      versionDirectory('2025-04-04', true),
      'meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json\nvendor_data2.json',
    );
    assert.ok(hasFile('2013-04-04', 'password') && !hasFile('2012-08-10', 'password'));
    assert.ok(!hasFile('2015-10-15', 'vendor_data2.json') && hasFile('2016-10-06', 'vendor_data2.json'));
  });
});
