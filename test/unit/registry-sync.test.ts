// The registry sync against the in-memory FakeEtcd (test/helpers/fake-etcd.ts: for unit tests of the
// pure logic only) and a real Inventory on a throwaway SQLite store.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, it } from 'node:test';
import { pino } from 'pino';
import type { Network, Vm } from '../../src/model/schema.ts';
import { encodeNetwork, encodeVm, registryKeys } from '../../src/registry/layout.ts';
import { RegistrySync } from '../../src/registry/sync.ts';
import { Inventory } from '../../src/store/inventory.ts';
import { SqliteStore } from '../../src/store/sqlite-store.ts';
import { FakeEtcd, settle } from '../helpers/fake-etcd.ts';

const keys = registryKeys('/imds/');
const NET: Network = { id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' };
const NET2: Network = { id: 'net2', cidr: '203.0.113.0/24', service_ip: '203.0.113.2' };
const vmOf = (n: number, network = 'net1'): Vm => ({
  id: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
  network,
  ip: network === 'net1' ? `198.51.100.${10 + n}` : `203.0.113.${10 + n}`,
  mac: `52:54:00:00:00:${String(n).padStart(2, '0')}`,
  hostname: `vm${n}`,
});

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function setup(hostId = 'hv1', etcd = new FakeEtcd(), keepPassword?: (vmId: string) => boolean) {
  const dir = mkdtempSync(join(tmpdir(), 'imds-registry-sync-'));
  const store = SqliteStore.open(dir);
  const applied: number[] = [];
  const inventory = Inventory.open(store, { dhcpDomain: 'novalocal' }, { onIndexChanged: () => applied.push(1) });
  const sync = new RegistrySync({
    etcd: () => Promise.resolve(etcd),
    prefix: '/imds/',
    hostId,
    target: inventory,
    log: pino({ level: 'silent' }),
    retryMs: { first: 5, max: 20 },
    ...(keepPassword === undefined ? {} : { keepPassword }),
  });
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  cleanups.push(() => store.close());
  cleanups.push(() => sync.close());
  return { etcd, inventory, sync, applied, dir };
}

async function putVm(etcd: FakeEtcd, vm: Vm, host: string) {
  return etcd.put(keys.vm(vm.id), encodeVm({ vm, host }));
}

const served = (inv: Inventory) =>
  inv
    .vmList()
    .map((v) => v.vm.hostname)
    .sort();

describe('registry sync', () => {
  it("reads the registry at start and serves this host's VMs and only their networks", async () => {
    const etcd = new FakeEtcd();
    await etcd.put(keys.network('net1'), encodeNetwork(NET));
    await etcd.put(keys.network('net2'), encodeNetwork(NET2));
    await putVm(etcd, vmOf(1), 'hv1');
    await putVm(etcd, vmOf(2, 'net2'), 'hv2');
    await etcd.put(keys.password(vmOf(1).id), 'pw1');
    const { inventory, sync } = setup('hv1', etcd);
    await sync.start();
    assert.deepEqual(served(inventory), ['vm1']);
    assert.deepEqual(
      inventory.networkList().map((n) => n.id),
      ['net1'],
    );
    assert.equal(inventory.getVm(vmOf(1).id)?.origin, 'registry');
    assert.equal(inventory.password(vmOf(1).id), 'pw1');
    assert.deepEqual({ ...sync.status(), since: 'x' }, { connected: true, revision: etcd.revision, lastError: undefined, since: 'x' });
    assert.equal(etcd.watchCount(), 1);
  });

  it('follows the watch: add, migrate away and back, delete; a repeated event changes nothing', async () => {
    const { etcd, inventory, sync, applied } = setup('hv1');
    await sync.start();
    await etcd.put(keys.network('net1'), encodeNetwork(NET));
    const rev = (await putVm(etcd, vmOf(1), 'hv1')).revision;
    assert.equal(await sync.waitForRevision(rev, 5000), true);
    assert.deepEqual(served(inventory), ['vm1']);
    const moved = (await putVm(etcd, vmOf(1), 'hv2')).revision;
    assert.equal(await sync.waitForRevision(moved, 5000), true);
    assert.deepEqual(served(inventory), []);
    assert.deepEqual(inventory.networkList(), [], 'a network with no VM here is not built');
    const back = (await putVm(etcd, vmOf(1), 'hv1')).revision;
    await sync.waitForRevision(back, 5000);
    assert.deepEqual(served(inventory), ['vm1']);
    const before = applied.length;
    await putVm(etcd, vmOf(1), 'hv1'); // same document again: nothing to apply
    await settle();
    assert.equal(applied.length, before);
    const gone = (await etcd.delete(keys.vm(vmOf(1).id))).revision;
    await sync.waitForRevision(gone, 5000);
    assert.deepEqual(served(inventory), []);
  });

  it('keeps records of other origins, and keeps serving with a bad document logged and skipped', async () => {
    const { etcd, inventory, sync } = setup('hv1');
    inventory.createNetwork(NET2, 'api');
    await etcd.put(keys.network('net1'), encodeNetwork(NET));
    await putVm(etcd, vmOf(1), 'hv1');
    await etcd.put(keys.vm(vmOf(2).id), '{"not": "a vm"}');
    await sync.start();
    assert.deepEqual(served(inventory), ['vm1']);
    assert.deepEqual(
      inventory
        .networkList()
        .map((n) => n.id)
        .sort(),
      ['net1', 'net2'],
    );
  });

  it('serves the local copy while etcd is down at start, retries, and catches up', async () => {
    const etcd = new FakeEtcd();
    await etcd.put(keys.network('net1'), encodeNetwork(NET));
    await putVm(etcd, vmOf(1), 'hv1');
    const first = setup('hv1', etcd);
    await first.sync.start();
    await first.sync.close();
    // A second daemon on the same store, started while etcd is down.
    etcd.setUnavailable(true);
    const inventory = Inventory.open(SqliteStore.open(first.dir), { dhcpDomain: 'novalocal' });
    const sync = new RegistrySync({
      etcd: () => Promise.resolve(etcd),
      prefix: '/imds/',
      hostId: 'hv1',
      target: inventory,
      log: pino({ level: 'silent' }),
      retryMs: { first: 5, max: 10 },
    });
    cleanups.push(() => sync.close());
    await sync.start();
    assert.equal(sync.status().connected, false);
    assert.match(String(sync.status().lastError), /UNAVAILABLE/);
    assert.deepEqual(served(inventory), ['vm1'], 'the local copy serves');
    etcd.setUnavailable(false);
    await putVm(etcd, vmOf(2), 'hv1');
    assert.equal(await sync.waitForRevision(etcd.revision, 5000), true);
    assert.equal(sync.status().connected, true);
    assert.deepEqual(served(inventory), ['vm1', 'vm2']);
  });

  it('reports an outage of a running sync and catches up on the watch when etcd is back', async () => {
    const { etcd, inventory, sync } = setup('hv1');
    await etcd.put(keys.network('net1'), encodeNetwork(NET));
    await sync.start();
    etcd.setUnavailable(true);
    await settle();
    assert.equal(sync.status().connected, false);
    assert.equal(inventory.networkList().length, 0);
    etcd.setUnavailable(false);
    await putVm(etcd, vmOf(3), 'hv1');
    assert.equal(await sync.waitForRevision(etcd.revision, 5000), true);
    assert.equal(sync.status().connected, true);
    assert.deepEqual(served(inventory), ['vm3']);
    assert.equal(etcd.calls.rangePrefix, 1, 'resumed on the watch, no full read');
  });

  it('reads everything again after a compaction and prunes what left meanwhile', async () => {
    const { etcd, inventory, sync } = setup('hv1');
    await etcd.put(keys.network('net1'), encodeNetwork(NET));
    await putVm(etcd, vmOf(1), 'hv1');
    await putVm(etcd, vmOf(2), 'hv1');
    await sync.start();
    assert.deepEqual(served(inventory), ['vm1', 'vm2']);
    etcd.cutWatches(true);
    await settle();
    assert.equal(sync.status().connected, false);
    // While the watch is cut off, writes happen and history is compacted.
    await etcd.delete(keys.vm(vmOf(1).id));
    await putVm(etcd, vmOf(4), 'hv1');
    etcd.compact(etcd.revision);
    etcd.cutWatches(false);
    await settle(20);
    assert.equal(await sync.waitForRevision(etcd.revision, 5000), true);
    assert.equal(etcd.calls.rangePrefix, 2, 'a full read after the compaction');
    assert.deepEqual(served(inventory), ['vm2', 'vm4']);
  });

  it('keeps the previous placement when the local store refuses the new one', async () => {
    const { etcd, inventory, sync } = setup('hv1');
    await etcd.put(keys.network('net1'), encodeNetwork(NET));
    await putVm(etcd, vmOf(1), 'hv1');
    await sync.start();
    const clash = { ...vmOf(2), ip: vmOf(1).ip };
    const rev = (await putVm(etcd, clash, 'hv1')).revision;
    assert.equal(await sync.waitForRevision(rev, 5000), true);
    assert.deepEqual(served(inventory), ['vm1']);
    assert.match(String(sync.status().lastError), /placement not applied: .*198\.51\.100\.11/);
  });

  it('applies the fix of a refused placement, even when the fix is to a network this host does not serve yet', async () => {
    const { etcd, inventory, sync } = setup('hv1');
    const local: Network = { id: 'local', cidr: '192.0.2.0/24', service_ip: '192.0.2.2', bridge: 'brlocal' };
    inventory.applyBatch({ networks: [local] }, { origin: 'api' }); // made on this host through the API
    await etcd.put(keys.network('net1'), encodeNetwork(NET));
    await putVm(etcd, vmOf(1), 'hv1');
    await sync.start();
    assert.deepEqual(served(inventory), ['vm1']);
    await etcd.put(keys.network('net2'), encodeNetwork({ ...NET2, bridge: 'brlocal' }));
    let rev = (await putVm(etcd, vmOf(2, 'net2'), 'hv1')).revision;
    assert.equal(await sync.waitForRevision(rev, 5000), true);
    assert.deepEqual(served(inventory), ['vm1'], 'net2 would share the local bridge: refused');
    assert.match(String(sync.status().lastError), /placement not applied: .*bridge "brlocal"/);
    rev = (await etcd.put(keys.network('net2'), encodeNetwork({ ...NET2, bridge: 'brnet2' }))).revision;
    assert.equal(await sync.waitForRevision(rev, 5000), true);
    assert.deepEqual(served(inventory), ['vm1', 'vm2']);
    assert.equal(inventory.getNetwork('net2')?.network.bridge, 'brnet2');
    assert.equal(sync.status().lastError, undefined, 'the refusal is no longer reported');
  });

  it("clears a local password whose key was deleted, but keeps a guest's that is being published", async () => {
    const pending = new Set<string>();
    const { etcd, inventory, sync } = setup('hv1', new FakeEtcd(), (id) => pending.has(id));
    await etcd.put(keys.network('net1'), encodeNetwork(NET));
    await putVm(etcd, vmOf(1), 'hv1');
    await putVm(etcd, vmOf(2), 'hv1');
    await etcd.put(keys.password(vmOf(1).id), 'pw1');
    await sync.start();
    assert.equal(inventory.password(vmOf(1).id), 'pw1');
    // The guest of vm2 posts its password here; its publication is pending (etcd refused it, say).
    assert.equal(inventory.setPasswordOnce(vmOf(2).id, 'posted'), true);
    pending.add(vmOf(2).id);
    // Another host clears vm1's password in the registry.
    const rev = (await etcd.delete(keys.password(vmOf(1).id))).revision;
    assert.equal(await sync.waitForRevision(rev, 5000), true);
    assert.equal(inventory.password(vmOf(1).id), '', 'cleared here too: the guest may post a new one');
    assert.equal(inventory.password(vmOf(2).id), 'posted', 'a password being published is kept');
    // Once no longer pending and still not in the registry, the next placement clears it as well.
    pending.delete(vmOf(2).id);
    const rev2 = (await putVm(etcd, vmOf(3), 'hv1')).revision;
    assert.equal(await sync.waitForRevision(rev2, 5000), true);
    assert.equal(inventory.password(vmOf(2).id), '');
    assert.deepEqual(served(inventory), ['vm1', 'vm2', 'vm3']);
  });

  it("skips the placement for events that touch no key of this host's, and still applies a VM that moves here", async () => {
    const { etcd, inventory, sync } = setup('hv1');
    await etcd.put(keys.network('net1'), encodeNetwork(NET));
    await etcd.put(keys.network('net2'), encodeNetwork(NET2));
    await putVm(etcd, vmOf(1), 'hv1');
    await sync.start();
    for (let n = 2; n <= 6; n++) {
      const written = (await putVm(etcd, vmOf(n, 'net2'), 'hv2')).revision;
      assert.equal(await sync.waitForRevision(written, 5000), true); // one watch message each
    }
    let rev = (await etcd.put(keys.password(vmOf(2, 'net2').id), 'theirs')).revision;
    assert.equal(await sync.waitForRevision(rev, 5000), true);
    assert.equal(sync.skipped, 6, "other hosts' VMs and passwords: no placement computed");
    assert.deepEqual(served(inventory), ['vm1']);
    rev = (await putVm(etcd, vmOf(3, 'net2'), 'hv1')).revision; // moves here
    assert.equal(await sync.waitForRevision(rev, 5000), true);
    assert.deepEqual(served(inventory), ['vm1', 'vm3']);
    rev = (await etcd.put(keys.network('net2'), encodeNetwork({ ...NET2, mtu: 1400 }))).revision; // now one of this host's networks
    assert.equal(await sync.waitForRevision(rev, 5000), true);
    assert.equal(inventory.getNetwork('net2')?.network.mtu, 1400);
    rev = (await putVm(etcd, vmOf(3, 'net2'), 'hv2')).revision; // and leaves
    assert.equal(await sync.waitForRevision(rev, 5000), true);
    assert.deepEqual(served(inventory), ['vm1']);
    assert.equal(sync.skipped, 6);
  });

  it('applies a burst of watch messages as one placement, and reaches their revision only once it is applied', async () => {
    const { etcd, inventory, sync } = setup('hv1');
    await etcd.put(keys.network('net1'), encodeNetwork(NET));
    await sync.start();
    const before = sync.placements;
    etcd.messagePerEvent = true;
    // Written in one go: the watch delivers them as five messages in one round of I/O.
    const revisions = await Promise.all([1, 2, 3, 4, 5].map((n) => putVm(etcd, vmOf(n), 'hv1')));
    const other = await putVm(etcd, vmOf(6, 'net1'), 'hv2'); // another host's, in the same round
    const last = Math.max(other.revision, ...revisions.map((r) => r.revision));
    let seen: string[] | undefined;
    const waited = sync.waitForRevision(revisions[0]?.revision ?? 0, 5000).then((ok) => {
      seen = served(inventory); // what a write waiting for the first revision finds when it returns
      return ok;
    });
    assert.equal(await sync.waitForRevision(last, 5000), true);
    assert.equal(await waited, true);
    assert.deepEqual(seen, ['vm1', 'vm2', 'vm3', 'vm4', 'vm5'], 'no revision is reached before its placement is applied');
    assert.deepEqual(served(inventory), ['vm1', 'vm2', 'vm3', 'vm4', 'vm5']);
    assert.equal(sync.placements - before, 1, 'one placement for the six messages');
    etcd.messagePerEvent = false;
    const one = (await putVm(etcd, { ...vmOf(1), hostname: 'renamed' }, 'hv1')).revision;
    assert.equal(await sync.waitForRevision(one, 5000), true);
    assert.equal(sync.placements - before, 2);
    assert.ok(served(inventory).includes('renamed'));
  });

  it('closes a client that was still being made when the sync closed, and reads nothing with it', async () => {
    const etcd = new FakeEtcd();
    let give: (api: FakeEtcd) => void = () => undefined;
    const made = new Promise<FakeEtcd>((resolve) => (give = resolve));
    const sync = new RegistrySync({
      etcd: () => made,
      prefix: '/imds/',
      hostId: 'hv1',
      target: setup().inventory,
      log: pino({ level: 'silent' }),
    });
    const started = sync.start();
    await sync.close(); // a SIGTERM during start
    give(etcd);
    await started;
    await settle();
    assert.deepEqual([etcd.calls.close, etcd.calls.rangePrefix, etcd.calls.watchPrefix], [1, 0, 0]);
  });

  it('times out a wait for a revision that never comes', async () => {
    const { sync } = setup('hv1');
    await sync.start();
    assert.equal(await sync.waitForRevision(1000, 20), false);
  });

  it('applies nothing of a layout version it does not know: degraded, the local copy kept; applies the registry once it is back', async () => {
    const etcd = new FakeEtcd();
    await etcd.put(keys.network('net1'), encodeNetwork(NET));
    await putVm(etcd, vmOf(1), 'hv1');
    await etcd.put(keys.layout, JSON.stringify({ version: 1 }));
    const { inventory, sync } = setup('hv1', etcd);
    await sync.start();
    assert.deepEqual(served(inventory), ['vm1']);
    assert.equal(sync.status().connected, true);
    await etcd.put(keys.layout, JSON.stringify({ version: 2 }));
    await putVm(etcd, vmOf(2), 'hv1');
    await settle();
    assert.deepEqual(served(inventory), ['vm1'], 'vm2, written under layout 2, is not applied');
    assert.equal(sync.status().connected, false, 'degraded');
    assert.match(sync.status().lastError ?? '', /layout is version 2; this imds knows version 1 only/);
    assert.match(sync.layoutProblem ?? '', /version 2/);
    await etcd.put(keys.layout, JSON.stringify({ version: 1 }));
    await settle();
    assert.deepEqual(served(inventory), ['vm1', 'vm2']);
    assert.equal(sync.status().connected, true);
    assert.equal(sync.layoutProblem, undefined);
  });

  it('refuses a layout at start too, and one that does not validate; an absent layout is version 1', async () => {
    const etcd = new FakeEtcd();
    await etcd.put(keys.network('net1'), encodeNetwork(NET));
    await putVm(etcd, vmOf(1), 'hv1');
    const first = setup('hv1', etcd);
    await first.sync.start();
    assert.deepEqual(served(first.inventory), ['vm1'], 'no layout key: version 1');
    await etcd.put(keys.layout, 'garbage');
    const second = setup('hv1', etcd);
    await second.sync.start();
    assert.deepEqual(served(second.inventory), [], 'nothing applied from a layout that does not validate');
    assert.match(second.sync.status().lastError ?? '', /layout key \/imds\/v1\/layout does not validate/);
  });
});
