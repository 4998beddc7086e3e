// The durable store: SQLite (better-sqlite3) in WAL mode under state_dir. The daemon is its only
// writer; guests are never answered from it (the in-memory index serves them). Every write is one
// transaction, so a crash leaves either all of a change or none of it. Uniqueness of (network, ip)
// and (network, mac) is checked by the inventory before writing, not by UNIQUE constraints, so a
// batch may swap addresses between VMs.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { ImdsError } from '../errors.ts';
import { networkSchema, vmSchema, type Network, type Vm } from '../model/schema.ts';
import { backupBeforeMigration, backupInto } from './store-files.ts';

/** Who made a record: the configuration file, the admin API, or the etcd registry's sync (issue 18). */
export type Origin = 'config' | 'api' | 'registry';

export interface StoredNetwork {
  network: Network;
  origin: Origin;
}

export interface StoredVm {
  vm: Vm;
  origin: Origin;
}

/** PRAGMA application_id of an imds store: "imds" in ASCII. */
export const IMDS_APPLICATION_ID = 0x696d6473;

/** Schema migrations, applied in order; PRAGMA user_version records how many have run. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE networks (
     id TEXT PRIMARY KEY,
     spec TEXT NOT NULL,
     origin TEXT NOT NULL CHECK (origin IN ('config', 'api')),
     created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
     updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
   ) STRICT;
   CREATE TABLE vms (
     id TEXT PRIMARY KEY,
     network TEXT NOT NULL REFERENCES networks(id),
     ip TEXT NOT NULL,
     mac TEXT NOT NULL,
     spec TEXT NOT NULL,
     user_data BLOB,
     origin TEXT NOT NULL CHECK (origin IN ('config', 'api')),
     created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
     updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
   ) STRICT;
   CREATE INDEX vms_by_network ON vms (network);
   CREATE TABLE passwords (
     vm TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
     value TEXT NOT NULL,
     set_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
   ) STRICT;`,
  // 2: the file says it is an imds store (`imds store restore` checks it).
  `PRAGMA application_id = ${IMDS_APPLICATION_ID};`,
  // 3: origin 'registry' (records the etcd registry's sync keeps). SQLite cannot change a CHECK in
  // place: the tables are rebuilt (foreign keys off meanwhile, checked before the commit: see migrate).
  `CREATE TABLE networks_v3 (
     id TEXT PRIMARY KEY,
     spec TEXT NOT NULL,
     origin TEXT NOT NULL CHECK (origin IN ('config', 'api', 'registry')),
     created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
     updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
   ) STRICT;
   INSERT INTO networks_v3 SELECT id, spec, origin, created_at, updated_at FROM networks ORDER BY rowid;
   CREATE TABLE vms_v3 (
     id TEXT PRIMARY KEY,
     network TEXT NOT NULL REFERENCES networks(id),
     ip TEXT NOT NULL,
     mac TEXT NOT NULL,
     spec TEXT NOT NULL,
     user_data BLOB,
     origin TEXT NOT NULL CHECK (origin IN ('config', 'api', 'registry')),
     created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
     updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
   ) STRICT;
   INSERT INTO vms_v3 SELECT id, network, ip, mac, spec, user_data, origin, created_at, updated_at FROM vms ORDER BY rowid;
   DROP TABLE vms;
   DROP TABLE networks;
   ALTER TABLE networks_v3 RENAME TO networks;
   ALTER TABLE vms_v3 RENAME TO vms;
   CREATE INDEX vms_by_network ON vms (network);`,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/** A VM as stored: the spec without user data (kept as a BLOB beside it). */
function vmSpec(vm: Vm): string {
  const { user_data: _ignored, ...spec } = vm;
  return JSON.stringify(spec);
}

export interface BatchChange {
  networks?: readonly StoredNetwork[];
  vms?: readonly StoredVm[];
  deleteVms?: readonly string[];
  deleteNetworks?: readonly string[];
  /** Passwords set (replacing any) with the batch, by VM id. */
  passwords?: ReadonlyMap<string, string>;
  /** Passwords removed with the batch (of VMs that stay). */
  clearPasswords?: readonly string[];
}

export interface OpenOptions {
  midBatchHook?: ((written: number, total: number) => void) | undefined;
  /** Told of the copy taken before a migration (the daemon logs it). */
  onMigrationBackup?: ((backup: { path: string; from: number; to: number }) => void) | undefined;
}

export class SqliteStore {
  readonly path: string;
  private readonly db: Database.Database;
  private readonly stmt: {
    putNetwork: Database.Statement;
    putVm: Database.Statement;
    deleteVm: Database.Statement;
    deleteNetwork: Database.Statement;
    getPassword: Database.Statement;
    setPassword: Database.Statement;
    replacePassword: Database.Statement;
    clearPassword: Database.Statement;
  };
  /**
   * Called inside a batch transaction of two VMs or more once half of its VMs are written, with
   * how many of how many (fault injection for tests).
   */
  private readonly midBatchHook: ((written: number, total: number) => void) | undefined;

  private constructor(path: string, db: Database.Database, midBatchHook?: (written: number, total: number) => void) {
    this.path = path;
    this.db = db;
    this.midBatchHook = midBatchHook;
    this.stmt = {
      putNetwork: db.prepare(
        `INSERT INTO networks (id, spec, origin) VALUES (@id, @spec, @origin)
         ON CONFLICT(id) DO UPDATE SET spec = excluded.spec, origin = excluded.origin,
           updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')`,
      ),
      putVm: db.prepare(
        `INSERT INTO vms (id, network, ip, mac, spec, user_data, origin) VALUES (@id, @network, @ip, @mac, @spec, @user_data, @origin)
         ON CONFLICT(id) DO UPDATE SET network = excluded.network, ip = excluded.ip, mac = excluded.mac, spec = excluded.spec,
           user_data = excluded.user_data, origin = excluded.origin, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')`,
      ),
      deleteVm: db.prepare('DELETE FROM vms WHERE id = ?'),
      deleteNetwork: db.prepare('DELETE FROM networks WHERE id = ?'),
      getPassword: db.prepare('SELECT value FROM passwords WHERE vm = ?'),
      setPassword: db.prepare('INSERT INTO passwords (vm, value) VALUES (?, ?) ON CONFLICT(vm) DO NOTHING'),
      replacePassword: db.prepare(
        `INSERT INTO passwords (vm, value) VALUES (?, ?)
         ON CONFLICT(vm) DO UPDATE SET value = excluded.value, set_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')`,
      ),
      clearPassword: db.prepare('DELETE FROM passwords WHERE vm = ?'),
    };
  }

  static open(stateDir: string, options: OpenOptions = {}): SqliteStore {
    const path = join(stateDir, 'imds.sqlite');
    try {
      mkdirSync(stateDir, { recursive: true, mode: 0o750 });
      const db = new Database(path);
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      db.pragma('busy_timeout = 5000');
      migrate(db, path, options.onMigrationBackup);
      return new SqliteStore(path, db, options.midBatchHook);
    } catch (err) {
      if (err instanceof ImdsError) throw err;
      throw new ImdsError('STORE_FAILED', `cannot open the store ${path}: ${(err as Error).message}`, { cause: err });
    }
  }

  close(): void {
    this.db.close();
  }

  loadNetworks(): StoredNetwork[] {
    const rows = this.db.prepare('SELECT spec, origin FROM networks ORDER BY rowid').all() as { spec: string; origin: Origin }[];
    return rows.map((r) => ({ network: networkSchema.parse(JSON.parse(r.spec)), origin: r.origin }));
  }

  loadVms(): StoredVm[] {
    const rows = this.db.prepare('SELECT spec, user_data, origin FROM vms ORDER BY rowid').all() as {
      spec: string;
      user_data: Buffer | null;
      origin: Origin;
    }[];
    return rows.map((r) => {
      const spec = JSON.parse(r.spec) as Record<string, unknown>;
      if (r.user_data !== null) spec['user_data'] = r.user_data;
      return { vm: vmSchema.parse(spec), origin: r.origin };
    });
  }

  /** Applies deletions and upserts, all in one transaction. */
  apply(change: BatchChange): void {
    const run = this.db.transaction((c: BatchChange) => {
      // Networks are deleted after the VMs are written: a VM may move out of a network deleted here.
      for (const id of c.deleteVms ?? []) this.stmt.deleteVm.run(id);
      for (const { network, origin } of c.networks ?? [])
        this.stmt.putNetwork.run({ id: network.id, spec: JSON.stringify(network), origin });
      const vms = c.vms ?? [];
      const half = Math.floor(vms.length / 2);
      vms.forEach(({ vm, origin }, i) => {
        if (i === half && vms.length >= 2 && this.midBatchHook !== undefined) this.midBatchHook(i, vms.length);
        this.stmt.putVm.run({
          id: vm.id,
          network: vm.network,
          ip: vm.ip,
          mac: vm.mac,
          spec: vmSpec(vm),
          user_data: vm.user_data ?? null,
          origin,
        });
      });
      for (const id of c.deleteNetworks ?? []) this.stmt.deleteNetwork.run(id);
      for (const [vm, value] of c.passwords ?? []) this.stmt.replacePassword.run(vm, value);
      for (const vm of c.clearPasswords ?? []) this.stmt.clearPassword.run(vm);
    });
    try {
      run(change);
    } catch (err) {
      throw new ImdsError('STORE_FAILED', `store write failed: ${(err as Error).message}`, { cause: err });
    }
  }

  loadPasswords(): Map<string, string> {
    const rows = this.db.prepare('SELECT vm, value FROM passwords').all() as { vm: string; value: string }[];
    return new Map(rows.map((r) => [r.vm, r.value]));
  }

  getPassword(vmId: string): string | undefined {
    const row = this.stmt.getPassword.get(vmId) as { value: string } | undefined;
    return row?.value;
  }

  /** Stores the password unless one is already set; returns false when one was. */
  setPasswordOnce(vmId: string, value: string): boolean {
    return this.stmt.setPassword.run(vmId, value).changes === 1;
  }

  /** Stores the password, replacing one already set (an operator's `vm password set --force`). */
  replacePassword(vmId: string, value: string): void {
    this.stmt.replacePassword.run(vmId, value);
  }

  clearPassword(vmId: string): boolean {
    return this.stmt.clearPassword.run(vmId).changes === 1;
  }

  /**
   * A consistent copy of the store in `dest` (an empty file: created by the caller with its mode),
   * taken with SQLite's online backup while the daemon goes on serving and writing.
   */
  backup(dest: string): Promise<void> {
    return backupInto(this.db, dest);
  }

  schemaVersion(): number {
    return this.db.pragma('user_version', { simple: true }) as number;
  }
}

/**
 * Brings the store to this imds's schema version. A store that has data (version 1 or more) is
 * copied first to `imds.sqlite.v<old>-<time>.bak` beside it (mode 0600), so a downgrade can restore it.
 */
function migrate(db: Database.Database, path: string, onBackup: OpenOptions['onMigrationBackup']): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > MIGRATIONS.length) {
    throw new ImdsError(
      'STORE_FAILED',
      `the store has schema version ${current}, newer than this imds knows (${MIGRATIONS.length}); upgrade imds`,
    );
  }
  if (current >= 1 && current < MIGRATIONS.length) {
    const backup = backupBeforeMigration(db, path, current);
    onBackup?.({ path: backup, from: current, to: MIGRATIONS.length });
  }
  // A migration may rebuild a table others refer to (SQLite's documented procedure): foreign keys
  // are off while it runs, and checked before its commit.
  db.pragma('foreign_keys = OFF');
  try {
    for (let v = current; v < MIGRATIONS.length; v++) {
      db.transaction(() => {
        db.exec(MIGRATIONS[v] as string);
        const broken = db.pragma('foreign_key_check') as unknown[];
        if (broken.length > 0) throw new Error(`migration ${v + 1} broke ${broken.length} foreign key reference(s)`);
        db.pragma(`user_version = ${v + 1}`);
      })();
    }
  } finally {
    db.pragma('foreign_keys = ON');
  }
}
