// The admin API's OpenAPI document, generated from the route schemas (docs/openapi.json is this,
// committed; test/unit/openapi.test.ts keeps the two equal).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../log.ts';
import { Metrics } from '../metrics.ts';
import { Stats } from '../stats.ts';
import { Inventory } from '../store/inventory.ts';
import { SqliteStore } from '../store/sqlite-store.ts';
import { buildAdminApp } from './admin-app.ts';

export async function openApiDocument(): Promise<unknown> {
  const dir = mkdtempSync(join(tmpdir(), 'imds-openapi-'));
  const store = SqliteStore.open(dir);
  try {
    const inventory = Inventory.open(store, { dhcpDomain: 'novalocal' });
    const app = await buildAdminApp({
      inventory,
      log: createLogger({ level: 'silent' }),
      metrics: new Metrics({
        stats: new Stats(),
        vmCount: () => 0,
        networkStates: () => [],
        dhcpServers: () => [],
        build: { dataPlane: 'native' },
      }),
      converge: () => Promise.resolve({ networks: [], removed: [], removalFailures: [], applied: new Map(), ms: 0 }),
      rotateTokenKey: () => undefined,
      configDrive: () => Promise.resolve(Buffer.alloc(0)),
      convergeNetwork: () => Promise.resolve({ networks: [], removed: [], removalFailures: [], applied: new Map(), ms: 0 }),
      statusOf: () => undefined,
      probe: () => Promise.reject(new Error('not available')),
      info: () => ({}),
    });
    const doc = app.swagger();
    await app.close();
    return doc;
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
