import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Network, Vm } from '../../src/model/schema.ts';
import {
  decodeLayout,
  decodeNetwork,
  decodePassword,
  decodeTokenKey,
  decodeVm,
  encodeLayout,
  encodeNetwork,
  encodeTokenKey,
  encodeVm,
  parseKey,
  registryKeys,
} from '../../src/registry/layout.ts';
import { placementOf } from '../../src/registry/placement.ts';
import { applyEvents, stateOf } from '../../src/registry/registry-state.ts';

const keys = registryKeys('/imds/');
const NET: Network = { id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' };
const NET2: Network = { id: 'net2', cidr: '203.0.113.0/24', service_ip: '203.0.113.2' };
const ID1 = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const ID2 = '2b4e28ba-2fa1-11d2-883f-0016d3cca427';
const VM1: Vm = {
  id: ID1,
  network: 'net1',
  ip: '198.51.100.10',
  mac: '52:54:00:12:34:01',
  hostname: 'vm1',
  user_data: Buffer.from([0x1f, 0x8b, 0]),
};
const VM2: Vm = { id: ID2, network: 'net2', ip: '203.0.113.10', mac: '52:54:00:12:34:02', hostname: 'vm2' };

describe('registry layout', () => {
  it('builds and parses keys under <prefix>v1/', () => {
    assert.equal(keys.root, '/imds/v1/');
    assert.equal(keys.vm(ID1), `/imds/v1/vms/${ID1}`);
    assert.deepEqual(parseKey(keys, keys.vm(ID1)), { kind: 'vm', id: ID1 });
    assert.deepEqual(parseKey(keys, keys.network('net1')), { kind: 'network', id: 'net1' });
    assert.deepEqual(parseKey(keys, keys.password(ID1)), { kind: 'password', id: ID1 });
    assert.deepEqual(parseKey(keys, keys.tokenKey), { kind: 'token-key' });
    assert.deepEqual(parseKey(keys, keys.layout), { kind: 'layout' });
    for (const other of ['/imds/v2/vms/x', '/imds/v1/vms/', '/imds/v1/vms/a/b', '/imds/v1/other/x', '/other/v1/vms/x'])
      assert.equal(parseKey(keys, other), undefined, other);
  });

  it('round-trips networks and VMs (user data as base64, host beside the VM)', () => {
    assert.deepEqual(decodeNetwork('net1', encodeNetwork(NET)), { ok: true, value: NET });
    const doc = JSON.parse(encodeVm({ vm: VM1, host: 'hv1' })) as Record<string, unknown>;
    assert.equal(doc['user_data_b64'], 'H4sA');
    assert.equal(doc['host'], 'hv1');
    assert.deepEqual(decodeVm(ID1, encodeVm({ vm: VM1, host: 'hv1' })), { ok: true, value: { vm: VM1, host: 'hv1' } });
  });

  it('takes a VM document written by hand: upper-case id, text user data', () => {
    const text = JSON.stringify({ ...VM2, id: ID2.toUpperCase(), host: 'hv2', user_data: '#cloud-config\n' });
    const decoded = decodeVm(ID2, text);
    assert.ok(decoded.ok);
    assert.equal(decoded.value.vm.user_data?.toString(), '#cloud-config\n');
  });

  it('refuses bad documents with a reason naming the field', () => {
    const bad = (d: { ok: boolean; reason?: string }) => (d.ok ? 'ok' : d.reason);
    assert.match(String(bad(decodeNetwork('net1', '{'))), /^not JSON/);
    assert.equal(bad(decodeNetwork('net1', '[]')), 'not a JSON object');
    assert.equal(bad(decodeNetwork('net9', encodeNetwork(NET))), `its id "net1" is not the key's (net9)`);
    assert.match(String(bad(decodeNetwork('net1', JSON.stringify({ ...NET, cidr: 'x' })))), /^cidr: invalid CIDR/);
    assert.match(String(bad(decodeVm(ID1, JSON.stringify(VM2)))), /^host: /);
    assert.match(String(bad(decodeVm(ID1, JSON.stringify({ ...VM2, host: 'hv1' })))), /is not the key's/);
    assert.match(String(bad(decodeVm(ID2, JSON.stringify({ ...VM2, host: 'hv1', ip: '1.2.3' })))), /^ip: /);
    assert.match(String(bad(decodeVm(ID2, JSON.stringify({ ...VM2, host: 'hv1', user_data: 'a', user_data_b64: 'YQ==' })))), /not both/);
    assert.equal(bad(decodePassword('')), 'is empty');
    assert.equal(bad(decodeTokenKey('c2hvcnQ=')), 'must be 32 bytes in base64');
  });

  it('encodes the token key and the layout version', () => {
    const key = Buffer.alloc(32, 7);
    assert.deepEqual(decodeTokenKey(encodeTokenKey(key)), { ok: true, value: key });
    assert.deepEqual(decodeLayout(encodeLayout()), { ok: true, value: 1 });
  });
});

function kv(key: string, value: string, modRevision: number) {
  return { key, value, createRevision: modRevision, modRevision };
}

describe('registry state and placement', () => {
  const full = () => [
    kv(keys.network('net1'), encodeNetwork(NET), 2),
    kv(keys.network('net2'), encodeNetwork(NET2), 3),
    kv(keys.vm(ID1), encodeVm({ vm: VM1, host: 'hv1' }), 4),
    kv(keys.vm(ID2), encodeVm({ vm: VM2, host: 'hv2' }), 5),
    kv(keys.password(ID1), 'secret', 6),
    kv(keys.layout, encodeLayout(), 7),
  ];

  it('places the VMs of this host and only the networks they need', () => {
    const state = stateOf(full(), keys, () => assert.fail('no bad document'));
    const p1 = placementOf(state, 'hv1');
    assert.deepEqual(p1.vms, [VM1]);
    assert.deepEqual(p1.networks, [NET]);
    assert.deepEqual([...p1.passwords], [[ID1, 'secret']]);
    const p3 = placementOf(state, 'hv3');
    assert.deepEqual([p3.vms, p3.networks, p3.passwords.size], [[], [], 0]);
  });

  it('a VM migrated away leaves this host, with its network, and arrives on the other with its password', () => {
    const state = stateOf(full(), keys, () => undefined);
    applyEvents(state, [{ type: 'put', kv: kv(keys.vm(ID1), encodeVm({ vm: VM1, host: 'hv2' }), 8) }], keys, () => undefined);
    assert.deepEqual(placementOf(state, 'hv1').vms, []);
    assert.deepEqual(placementOf(state, 'hv1').networks, []);
    const p2 = placementOf(state, 'hv2');
    assert.deepEqual(p2.vms.map((v) => v.id).sort(), [ID1, ID2]);
    assert.deepEqual(p2.passwords.get(ID1), 'secret');
  });

  it('leaves out (and reports) a VM whose network is missing', () => {
    const state = stateOf(full().slice(1), keys, () => undefined);
    const p = placementOf(state, 'hv1');
    assert.deepEqual([p.vms, p.networks, p.orphans], [[], [], [{ id: ID1, network: 'net1' }]]);
  });

  it('counts a bad document as absent, reports it, and ignores repeated or older events', () => {
    const bad: string[] = [];
    const state = stateOf(full(), keys, (key) => bad.push(key));
    assert.equal(
      applyEvents(state, [{ type: 'put', kv: kv(keys.vm(ID1), encodeVm({ vm: VM1, host: 'hv2' }), 4) }], keys, () => undefined),
      false,
    );
    assert.equal(state.vms.get(ID1)?.host, 'hv1');
    assert.equal(
      applyEvents(state, [{ type: 'put', kv: kv(keys.vm(ID1), '{"broken"', 9) }], keys, (key) => bad.push(key)),
      true,
    );
    assert.deepEqual(bad, [keys.vm(ID1)]);
    assert.equal(state.vms.has(ID1), false);
    assert.equal(
      applyEvents(state, [{ type: 'delete', key: keys.vm(ID2), modRevision: 10 }], keys, () => undefined),
      true,
    );
    assert.equal(
      applyEvents(state, [{ type: 'delete', key: keys.vm(ID2), modRevision: 10 }], keys, () => undefined),
      false,
    );
    assert.equal(state.vms.size, 0);
  });
});
