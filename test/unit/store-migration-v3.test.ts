// Store migration 3 (origin 'registry'): a store of schema 2 keeps every record and password.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, it } from 'node:test';
import Database from 'better-sqlite3';
import { SqliteStore, SCHEMA_VERSION } from '../../src/store/sqlite-store.ts';

const dir = mkdtempSync(join(tmpdir(), 'imds-migration-v3-'));
after(() => rmSync(dir, { recursive: true, force: true }));

it('migrates a schema-2 store to origin registry, keeping records and passwords', () => {
  const db = new Database(join(dir, 'imds.sqlite'));
  const check = "CHECK (origin IN ('config', 'api'))";
  db.exec(`CREATE TABLE networks (id TEXT PRIMARY KEY, spec TEXT NOT NULL, origin TEXT NOT NULL ${check},
     created_at TEXT NOT NULL DEFAULT 'x', updated_at TEXT NOT NULL DEFAULT 'x') STRICT;
   CREATE TABLE vms (id TEXT PRIMARY KEY, network TEXT NOT NULL REFERENCES networks(id), ip TEXT NOT NULL, mac TEXT NOT NULL,
     spec TEXT NOT NULL, user_data BLOB, origin TEXT NOT NULL ${check},
     created_at TEXT NOT NULL DEFAULT 'x', updated_at TEXT NOT NULL DEFAULT 'x') STRICT;
   CREATE INDEX vms_by_network ON vms (network);
   CREATE TABLE passwords (vm TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE, value TEXT NOT NULL,
     set_at TEXT NOT NULL DEFAULT 'x') STRICT;
   PRAGMA application_id = ${0x696d6473}; PRAGMA user_version = 2;`);
  const net = { id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' };
  const vm = {
    id: '1b4e28ba-2fa1-11d2-883f-0016d3cca427',
    network: 'net1',
    ip: '198.51.100.10',
    mac: '52:54:00:12:34:56',
    hostname: 'vm1',
  };
  db.prepare("INSERT INTO networks (id, spec, origin) VALUES ('net1', ?, 'api')").run(JSON.stringify(net));
  db.prepare("INSERT INTO vms (id, network, ip, mac, spec, origin) VALUES (?, 'net1', ?, ?, ?, 'config')").run(
    vm.id,
    vm.ip,
    vm.mac,
    JSON.stringify(vm),
  );
  db.prepare("INSERT INTO passwords (vm, value) VALUES (?, 'pw')").run(vm.id);
  db.close();

  const store = SqliteStore.open(dir);
  assert.equal(SCHEMA_VERSION, 3);
  assert.deepEqual(store.loadNetworks(), [{ network: net, origin: 'api' }]);
  assert.deepEqual(store.loadVms(), [{ vm, origin: 'config' }]);
  assert.deepEqual([...store.loadPasswords()], [[vm.id, 'pw']]);
  store.apply({ vms: [{ vm, origin: 'registry' }] });
  assert.equal(store.loadVms()[0]?.origin, 'registry');
  store.apply({ deleteVms: [vm.id] });
  assert.deepEqual([...store.loadPasswords()], [], 'the cascade still holds');
  store.close();
});
