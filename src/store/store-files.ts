// Copies of the store as files: the copy taken before a schema migration, the online backup the
// daemon takes while it serves, and the names they get. Every copy is one self-contained SQLite
// file (rollback journal, no -wal beside it) of mode 0600: the store holds passwords and user data.
import { closeSync, openSync, rmSync } from 'node:fs';
import Database from 'better-sqlite3';
import { ImdsError } from '../errors.ts';

/** `2026-12-02T22:25:33.123Z` -> `20261202T222533Z`: file names sort by time. */
export function compactTime(date: Date): string {
  return date
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
}

/**
 * Creates `<base>.bak` (or `<base>-2.bak`, … when taken) empty with mode 0600 and returns its path:
 * never an existing file, so two copies in the same second do not overwrite each other.
 */
export function createBackupFile(base: string): string {
  for (let n = 1; ; n++) {
    const path = n === 1 ? `${base}.bak` : `${base}-${n}.bak`;
    try {
      closeSync(openSync(path, 'wx', 0o600));
      return path;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || n >= 100) throw err;
    }
  }
}

/** The file a store is copied to before a migration from `version`: `imds.sqlite.v1-20261202T222533Z.bak`. */
export function migrationBackupBase(storePath: string, version: number, date = new Date()): string {
  return `${storePath}.v${version}-${compactTime(date)}`;
}

/** Switches a copy to a rollback journal, so it is one file wherever it is copied to. */
function selfContained(path: string): void {
  const db = new Database(path);
  try {
    db.pragma('journal_mode = DELETE');
  } finally {
    db.close();
  }
}

/** Copies the store (at `version`, before migrating) beside it; returns the copy's path. */
export function backupBeforeMigration(db: Database.Database, storePath: string, version: number): string {
  let path: string | undefined;
  try {
    path = createBackupFile(migrationBackupBase(storePath, version));
    db.prepare('VACUUM INTO ?').run(path);
    selfContained(path);
    return path;
  } catch (err) {
    if (path !== undefined) rmSync(path, { force: true });
    throw new ImdsError(
      'STORE_FAILED',
      `cannot copy the store (schema version ${version}) before migrating it, so it was not migrated: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/** SQLite's online backup of `db` into `dest` (an empty file the caller made): consistent while `db` is written. */
export async function backupInto(db: Database.Database, dest: string): Promise<void> {
  try {
    await db.backup(dest);
    selfContained(dest);
  } catch (err) {
    throw new ImdsError('STORE_FAILED', `store backup failed: ${(err as Error).message}`, { cause: err });
  }
}
