import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { networkSchema, vmSchema } from '../../src/model/schema.ts';
import { SCHEMA_VERSION, SqliteStore } from '../../src/store/sqlite-store.ts';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'imds-store-'));
  dirs.push(d);
  return d;
}

const net = networkSchema.parse({ id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' });
const vm = (n: number, extra: Record<string, unknown> = {}) =>
  vmSchema.parse({
    id: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
    network: 'net1',
    ip: `198.51.100.${10 + n}`,
    mac: `52:54:00:00:00:${n.toString(16).padStart(2, '0')}`,
    hostname: `vm${n}`,
    ...extra,
  });

describe('SQLite store', () => {
  it('migrates a new store, uses WAL, and round-trips networks, VMs and binary user data', () => {
    const dir = tempDir();
    const store = SqliteStore.open(dir);
    assert.equal(store.schemaVersion(), SCHEMA_VERSION);
    store.apply({
      networks: [{ network: net, origin: 'config' }],
      vms: [{ vm: vm(1, { user_data: Buffer.from([0x1f, 0x8b, 0, 255]) }), origin: 'api' }],
    });
    store.close();
    const again = SqliteStore.open(dir);
    assert.deepEqual(again.loadNetworks(), [{ network: net, origin: 'config' }]);
    const [loaded] = again.loadVms();
    assert.equal(loaded?.origin, 'api');
    assert.deepEqual([...(loaded?.vm.user_data ?? [])], [0x1f, 0x8b, 0, 255]);
    again.close();
    const raw = new Database(join(dir, 'imds.sqlite'), { readonly: true });
    assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
    raw.close();
  });

  it('writes a batch all or nothing', () => {
    const dir = tempDir();
    let fail = true;
    const halves: [number, number][] = [];
    const store = SqliteStore.open(dir, {
      midBatchHook: (written, total) => {
        halves.push([written, total]);
        if (fail) throw new Error('injected failure half-way');
      },
    });
    store.apply({ networks: [{ network: net, origin: 'api' }] });
    assert.throws(() => store.apply({ vms: [1, 2, 3, 4].map((n) => ({ vm: vm(n), origin: 'api' as const })) }), /STORE_FAILED|injected/);
    assert.equal(store.loadVms().length, 0, 'no VM of the failed batch was written');
    assert.deepEqual(halves, [[2, 4]], 'the hook ran half-way, and was told where');
    fail = false;
    store.apply({ vms: [1, 2].map((n) => ({ vm: vm(n), origin: 'api' as const })) });
    assert.equal(store.loadVms().length, 2);
    store.apply({ vms: [{ vm: vm(3), origin: 'api' as const }] });
    assert.deepEqual(
      halves,
      [
        [2, 4],
        [1, 2],
      ],
      'a batch of one VM has no middle: no hook',
    );
    store.close();
  });

  it('stores a password once, reads it, clears it, and drops it with its VM', () => {
    const store = SqliteStore.open(tempDir());
    store.apply({ networks: [{ network: net, origin: 'api' }], vms: [{ vm: vm(1), origin: 'api' }] });
    assert.equal(store.getPassword(vm(1).id), undefined);
    assert.equal(store.setPasswordOnce(vm(1).id, 'c2VjcmV0'), true);
    assert.equal(store.setPasswordOnce(vm(1).id, 'b3RoZXI='), false);
    assert.equal(store.getPassword(vm(1).id), 'c2VjcmV0');
    assert.equal(store.clearPassword(vm(1).id), true);
    assert.equal(store.getPassword(vm(1).id), undefined);
    store.setPasswordOnce(vm(1).id, 'eA==');
    store.apply({ deleteVms: [vm(1).id] });
    assert.equal(store.getPassword(vm(1).id), undefined);
    store.close();
  });

  it('refuses a store from a newer imds', () => {
    const dir = tempDir();
    SqliteStore.open(dir).close();
    const raw = new Database(join(dir, 'imds.sqlite'));
    raw.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    raw.close();
    assert.throws(() => SqliteStore.open(dir), /newer than this imds knows/);
  });
});
