// The configuration file's networks and VMs go into the store as a batch of origin `config` (at
// start and on reload): added or updated; with `seed_mode: authoritative`, config-origin records
// the file dropped are pruned. Records made through the API are never touched by the file.
import type { Config } from '../config.ts';
import { ImdsError, isImdsError } from '../errors.ts';
import type { Inventory } from '../store/inventory.ts';

export function seed(inventory: Inventory, cfg: Config): void {
  try {
    inventory.applyBatch(
      { networks: cfg.networks, vms: cfg.vms },
      { origin: 'config', ...(cfg.seed_mode === 'authoritative' ? { pruneOrigin: 'config' as const } : {}) },
    );
  } catch (err) {
    if (isImdsError(err, 'VALIDATION_FAILED')) {
      throw new ImdsError('CONFIG_INVALID', `${cfg.path}: the file does not fit the store's networks and VMs: ${err.message}`, {
        ...(err.field === undefined ? {} : { field: err.field }),
        ...(err.details === undefined ? {} : { details: err.details }),
      });
    }
    throw err;
  }
}
