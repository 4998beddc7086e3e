// Registry writes against the in-memory FakeEtcd (test/helpers/fake-etcd.ts: for unit tests only).
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { pino } from 'pino';
import { isImdsError, type ErrorCode } from '../../src/errors.ts';
import type { Network, Vm } from '../../src/model/schema.ts';
import { decodeVm, encodeHost, encodeVm, registryKeys } from '../../src/registry/layout.ts';
import { RegistrySync } from '../../src/registry/sync.ts';
import { RegistryWriter } from '../../src/registry/writer.ts';
import type { BatchInput } from '../../src/store/batch-plan.ts';
import { FakeEtcd, settle } from '../helpers/fake-etcd.ts';

const keys = registryKeys('/imds/');

/** hv2 registered (its daemon started once): writes may place VMs on it. */
const HV2 = encodeHost({ host_id: 'hv2', version: '0.0.0', started_at: '2026-01-01T00:00:00.000Z' });
const NET: Network = { id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' };
const vmOf = (n: number): Vm => ({
  id: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
  network: 'net1',
  ip: `198.51.100.${10 + n}`,
  mac: `52:54:00:00:00:${String(n).padStart(2, '0')}`,
  hostname: `vm${n}`,
});

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
});

/** A sync whose target records the VMs placed here (the inventory's part is tested in registry-sync). */
async function setup(hostId = 'hv1') {
  const etcd = new FakeEtcd();
  await etcd.put(keys.host('hv2'), HV2);
  const placed: string[][] = [];
  const target = {
    applyBatch: (batch: BatchInput) => {
      placed.push((batch.vms ?? []).map((v) => v.hostname));
      const none = { created: [], updated: [], unchanged: [], deleted: [] };
      return { networks: none, vms: none };
    },
    password: () => '',
  };
  const sync = new RegistrySync({ etcd: () => Promise.resolve(etcd), prefix: '/imds/', hostId, target, log: pino({ level: 'silent' }) });
  await sync.start();
  closers.push(() => sync.close());
  const writer = new RegistryWriter({ etcd: () => Promise.resolve(etcd), keys, sync, hostId, applyTimeoutMs: 5000 });
  return { etcd, sync, writer, placed };
}

async function rejects(promise: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<void> {
  await assert.rejects(promise, (err) => {
    assert.ok(isImdsError(err, code), `expected ${code}, got ${String(err)}`);
    if (message !== undefined) assert.match(err.message, message);
    return true;
  });
}

describe('registry writer', () => {
  it('creates once (ALREADY_EXISTS the second time) and is served here when the call returns', async () => {
    const { etcd, writer, placed } = await setup();
    await writer.createNetwork(NET);
    await rejects(writer.createNetwork(NET), 'ALREADY_EXISTS');
    assert.ok(await etcd.get(keys.layout), 'the layout marker is written');
    const r = await writer.createVm(vmOf(1), 'hv1');
    assert.equal(r.applied, true);
    assert.deepEqual(placed.at(-1), ['vm1']);
    await rejects(writer.createVm(vmOf(1), 'hv1'), 'ALREADY_EXISTS');
    const other = await writer.createVm(vmOf(2), 'hv2');
    assert.deepEqual([other.applied, other.thisHost], [true, false]);
  });

  it("checks a VM against its network and every host's VMs", async () => {
    const { writer } = await setup();
    await writer.createNetwork(NET);
    await writer.createVm(vmOf(1), 'hv2');
    await rejects(writer.createVm({ ...vmOf(2), ip: vmOf(1).ip }, 'hv1'), 'VALIDATION_FAILED', /198\.51\.100\.11/);
    await rejects(writer.createVm({ ...vmOf(3), network: 'nope' }, 'hv1'), 'VALIDATION_FAILED', /no network "nope"/);
    await rejects(writer.createVm({ ...vmOf(4), ip: '203.0.113.5' }, 'hv1'), 'VALIDATION_FAILED', /outside network/);
  });

  it('keeps a bridge name and an uplink unique across the registry, as an import does', async () => {
    const { writer } = await setup();
    await writer.createNetwork({ ...NET, bridge: 'brmeta', uplink: 'eth9' });
    const other: Network = { id: 'net2', cidr: '203.0.113.0/24', service_ip: '203.0.113.2' };
    await rejects(
      writer.createNetwork({ ...other, bridge: 'brmeta' }),
      'VALIDATION_FAILED',
      /bridge "brmeta" is already used by network "net1"/,
    );
    await rejects(
      writer.createNetwork({ ...other, uplink: 'eth9' }),
      'VALIDATION_FAILED',
      /uplink "eth9" is already used by network "net1"/,
    );
    await writer.createNetwork({ ...other, bridge: 'brmeta2' });
    await rejects(
      writer.updateNetwork('net2', (n) => ({ ...n, bridge: 'brmeta' })),
      'VALIDATION_FAILED',
      /bridge "brmeta"/,
    );
    await writer.updateNetwork('net1', (n) => ({ ...n, bridge: 'brmeta' })); // its own name is no conflict
  });

  it('refuses an update that lost the race with REGISTRY_CONFLICT, writing nothing', async () => {
    const { etcd, writer } = await setup();
    await writer.createNetwork(NET);
    await writer.createVm(vmOf(1), 'hv1');
    const key = keys.vm(vmOf(1).id);
    await rejects(
      writer.updateVm(vmOf(1).id, (cur) => {
        void etcd.put(key, encodeVm({ vm: { ...cur.vm, hostname: 'other' }, host: 'hv1' })); // the other controller, first
        return { ...cur, vm: { ...cur.vm, hostname: 'mine' } };
      }),
      'REGISTRY_CONFLICT',
    );
    const stored = decodeVm(vmOf(1).id, (await etcd.get(key))?.value ?? '');
    assert.ok(stored.ok && stored.value.vm.hostname === 'other');
    const rev = (await etcd.get(key))?.modRevision ?? 0;
    await rejects(
      writer.updateVm(vmOf(1).id, (cur) => cur, rev - 1),
      'REGISTRY_CONFLICT',
    );
    const ok = await writer.updateVm(vmOf(1).id, (cur) => ({ ...cur, vm: { ...cur.vm, hostname: 'mine' } }), rev);
    assert.equal(ok.vm.hostname, 'mine');
  });

  it('migrates a VM: it leaves this host when the call returns', async () => {
    const { writer, placed } = await setup('hv1');
    await writer.createNetwork(NET);
    await writer.createVm(vmOf(1), 'hv1');
    const r = await writer.migrateVm(vmOf(1).id.toUpperCase(), 'hv2');
    assert.equal(r.applied, true);
    assert.equal(r.host, 'hv2');
    assert.deepEqual(placed.at(-1), []);
    await rejects(writer.migrateVm(vmOf(1).id, 'not a host'), 'VALIDATION_FAILED', /^host: /);
  });

  it('keeps the password write-once across hosts, and deletes it with its VM', async () => {
    const { etcd, writer } = await setup();
    await writer.createNetwork(NET);
    await writer.createVm(vmOf(1), 'hv2');
    await writer.setPassword(vmOf(1).id, 'first', false);
    await rejects(writer.setPassword(vmOf(1).id, 'second', false), 'ALREADY_EXISTS');
    assert.equal((await etcd.get(keys.password(vmOf(1).id)))?.value, 'first');
    await writer.setPassword(vmOf(1).id, 'third', true);
    assert.equal((await etcd.get(keys.password(vmOf(1).id)))?.value, 'third');
    await rejects(writer.setPassword(vmOf(9).id, 'x', false), 'NOT_FOUND');
    await writer.deleteVm(vmOf(1).id);
    assert.equal(await etcd.get(keys.password(vmOf(1).id)), undefined);
  });

  it('clears the password key so the guest may post again; clearing none is a no-op; a lost race is a conflict', async () => {
    const { etcd, writer } = await setup();
    await writer.createNetwork(NET);
    await writer.createVm(vmOf(1), 'hv2');
    await writer.setPassword(vmOf(1).id, 'first', false);
    const r = await writer.clearPassword(vmOf(1).id);
    assert.equal(r.thisHost, false);
    assert.equal(await etcd.get(keys.password(vmOf(1).id)), undefined);
    const again = await writer.clearPassword(vmOf(1).id);
    assert.equal(again.applied, true);
    await writer.setPassword(vmOf(1).id, 'second', false);
    assert.equal((await etcd.get(keys.password(vmOf(1).id)))?.value, 'second');
    await rejects(writer.clearPassword(vmOf(9).id), 'NOT_FOUND');
    etcd.beforeTxn = async () => {
      etcd.beforeTxn = undefined;
      await etcd.put(keys.password(vmOf(1).id), 'raced');
    };
    await rejects(writer.clearPassword(vmOf(1).id), 'REGISTRY_CONFLICT');
    assert.equal((await etcd.get(keys.password(vmOf(1).id)))?.value, 'raced');
  });

  it('deletes a network only when empty, or with its VMs when forced', async () => {
    const { etcd, writer } = await setup();
    await writer.createNetwork(NET);
    await writer.createVm(vmOf(1), 'hv1');
    await writer.setPassword(vmOf(1).id, 'pw', false);
    await rejects(writer.deleteNetwork('net1', false), 'NETWORK_NOT_EMPTY');
    const r = await writer.deleteNetwork('net1', true);
    assert.deepEqual(r.vms, [vmOf(1).id]);
    assert.deepEqual(
      (await etcd.rangePrefix(keys.root)).kvs.map((kv) => kv.key),
      [keys.host('hv2'), keys.layout],
    );
    await rejects(writer.deleteNetwork('net1', false), 'NOT_FOUND');
  });

  it('refuses writes with REGISTRY_UNAVAILABLE while etcd is unreachable', async () => {
    const { etcd, writer } = await setup();
    etcd.setUnavailable(true);
    await rejects(writer.createNetwork(NET), 'REGISTRY_UNAVAILABLE', /nothing was written/);
    etcd.setUnavailable(false);
    await writer.createNetwork(NET);
  });
});

describe('registry token key', () => {
  it('is published create-only (the first host wins), replaced on rotation, and handed to every sync', async () => {
    const { etcd, writer } = await setup();
    const seen: (string | undefined)[] = [];
    const other = new RegistrySync({
      etcd: () => Promise.resolve(etcd),
      prefix: '/imds/',
      hostId: 'hv2',
      target: { applyBatch: () => ({ networks: none(), vms: none() }), password: () => '' },
      log: pino({ level: 'silent' }),
      onTokenKey: (key) => seen.push(key?.toString('hex')),
    });
    closers.push(() => other.close());
    await other.start();
    assert.equal(await writer.publishTokenKey(Buffer.alloc(32, 1)), true);
    assert.equal(await other.waitForRevision(etcd.revision, 5000), true);
    assert.equal(await writer.publishTokenKey(Buffer.alloc(32, 2)), false);
    const r = await writer.replaceTokenKey(Buffer.alloc(32, 3));
    assert.equal(await other.waitForRevision(r.revision, 5000), true);
    assert.deepEqual(seen, [undefined, Buffer.alloc(32, 1).toString('hex'), Buffer.alloc(32, 3).toString('hex')]);
  });

  it('refuses a VM placed on a host that never registered (naming the field and the known hosts), unless allowed', async () => {
    const { etcd, writer } = await setup();
    await writer.createNetwork(NET);
    await etcd.put(keys.alive('hv2'), HV2);
    await settle();
    const known = /host: no host "hv3" is registered \(known: hv2 \(live\)\)/;
    await assert.rejects(writer.createVm(vmOf(1), 'hv3'), (err) => {
      assert.ok(isImdsError(err, 'VALIDATION_FAILED'), String(err));
      assert.equal(err.field, 'host');
      assert.match(err.message, known);
      assert.deepEqual(err.details, { host: 'hv3', known: ['hv2'] });
      return true;
    });
    assert.equal(await etcd.get(keys.vm(vmOf(1).id)), undefined, 'nothing written');
    await writer.createVm(vmOf(1), 'hv1'); // this host: known even before its registration lands
    await rejects(writer.migrateVm(vmOf(1).id, 'hv3'), 'VALIDATION_FAILED', known);
    await writer.migrateVm(vmOf(1).id, 'hv2');
    await writer.createVm(vmOf(2), 'hv3', { allowUnknownHost: true });
    // A VM already on an unregistered host can still be changed (only a move is checked).
    await writer.updateVm(vmOf(2).id, (v) => ({ ...v, vm: { ...v.vm, name: 'renamed' } }));
    // A host registered after this daemon last read the registry is found by reading its key.
    etcd.cutWatches(true);
    await etcd.put(keys.host('hv4'), encodeHost({ host_id: 'hv4', version: '0.0.0', started_at: '2026-01-01T00:00:00.000Z' }));
    const moving = writer.migrateVm(vmOf(2).id, 'hv4'); // written, then waits for its revision (delivered once the watch is back)
    const hostNow = async () => {
      const d = decodeVm(vmOf(2).id, (await etcd.get(keys.vm(vmOf(2).id)))?.value ?? '');
      return d.ok ? d.value.host : undefined;
    };
    for (let i = 0; i < 100 && (await hostNow()) !== 'hv4'; i++) await settle();
    assert.equal(await hostNow(), 'hv4');
    etcd.cutWatches(false);
    assert.equal((await moving).host, 'hv4');
    const batch = { networks: [], vms: [{ vm: vmOf(3), host: 'hv5' }], passwords: new Map<string, string>() };
    await rejects(writer.importBatch(batch, { dryRun: true }), 'VALIDATION_FAILED', /vms\[0\]\.host: no host "hv5"/);
    await writer.importBatch(batch, { dryRun: false, allowUnknownHost: true });
  });

  it("refuses every write while the registry's layout is one this imds does not know", async () => {
    const { etcd, writer } = await setup();
    await writer.createNetwork(NET);
    await etcd.put(keys.layout, JSON.stringify({ version: 2 }));
    await settle();
    await rejects(writer.createVm(vmOf(1), 'hv1'), 'REGISTRY_UNAVAILABLE', /nothing was written: the registry's layout is version 2/);
    await rejects(writer.createNetwork({ id: 'net2', cidr: '203.0.113.0/24', service_ip: '203.0.113.2' }), 'REGISTRY_UNAVAILABLE');
    assert.equal(await etcd.get(keys.vm(vmOf(1).id)), undefined);
  });
});

function none() {
  return { created: [], updated: [], unchanged: [], deleted: [] };
}
