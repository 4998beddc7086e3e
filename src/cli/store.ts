// `imds store backup|restore`: the store as a file. A backup is taken by the running daemon (SQLite's
// online backup, consistent while it serves) and written here; with the daemon stopped, `--config`
// lets the CLI read the store itself. A restore needs the daemon stopped (like `imds down`).
import { join } from 'node:path';
import { Command } from '@commander-js/extra-typings';
import type { Config } from '../config.ts';
import { ImdsError } from '../errors.ts';
import { AdminClient, adminSocketOf, timeoutOf } from './client.ts';
import { emit, JSON_HELP, outputOption } from './output.ts';
import { checkOutput, writeSecretFile } from './write-file.ts';

const DEFAULT_CONFIG = '/etc/imds/imds.yaml';

async function loadConfigFile(path: string): Promise<Config> {
  const { loadConfig } = await import('../config.ts');
  return loadConfig(path);
}

export function storeCommand(): Command {
  const store = new Command('store').description('back up and restore the store (networks, VMs, passwords)');
  backupCommand(store);
  restoreCommand(store);
  return store;
}

/** How a backup is taken: through the daemon's admin socket, or from the store file when no daemon runs on it. */
async function backupSource(
  config: string | undefined,
  globals: { adminSocket?: string; timeout?: string },
): Promise<{ via: 'daemon'; client: AdminClient } | { via: 'file'; store: string }> {
  const timeout = timeoutOf(globals.timeout, true); // a large store takes a while
  if (config === undefined) return { via: 'daemon', client: new AdminClient(adminSocketOf(globals.adminSocket), timeout) };
  const cfg = await loadConfigFile(config);
  const { runningDaemon } = await import('../pidfile.ts');
  if (runningDaemon(cfg.state_dir) !== undefined)
    return { via: 'daemon', client: new AdminClient(globals.adminSocket ?? cfg.admin_socket, timeout) };
  return { via: 'file', store: join(cfg.state_dir, 'imds.sqlite') };
}

/** The online backup of a store file no daemon has open (the daemon is stopped). */
async function backupFromFile(store: string, tmp: string): Promise<void> {
  const { existsSync } = await import('node:fs');
  if (!existsSync(store)) throw new ImdsError('NOT_FOUND', `no store at ${store} (state_dir of the configuration)`, { field: '--config' });
  const { default: Database } = await import('better-sqlite3');
  const { backupInto } = await import('../store/store-files.ts');
  const db = new Database(store, { fileMustExist: true, readonly: true });
  try {
    await backupInto(db, tmp);
  } finally {
    db.close();
  }
}

function backupCommand(parent: Command): void {
  parent
    .command('backup')
    .description('write a consistent copy of the store (taken by the running daemon while it serves), mode 0600')
    .argument('<file>', 'where to write it; refused if it exists (unless --force); written atomically')
    .option('--force', 'replace FILE if it exists')
    .option('-c, --config <file>', "with the daemon stopped: read the store in this configuration's state_dir directly")
    .addOption(outputOption())
    .option('--json', JSON_HELP)
    .action(async (file, opts, cmd) => {
      const { validateStoreFile } = await import('../store/restore.ts');
      const source = await backupSource(opts.config, cmd.optsWithGlobals() as { adminSocket?: string; timeout?: string });
      checkOutput(file, { force: opts.force === true, field: 'file' });
      let summary: ReturnType<typeof validateStoreFile> | undefined;
      const fill =
        source.via === 'daemon' ? await source.client.download('/v1/store/backup') : (tmp: string) => backupFromFile(source.store, tmp);
      await writeSecretFile(file, fill, {
        force: opts.force === true,
        field: 'file',
        check: (tmp) => (summary = validateStoreFile(tmp, file)),
      });
      const s = summary as NonNullable<typeof summary>;
      const result = { file, via: source.via, ...s };
      emit(
        opts,
        result,
        () =>
          `store backed up to ${file} (schema version ${s.schema_version}: ${s.networks} networks, ${s.vms} VMs, ${s.passwords} passwords)`,
      );
    });
}

function restoreCommand(parent: Command): void {
  parent
    .command('restore')
    .description('replace the store with a backup (the daemon must be stopped); the replaced store is kept beside it')
    .argument('<file>', 'a backup written by `imds store backup` (or a copy of imds.sqlite)')
    .option('-c, --config <file>', "the daemon's configuration (its state_dir holds the store)", DEFAULT_CONFIG)
    .addOption(outputOption())
    .option('--json', JSON_HELP)
    .action(async (file, opts) => {
      const cfg = await loadConfigFile(opts.config);
      const { acquirePidFile } = await import('../pidfile.ts');
      // Held while the store is replaced: a daemon starting meanwhile refuses (DAEMON_RUNNING).
      let release: () => void;
      try {
        release = acquirePidFile(cfg.state_dir);
      } catch (err) {
        if (err instanceof ImdsError && err.code === 'DAEMON_RUNNING') {
          const pid = err.details?.['pid'];
          throw new ImdsError('DAEMON_RUNNING', `the daemon (pid ${String(pid)}) is running; stop it first (systemctl stop imds)`, {
            ...(err.details === undefined ? {} : { details: err.details }),
          });
        }
        throw err;
      }
      try {
        const { restoreStore } = await import('../store/restore.ts');
        const r = restoreStore(cfg.state_dir, file);
        emit(
          opts,
          r,
          () =>
            `restored ${file} into ${r.store} (schema version ${r.schema_version}: ${r.networks} networks, ${r.vms} VMs, ${r.passwords} passwords)\n` +
            (r.previous === undefined ? 'there was no store before\n' : `the replaced store is kept as ${r.previous}\n`) +
            'start the daemon (systemctl start imds): it builds the restored networks and serves the restored VMs',
        );
      } finally {
        release();
      }
    });
}
