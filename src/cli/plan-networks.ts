// The networks `imds plan` compares the kernel with: what the daemon serves, i.e. the store's
// networks (made through the CLI or the API, kept in state_dir) with the configuration file's seeded
// over them as the daemon does at start (src/daemon/seed.ts): the file's networks added or replaced;
// under `seed_mode: authoritative`, networks the file once seeded and dropped since are gone.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ImdsError } from '../errors.ts';
import { networkSchema, type Network } from '../model/schema.ts';

export interface StoredNetworkRow {
  network: Network;
  origin: 'config' | 'api' | 'registry';
}

/** The networks the daemon would serve, from the store's rows and the file (pure). */
export function servedNetworks(
  stored: readonly StoredNetworkRow[],
  file: readonly Network[],
  seedMode: 'merge' | 'authoritative',
): Network[] {
  const inFile = new Set(file.map((n) => n.id));
  const kept = stored.filter((s) => !inFile.has(s.network.id) && !(seedMode === 'authoritative' && s.origin === 'config'));
  return [...kept.map((s) => s.network), ...file];
}

/** The store's networks, read-only (the daemon may be running; nothing is migrated or written); none without a store. */
export async function readStoredNetworks(stateDir: string): Promise<StoredNetworkRow[]> {
  const path = join(stateDir, 'imds.sqlite');
  if (!existsSync(path)) return [];
  const { default: Database } = await import('better-sqlite3');
  try {
    const db = new Database(path, { readonly: true, fileMustExist: true });
    try {
      const rows = db.prepare('SELECT spec, origin FROM networks ORDER BY rowid').all() as {
        spec: string;
        origin: 'config' | 'api' | 'registry';
      }[];
      return rows.map((r) => ({ network: networkSchema.parse(JSON.parse(r.spec)), origin: r.origin }));
    } finally {
      db.close();
    }
  } catch (err) {
    throw new ImdsError('STORE_FAILED', `cannot read the networks of the store ${path}: ${(err as Error).message}`, { cause: err });
  }
}
