// `imds plan` on a host managed through the CLI: the networks it compares the kernel with are the
// store's with the file's seeded over them (as the daemon's seed does), read from a real store.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { readStoredNetworks, servedNetworks, type StoredNetworkRow } from '../../src/cli/plan-networks.ts';
import { networkSchema } from '../../src/model/schema.ts';
import { SqliteStore } from '../../src/store/sqlite-store.ts';

const net = (id: string, third: number) => networkSchema.parse({ id, cidr: `198.51.${third}.0/24`, service_ip: `198.51.${third}.2` });

describe('servedNetworks', () => {
  const stored: StoredNetworkRow[] = [
    { network: net('api1', 100), origin: 'api' },
    { network: net('cfg1', 101), origin: 'config' },
    { network: net('cfg2', 102), origin: 'config' },
  ];
  const file = [networkSchema.parse({ id: 'cfg1', cidr: '198.51.101.0/24', service_ip: '198.51.101.3' }), net('new1', 103)];

  it('merge: the store keeps what the file does not name; the file wins for the ids it names', () => {
    const served = servedNetworks(stored, file, 'merge');
    assert.deepEqual(served.map((n) => n.id).sort(), ['api1', 'cfg1', 'cfg2', 'new1']);
    assert.equal(served.find((n) => n.id === 'cfg1')?.service_ip, '198.51.101.3');
  });

  it("authoritative: networks the file seeded and dropped are gone; the API's stay", () => {
    assert.deepEqual(
      servedNetworks(stored, file, 'authoritative')
        .map((n) => n.id)
        .sort(),
      ['api1', 'cfg1', 'new1'],
    );
  });
});

describe('readStoredNetworks', () => {
  const dir = mkdtempSync(join(tmpdir(), 'imds-plan-store-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reads the networks of a store, with their origin; none without a store', async () => {
    assert.deepEqual(await readStoredNetworks(join(dir, 'absent')), []);
    const store = SqliteStore.open(dir);
    store.apply({
      networks: [
        { network: net('api1', 100), origin: 'api' },
        { network: net('cfg1', 101), origin: 'config' },
      ],
    });
    const rows = await readStoredNetworks(dir); // while the store is open, as with a running daemon
    store.close();
    assert.deepEqual(
      rows.map((r) => [r.network.id, r.origin, r.network.cidr]),
      [
        ['api1', 'api', '198.51.100.0/24'],
        ['cfg1', 'config', '198.51.101.0/24'],
      ],
    );
  });
});
