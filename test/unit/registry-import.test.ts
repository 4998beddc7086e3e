// `vm import` with a registry: the plan (pure) and its writing in transactions of at most
// --max-txn-ops, undone when one is refused, against the in-memory FakeEtcd (unit tests only) with a
// small transaction limit so that a few VMs make several transactions.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { pino } from 'pino';
import { ImdsError, isImdsError } from '../../src/errors.ts';
import type { Network, Vm } from '../../src/model/schema.ts';
import { chunkImport, planRegistryImport } from '../../src/registry/import-plan.ts';
import { encodeHost, encodeNetwork, encodeVm, registryKeys } from '../../src/registry/layout.ts';
import { stateOf } from '../../src/registry/registry-state.ts';
import { RegistrySync } from '../../src/registry/sync.ts';
import { RegistryWriter } from '../../src/registry/writer.ts';
import { FakeEtcd } from '../helpers/fake-etcd.ts';

const keys = registryKeys('/imds/');
const NET: Network = { id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' };
const vmOf = (n: number, hostname = `vm${n}`): Vm => ({
  id: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
  network: 'net1',
  ip: `198.51.100.${10 + n}`,
  mac: `52:54:00:00:00:${String(n).padStart(2, '0')}`,
  hostname,
});
const none = () => ({ created: [], updated: [], unchanged: [], deleted: [] });

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
});

async function setup(maxTxnOps: number) {
  const etcd = new FakeEtcd();
  await etcd.put(keys.host('hv2'), encodeHost({ host_id: 'hv2', version: '0.0.0', started_at: '2026-01-01T00:00:00.000Z' }));
  etcd.calls.txn = 0; // tests count the writer's transactions
  etcd.maxTxnOps = maxTxnOps;
  const target = { applyBatch: () => ({ networks: none(), vms: none() }), password: () => '' };
  const sync = new RegistrySync({
    etcd: () => Promise.resolve(etcd),
    prefix: '/imds/',
    hostId: 'hv1',
    target,
    log: pino({ level: 'silent' }),
  });
  await sync.start();
  closers.push(() => sync.close());
  const writer = new RegistryWriter({ etcd: () => Promise.resolve(etcd), keys, sync, hostId: 'hv1', maxTxnOps });
  return { etcd, writer };
}

/** Every key and value under the root. */
async function dump(etcd: FakeEtcd): Promise<[string, string][]> {
  return (await etcd.rangePrefix(keys.root)).kvs.map((kv) => [kv.key, kv.value]);
}

const batchOf = (vms: Vm[], host?: string) => ({
  networks: [NET],
  vms: vms.map((vm) => ({ vm, host })),
  passwords: new Map<string, string>(),
});

describe('registry import: plan', () => {
  it('writes networks first, guards a VM on a network it does not write, and keeps each transaction within the limit', () => {
    const kvs = [{ key: keys.network('net1'), value: encodeNetwork(NET), createRevision: 2, modRevision: 2 }];
    const state = stateOf(kvs, keys, () => undefined);
    const vms = Array.from({ length: 7 }, (_, k) => ({ vm: vmOf(k + 1), host: undefined }));
    const plan = planRegistryImport(
      state,
      new Map(kvs.map((kv) => [kv.key, kv])),
      keys,
      { networks: [], vms, passwords: new Map() },
      {
        defaultHost: 'hv1',
      },
    );
    assert.deepEqual(plan.result.vms.created.length, 7);
    assert.equal(plan.layout, false);
    const txns = chunkImport(plan, keys, 5);
    assert.deepEqual(
      txns.map((t) => [t.compares.length, t.ops.length]),
      [
        [5, 4],
        [4, 3],
      ],
      'each transaction compares the network once, then one compare and one put per VM',
    );
    for (const t of txns) assert.deepEqual(t.compares[0], { key: keys.network('net1'), modRevision: 2 });
    assert.deepEqual([...plan.hosts], ['hv1']);
  });

  it("counts a changed network's hosts among those the import concerns", () => {
    const kvs = [
      { key: keys.network('net1'), value: encodeNetwork(NET), createRevision: 2, modRevision: 2 },
      { key: keys.vm(vmOf(1).id), value: encodeVm({ vm: vmOf(1), host: 'hv7' }), createRevision: 3, modRevision: 3 },
    ];
    const state = stateOf(kvs, keys, () => undefined);
    const batch = { networks: [{ ...NET, mtu: 1400 }], vms: [], passwords: new Map<string, string>() };
    const plan = planRegistryImport(state, new Map(kvs.map((kv) => [kv.key, kv])), keys, batch, { defaultHost: 'hv1' });
    assert.deepEqual([plan.result.networks.updated, [...plan.hosts]], [['net1'], ['hv7']]);
    assert.deepEqual(chunkImport(plan, keys, 128)[0]?.compares, [{ key: keys.network('net1'), modRevision: 2 }]);
  });
});

describe('registry import: writing', () => {
  it('writes a large import in several transactions; the same file again writes nothing', async () => {
    const { etcd, writer } = await setup(6);
    const vms = Array.from({ length: 12 }, (_, k) => vmOf(k + 1));
    const r = await writer.importBatch(batchOf(vms, 'hv2'), { dryRun: false });
    assert.ok(r.transactions >= 3, `${r.transactions} transactions`);
    assert.equal(r.result.vms.created.length, 12);
    assert.equal((await dump(etcd)).filter(([k]) => k.startsWith(keys.vm(''))).length, 12);
    const before = etcd.revision;
    const again = await writer.importBatch(batchOf(vms), { dryRun: false });
    assert.deepEqual([again.transactions, again.result.vms.unchanged.length, etcd.revision], [0, 12, before]);
  });

  it('undoes the transactions written when a later one loses a race, and names the key', async () => {
    const { etcd, writer } = await setup(6);
    await writer.importBatch(batchOf([vmOf(1), vmOf(2)], 'hv1'), { dryRun: false });
    const before = await dump(etcd);
    const changed = [vmOf(1, 'renamed1'), vmOf(2, 'renamed2'), ...Array.from({ length: 10 }, (_, k) => vmOf(k + 3))];
    let n = 0;
    etcd.beforeTxn = async () => {
      if (++n !== 3) return;
      etcd.beforeTxn = undefined;
      await etcd.put(keys.vm(vmOf(12).id), encodeVm({ vm: vmOf(12, 'theirs'), host: 'hv2' })); // another controller, first
    };
    await assert.rejects(writer.importBatch(batchOf(changed), { dryRun: false }), (err) => {
      assert.ok(isImdsError(err, 'REGISTRY_CONFLICT'), String(err));
      assert.match(err.message, /vms\/00000000-0000-4000-8000-000000000012 changed in the registry/);
      assert.match(err.message, /undone, nothing was changed/);
      return true;
    });
    const after = new Map(await dump(etcd));
    const theirs = after.get(keys.vm(vmOf(12).id));
    after.delete(keys.vm(vmOf(12).id));
    assert.deepEqual([...after], before, 'renamed VMs put back, created ones deleted');
    assert.match(String(theirs), /"theirs"/, "the other controller's write stands");
  });

  it('names the keys it could not undo when etcd went away in the middle', async () => {
    const { etcd, writer } = await setup(6);
    let n = 0;
    etcd.beforeTxn = () => {
      if (++n === 2) etcd.setUnavailable(true);
    };
    await assert.rejects(writer.importBatch(batchOf(Array.from({ length: 8 }, (_, k) => vmOf(k + 1))), { dryRun: false }), (err) => {
      assert.ok(isImdsError(err, 'REGISTRY_UNAVAILABLE'), String(err));
      assert.match(err.message, /import stopped after 1 of \d+ transactions/);
      assert.match(err.message, /not reachable or of unknown outcome: .*networks\/net1/);
      return true;
    });
    etcd.beforeTxn = undefined;
    etcd.setUnavailable(false);
  });
});

/** net1 with 9 VMs on hv2: more than one transaction of 6 operations holds. */
const importNine = (writer: RegistryWriter) =>
  writer.importBatch(
    batchOf(
      Array.from({ length: 9 }, (_, k) => vmOf(k + 1)),
      'hv2',
    ),
    { dryRun: false },
  );

describe('chunked writes: undo and network rm --force', () => {
  it('stops undoing at the first failure instead of waiting out a deadline per key, and names every key left', async () => {
    const { etcd, writer } = await setup(6);
    let n = 0;
    etcd.beforeTxn = () => {
      if (++n === 4) etcd.setUnavailable(true); // the fourth transaction fails; the undo's first call too
    };
    // 21 writes (the network, 20 VMs) in transactions of 6 operations: 5 (and the layout marker), 6, 6, 4.
    const vms = Array.from({ length: 20 }, (_, k) => vmOf(k + 1));
    await assert.rejects(writer.importBatch(batchOf(vms), { dryRun: false }), (err) => {
      assert.ok(isImdsError(err, 'REGISTRY_UNAVAILABLE'), String(err));
      const details = err.details as { written: number; notUndone: string[] };
      assert.equal(details.written, 3);
      assert.equal(details.notUndone.length, 17, 'every key of the three transactions written');
      return true;
    });
    assert.equal(etcd.calls.txn, 5, 'four transactions and one undo attempt, not one per key');
    etcd.beforeTxn = undefined;
    etcd.setUnavailable(false);
  });

  it('names the keys of a transaction that failed in flight (it may have been applied), and says so', async () => {
    const { etcd, writer } = await setup(6);
    let n = 0;
    etcd.beforeTxn = () => {
      if (++n === 2) throw new ImdsError('REGISTRY_UNAVAILABLE', 'deadline exceeded (fake)', { details: { maybeApplied: true } });
    };
    await assert.rejects(writer.importBatch(batchOf(Array.from({ length: 8 }, (_, k) => vmOf(k + 1))), { dryRun: false }), (err) => {
      assert.ok(isImdsError(err, 'REGISTRY_UNAVAILABLE'), String(err));
      const details = err.details as { maybeApplied: boolean; notUndone: string[] };
      assert.equal(details.maybeApplied, true);
      assert.ok(details.notUndone.includes(keys.vm(vmOf(8).id)), details.notUndone.join(' '));
      assert.ok(!details.notUndone.includes(keys.network('net1')), 'the first transaction was undone');
      return true;
    });
    etcd.beforeTxn = undefined;
    assert.equal((await dump(etcd)).filter(([k]) => k.startsWith(keys.network(''))).length, 0);
  });

  it('deletes a network with more VMs than one transaction holds, the network last', async () => {
    const { etcd, writer } = await setup(6);
    await importNine(writer);
    await etcd.put(keys.password(vmOf(3).id), 'secret');
    let seen = 0;
    etcd.beforeTxn = async () => {
      seen++;
      if ((await etcd.get(keys.network('net1'))) === undefined) assert.fail('the network went before its VMs');
    };
    const r = await writer.deleteNetwork('net1', true);
    etcd.beforeTxn = undefined;
    assert.ok(seen >= 4, `${seen} transactions`);
    assert.equal(r.vms.length, 9);
    assert.deepEqual(
      (await dump(etcd)).filter(([k]) => k !== keys.layout && k !== keys.host('hv2')),
      [],
    );
  });

  it('puts everything back when a VM of the network changes between its transactions', async () => {
    const { etcd, writer } = await setup(6);
    await importNine(writer);
    const before = await dump(etcd);
    let n = 0;
    etcd.beforeTxn = async () => {
      if (++n !== 2) return;
      etcd.beforeTxn = undefined;
      await etcd.put(keys.vm(vmOf(9).id), encodeVm({ vm: vmOf(9, 'theirs'), host: 'hv2' }));
    };
    await assert.rejects(writer.deleteNetwork('net1', true), (err) => {
      assert.ok(isImdsError(err, 'REGISTRY_CONFLICT'), String(err));
      assert.match(err.message, /network rm "net1": .*vms\/00000000-0000-4000-8000-000000000009 changed in the registry/);
      assert.match(err.message, /undone, nothing was changed/);
      return true;
    });
    const after = new Map(await dump(etcd));
    assert.match(String(after.get(keys.vm(vmOf(9).id))), /"theirs"/);
    after.delete(keys.vm(vmOf(9).id));
    assert.deepEqual(
      [...after],
      before.filter(([k]) => k !== keys.vm(vmOf(9).id)),
      'the VMs deleted by the first transaction are back',
    );
  });

  it('deletes a network only if no VM was written onto it since the read: it reads again (three times at most)', async () => {
    const { etcd, writer } = await setup(128);
    await writer.importBatch({ networks: [NET], vms: [], passwords: new Map() }, { dryRun: false });
    let n = 0;
    let inHook = false;
    /** Runs `write` before the writer's transactions (not before its own put: the fake's put is a transaction too). */
    const before = (write: () => Promise<unknown>) => async () => {
      if (inHook) return;
      inHook = true;
      await write().finally(() => (inHook = false));
    };
    etcd.beforeTxn = before(async () => {
      // another controller, between the read and the delete
      if (++n === 1) await etcd.put(keys.vm(vmOf(1).id), encodeVm({ vm: vmOf(1), host: 'hv2' }));
    });
    await assert.rejects(writer.deleteNetwork('net1', false), (err) => isImdsError(err, 'NETWORK_NOT_EMPTY'));
    assert.ok(await etcd.get(keys.network('net1')), 'the network stays: a VM is on it now');
    etcd.beforeTxn = before(() =>
      etcd.put(keys.vm(vmOf(2).id), encodeVm({ vm: { ...vmOf(2, `vm2-${++n}`), network: 'net9' }, host: 'hv2' })),
    ); // a controller that never stops, on another network
    await assert.rejects(writer.deleteNetwork('net1', true), (err) => {
      assert.ok(isImdsError(err, 'REGISTRY_CONFLICT'), String(err));
      assert.match(err.message, /network rm "net1": a key under \/imds\/v1\/vms\/ changed in the registry since it was read/);
      return true;
    });
    etcd.beforeTxn = undefined;
    assert.ok(await etcd.get(keys.network('net1')));
    assert.ok(await etcd.get(keys.vm(vmOf(1).id)), 'the undo put the VM back');
    const tries = n;
    const done = await writer.deleteNetwork('net1', true);
    assert.equal(tries, 1 + 3, 'one write before the first delete, then one before each of three attempts');
    assert.deepEqual(done.vms, [vmOf(1).id]);
    assert.equal(await etcd.get(keys.network('net1')), undefined);
  });
});
