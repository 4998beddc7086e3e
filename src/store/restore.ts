// `imds store restore`: a store file checked (an imds store, intact, of a schema this imds knows,
// every record valid), then put in place of the daemon's store while the daemon is stopped. The
// store it replaces is kept beside it (`imds.sqlite.before-restore-<time>.bak`). Nothing is changed
// unless every check passed; a failure half-way puts the old store back.
import { chmodSync, copyFileSync, existsSync, fsyncSync, openSync, closeSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import { ImdsError } from '../errors.ts';
import { networkSchema, vmSchema, type Network } from '../model/schema.ts';
import { checkVmSet, formatPath, type LabelledVm } from '../model/validate.ts';
import { compactTime, createBackupFile } from './store-files.ts';
import { IMDS_APPLICATION_ID, SCHEMA_VERSION } from './sqlite-store.ts';

export interface StoreSummary {
  schema_version: number;
  networks: number;
  vms: number;
  passwords: number;
}

function invalid(file: string, reason: string, cause?: unknown): ImdsError {
  return new ImdsError('STORE_INVALID', `${file}: ${reason}`, { field: 'file', ...(cause === undefined ? {} : { cause }) });
}

/** Opens `file` read-only, or explains why it is not an SQLite database. */
function openReadOnly(file: string, label: string): Database.Database {
  try {
    const db = new Database(file, { readonly: true, fileMustExist: true });
    db.pragma('schema_version'); // reads the header: fails on a file that is not SQLite
    return db;
  } catch (err) {
    throw invalid(label, `not an SQLite database (${(err as Error).message})`, err);
  }
}

/** The schema version, if the file is an imds store this imds can open. */
function checkHeader(db: Database.Database, file: string): number {
  const version = db.pragma('user_version', { simple: true }) as number;
  const appId = db.pragma('application_id', { simple: true }) as number;
  const tables = new Set(
    (db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'").all() as { name: string }[]).map((r) => r.name),
  );
  const isImds =
    appId === IMDS_APPLICATION_ID || (appId === 0 && version === 1 && ['networks', 'vms', 'passwords'].every((t) => tables.has(t)));
  if (!isImds) throw invalid(file, `not an imds store (application_id ${appId}, schema version ${version})`);
  if (version > SCHEMA_VERSION)
    throw invalid(file, `schema version ${version} is newer than this imds knows (${SCHEMA_VERSION}); restore it with a newer imds`);
  const check = db.prepare('PRAGMA integrity_check').pluck().all() as string[];
  if (check.length !== 1 || check[0] !== 'ok') throw invalid(file, `integrity check failed: ${check.slice(0, 5).join('; ')}`);
  return version;
}

/** Every record parsed with the model's schemas and the VMs checked together, as the daemon would load them. */
function checkRecords(db: Database.Database, file: string): Omit<StoreSummary, 'schema_version'> {
  const networks: Network[] = [];
  const labelled: LabelledVm[] = [];
  const parse = <T>(what: string, run: () => T): T => {
    try {
      return run();
    } catch (err) {
      throw invalid(file, `${what} is not valid: ${(err as Error).message}`, err);
    }
  };
  for (const row of db.prepare('SELECT id, spec FROM networks').all() as { id: string; spec: string }[])
    networks.push(parse(`network "${row.id}"`, () => networkSchema.parse(JSON.parse(row.spec))));
  const vmRows = db.prepare('SELECT id, spec, user_data FROM vms').all() as { id: string; spec: string; user_data: Buffer | null }[];
  for (const row of vmRows) {
    const vm = parse(`VM ${row.id}`, () => {
      const spec = JSON.parse(row.spec) as Record<string, unknown>;
      if (row.user_data !== null) spec['user_data'] = row.user_data;
      return vmSchema.parse(spec);
    });
    labelled.push({ vm, path: ['VM', vm.id], label: `VM ${vm.id}` });
  }
  const problems = checkVmSet(networks, labelled);
  const first = problems[0];
  if (first !== undefined) throw invalid(file, `its VMs do not fit its networks: ${formatPath(first.path)}: ${first.message}`);
  const passwords = db.prepare('SELECT count(*) FROM passwords').pluck().get() as number;
  return { networks: networks.length, vms: labelled.length, passwords };
}

/** Checks that `file` is an intact imds store this imds can serve from; what it holds. */
export function validateStoreFile(file: string, label = file): StoreSummary {
  if (!existsSync(file)) throw invalid(label, 'no such file');
  const db = openReadOnly(file, label);
  try {
    const version = checkHeader(db, label);
    return { schema_version: version, ...checkRecords(db, label) };
  } finally {
    db.close();
  }
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Moves the current store aside as one file (its WAL checkpointed into it first); returns where,
 * or undefined when there was none. A store SQLite cannot open is moved as it is, with its -wal.
 */
function moveAside(store: string, date: Date): string | undefined {
  if (!existsSync(store)) return undefined;
  try {
    const db = new Database(store, { fileMustExist: true });
    db.pragma('wal_checkpoint(TRUNCATE)');
    db.pragma('journal_mode = DELETE');
    db.close();
  } catch {
    /* moved as it is below, -wal included */
  }
  const aside = createBackupFile(`${store}.before-restore-${compactTime(date)}`);
  renameSync(store, aside);
  if (existsSync(`${store}-wal`)) renameSync(`${store}-wal`, `${aside}-wal`);
  rmSync(`${store}-shm`, { force: true });
  return aside;
}

export interface RestoreResult extends StoreSummary {
  store: string;
  /** Where the store that was replaced is kept; absent when there was none. */
  previous?: string;
}

/** Puts `file` in place of `<stateDir>/imds.sqlite` (the daemon must be stopped: the caller holds the pid file). */
export function restoreStore(stateDir: string, file: string, date = new Date()): RestoreResult {
  if (!existsSync(file)) throw invalid(file, 'no such file');
  if (existsSync(`${file}-wal`) && statSync(`${file}-wal`).size > 0)
    throw invalid(
      file,
      `${file}-wal is beside it: the file is open in a running SQLite (or was not closed), and a copy of it alone may miss recent ` +
        `changes; take a backup with \`imds store backup\` instead`,
    );
  const store = join(stateDir, 'imds.sqlite');
  const incoming = `${store}.restore-${process.pid}.tmp`;
  try {
    closeSync(openSync(incoming, 'w', 0o600));
    copyFileSync(file, incoming);
    chmodSync(incoming, 0o600); // copyFileSync gives the copy the source's mode; the store holds secrets
    const fd = openSync(incoming, 'r+');
    fsyncSync(fd);
    closeSync(fd);
    const summary = validateStoreFile(incoming, file); // the copy itself, not a file that might change meanwhile
    const previous = moveAside(store, date);
    try {
      renameSync(incoming, store);
      fsyncDir(dirname(store));
    } catch (err) {
      if (previous !== undefined) renameSync(previous, store);
      throw err;
    }
    return { store, ...summary, ...(previous === undefined ? {} : { previous }) };
  } catch (err) {
    if (err instanceof ImdsError) throw err;
    throw new ImdsError('STORE_FAILED', `cannot restore ${file} into ${store}: ${(err as Error).message}`, { cause: err });
  } finally {
    for (const f of [incoming, `${incoming}-wal`, `${incoming}-shm`]) rmSync(f, { force: true });
  }
}
