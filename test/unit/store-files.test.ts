// The store's files: the copy taken before a migration, the online backup, and the checks and
// swap of `imds store restore` (no daemon, temporary directories).
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { isImdsError } from '../../src/errors.ts';
import { networkSchema, vmSchema } from '../../src/model/schema.ts';
import { restoreStore, validateStoreFile } from '../../src/store/restore.ts';
import { IMDS_APPLICATION_ID, SCHEMA_VERSION, SqliteStore } from '../../src/store/sqlite-store.ts';
import { compactTime, createBackupFile, migrationBackupBase } from '../../src/store/store-files.ts';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'imds-store-files-'));
  dirs.push(d);
  return d;
}

const net = networkSchema.parse({ id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' });
const vm = (n: number) =>
  vmSchema.parse({
    id: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
    network: 'net1',
    ip: `198.51.100.${10 + n}`,
    mac: `52:54:00:00:00:${n.toString(16).padStart(2, '0')}`,
    hostname: `vm${n}`,
  });

/** A store with one network and `vms` VMs (the first with a password). */
function storeWith(dir: string, vms: number): void {
  const store = SqliteStore.open(dir);
  store.apply({
    networks: [{ network: net, origin: 'api' }],
    vms: Array.from({ length: vms }, (_, i) => ({ vm: vm(i + 1), origin: 'api' })),
  });
  if (vms > 0) store.setPasswordOnce(vm(1).id, 'c2VjcmV0');
  store.close();
}

const mode = (path: string): number => statSync(path).mode & 0o777;
const code = (err: unknown): string => (isImdsError(err) ? err.code : String(err));

describe('store files', () => {
  it('names copies by time, and never reuses a name', () => {
    assert.equal(compactTime(new Date('2026-12-02T22:25:33.123Z')), '20261202T222533Z');
    assert.equal(migrationBackupBase('/s/imds.sqlite', 1, new Date('2026-12-02T22:25:33Z')), '/s/imds.sqlite.v1-20261202T222533Z');
    const dir = tempDir();
    const first = createBackupFile(join(dir, 'x'));
    const second = createBackupFile(join(dir, 'x'));
    assert.deepEqual([first, second], [join(dir, 'x.bak'), join(dir, 'x-2.bak')]);
    assert.equal(mode(first), 0o600);
  });

  it('marks a new store as an imds store', () => {
    const dir = tempDir();
    SqliteStore.open(dir).close();
    const db = new Database(join(dir, 'imds.sqlite'), { readonly: true });
    assert.equal(db.pragma('application_id', { simple: true }), IMDS_APPLICATION_ID);
    assert.equal(db.pragma('user_version', { simple: true }), SCHEMA_VERSION);
    db.close();
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.endsWith('.bak')),
      [],
      'a new store (version 0) is not copied',
    );
  });

  it('copies a store of an older schema before migrating it, and says where', () => {
    const dir = tempDir();
    storeWith(dir, 2);
    // The store as schema version 1 left it (before the application id).
    const raw = new Database(join(dir, 'imds.sqlite'));
    raw.pragma('application_id = 0');
    raw.pragma('user_version = 1');
    raw.close();
    const told: { path: string; from: number; to: number }[] = [];
    const store = SqliteStore.open(dir, { onMigrationBackup: (b) => told.push(b) });
    assert.equal(store.schemaVersion(), SCHEMA_VERSION);
    store.close();
    assert.equal(told.length, 1);
    const [backup] = told as [{ path: string; from: number; to: number }];
    assert.deepEqual([backup.from, backup.to], [1, SCHEMA_VERSION]);
    assert.match(backup.path, /imds\.sqlite\.v1-\d{8}T\d{6}Z\.bak$/);
    assert.equal(mode(backup.path), 0o600);
    const copy = new Database(backup.path, { readonly: true });
    assert.equal(copy.pragma('user_version', { simple: true }), 1, 'the copy is the store before the migration');
    assert.equal(copy.pragma('journal_mode', { simple: true }), 'delete', 'the copy is one file');
    assert.equal(copy.prepare('SELECT count(*) FROM vms').pluck().get(), 2);
    copy.close();
    assert.deepEqual(validateStoreFile(backup.path), { schema_version: 1, networks: 1, vms: 2, passwords: 1 });
    // Opened again: nothing to migrate, no new copy.
    SqliteStore.open(dir, { onMigrationBackup: (b) => told.push(b) }).close();
    assert.equal(told.length, 1);
  });

  it('takes an online backup that holds the store', async () => {
    const dir = tempDir();
    storeWith(dir, 3);
    const store = SqliteStore.open(dir);
    const dest = createBackupFile(join(dir, 'online'));
    const pending = store.backup(dest);
    store.apply({ vms: [{ vm: vm(9), origin: 'api' }] }); // written while the backup runs
    await pending;
    store.close();
    const summary = validateStoreFile(dest);
    assert.equal(summary.networks, 1);
    assert.ok(summary.vms === 3 || summary.vms === 4, `the backup holds the store before or after the write: ${summary.vms}`);
    assert.equal(mode(dest), 0o600);
    assert.ok(!existsSync(`${dest}-wal`), 'one file, no -wal');
  });

  it('refuses files that are not an intact imds store, naming why', () => {
    const dir = tempDir();
    const text = join(dir, 'text');
    writeFileSync(text, 'hello, not sqlite\n'.repeat(100));
    assert.throws(
      () => validateStoreFile(text),
      (e) => code(e) === 'STORE_INVALID' && /not an SQLite database/.test((e as Error).message),
    );
    assert.throws(() => validateStoreFile(join(dir, 'missing')), /no such file/);
    const other = join(dir, 'other.sqlite');
    const db = new Database(other);
    db.exec('CREATE TABLE t (a)');
    db.close();
    assert.throws(() => validateStoreFile(other), /not an imds store/);
    const newer = tempDir();
    storeWith(newer, 1);
    const raw = new Database(join(newer, 'imds.sqlite'));
    raw.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    raw.close();
    assert.throws(() => validateStoreFile(join(newer, 'imds.sqlite')), /newer than this imds knows/);
    const bad = tempDir();
    storeWith(bad, 1);
    const edit = new Database(join(bad, 'imds.sqlite'));
    edit.prepare("UPDATE vms SET spec = json_set(spec, '$.ip', '203.0.113.9')").run();
    edit.close();
    assert.throws(() => validateStoreFile(join(bad, 'imds.sqlite')), /do not fit its networks: .*outside/);
  });

  it('restores a backup in place of the store, keeping the one it replaces', () => {
    const source = tempDir();
    storeWith(source, 3);
    const backup = createBackupFile(join(source, 'copy'));
    const db = new Database(join(source, 'imds.sqlite'));
    db.prepare('VACUUM INTO ?').run(backup);
    db.close();

    const state = tempDir();
    storeWith(state, 1);
    const r = restoreStore(state, backup, new Date('2026-12-02T22:25:33Z'));
    assert.deepEqual([r.networks, r.vms, r.passwords], [1, 3, 1]);
    assert.equal(r.previous, join(state, 'imds.sqlite.before-restore-20261202T222533Z.bak'));
    assert.equal(validateStoreFile(r.previous).vms, 1, 'the replaced store is kept, whole');
    const store = SqliteStore.open(state);
    assert.equal(store.loadVms().length, 3);
    assert.equal(store.getPassword(vm(1).id), 'c2VjcmV0');
    store.close();
    assert.deepEqual(
      readdirSync(state).filter((f) => f.includes('.tmp')),
      [],
      'no temporary file left',
    );
  });

  it('changes nothing when the file is refused', () => {
    const state = tempDir();
    storeWith(state, 2);
    const junk = join(state, 'junk');
    writeFileSync(junk, 'x'.repeat(4096));
    const before = readdirSync(state).sort();
    assert.throws(
      () => restoreStore(state, junk),
      (e) => code(e) === 'STORE_INVALID',
    );
    assert.deepEqual(readdirSync(state).sort(), before);
    const store = SqliteStore.open(state);
    assert.equal(store.loadVms().length, 2);
    store.close();
  });
});
