// GET /v1/doctor through Fastify's inject: the report's exact shape, its subjects (a VM, a network,
// every network) and the errors for unknown or doubled subjects. The kernel reads go to a runner
// that fails every command as for a missing device, and a namespace prefix no namespace has, so the hops fail: what is
// checked here is the route, not the judging (test/unit/doctor-hops.test.ts).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { createLogger } from '../../src/log.ts';
import { Metrics } from '../../src/metrics.ts';
import { Stats } from '../../src/stats.ts';
import { buildAdminApp } from '../../src/server/admin-app.ts';
import { Inventory } from '../../src/store/inventory.ts';
import { SqliteStore } from '../../src/store/sqlite-store.ts';

const VM = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';

interface Report {
  ok: boolean;
  hops: { name: string; ok: boolean; detail: string; fix: string | null }[];
}

describe('admin API: doctor', () => {
  let app: FastifyInstance;
  let store: SqliteStore;
  let dir: string;
  const commands: string[][] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'imds-doctor-api-'));
    store = SqliteStore.open(dir);
    const inventory = Inventory.open(store, { dhcpDomain: 'novalocal' });
    inventory.createNetwork({ id: 'dapi1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2', bridge: 'imdsdoctorx0' }, 'api');
    inventory.createVm({ id: VM, network: 'dapi1', ip: '198.51.100.10', mac: '52:54:00:00:00:0a', hostname: 'alpha' }, 'api');
    const stats = new Stats();
    const unused = () => Promise.reject(new Error('not in this test'));
    app = await buildAdminApp({
      inventory,
      log: createLogger({ level: 'silent' }),
      metrics: new Metrics({ stats, vmCount: () => 1, networkStates: () => [], dhcpServers: () => [], build: { dataPlane: 'native' } }),
      converge: unused,
      convergeNetwork: unused,
      statusOf: (network) => ({ network, state: 'serving', reason: undefined, changed: 0 }),
      probe: unused,
      rotateTokenKey: () => undefined,
      configDrive: unused,
      info: () => ({}),
      doctor: {
        runner: {
          run: (argv) => {
            commands.push([...argv]);
            return Promise.resolve({ argv, code: 1, stdout: '', stderr: 'Device "imdsdoctorx0" does not exist.', ms: 0 });
          },
        },
        config: () => ({
          namespace_prefix: `imdsdoctorapi-${process.pid}-`,
          listen_port: 8775,
          dhcp_dir: dir,
          rate_limit_per_second: 20,
          rate_limit_burst: 300,
        }),
        statusOf: (network) => ({ network, state: 'serving', reason: undefined, changed: 0 }),
        dhcpStatusOf: () => undefined,
        listenerFd: () => undefined,
        contactOf: () => ({ requests: 3, firstSeen: Date.now() - 5000, lastSeen: Date.now() - 1000, lastStatus: 200 }),
        startedAt: Date.now() - 60_000,
      },
    });
  });
  after(async () => {
    await app.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("answers one VM's report: {ok, hops: [{name, ok, detail, fix}]} and nothing else, read from the kernel", async () => {
    const r = await app.inject({ method: 'GET', url: `/v1/doctor?vm=${VM.toUpperCase()}` });
    assert.equal(r.statusCode, 200, r.body);
    const report = r.json<Report>();
    assert.deepEqual(Object.keys(report), ['ok', 'hops']);
    assert.equal(report.ok, false);
    for (const h of report.hops) assert.deepEqual(Object.keys(h), ['name', 'ok', 'detail', 'fix']);
    assert.equal(report.hops[0]?.name, 'vm');
    const byName = new Map(report.hops.map((h) => [h.name, h]));
    assert.match(byName.get('bridge')?.detail ?? '', /bridge imdsdoctorx0 does not exist/);
    assert.match(byName.get('namespace')?.detail ?? '', /does not exist/);
    assert.equal(byName.get('requests')?.ok, true);
    assert.ok(
      commands.some((c) => c.join(' ') === 'bridge -j fdb show br imdsdoctorx0'),
      JSON.stringify(commands),
    );
  });

  it("answers one network's hops, and every network's with the network in each name", async () => {
    const one = (await app.inject({ method: 'GET', url: '/v1/doctor?network=dapi1' })).json<Report>();
    assert.deepEqual(
      one.hops.map((h) => h.name),
      ['network', 'bridge', 'interception', 'namespace', 'veth', 'addresses', 'nft-table', 'guard', 'listener'],
    );
    const all = (await app.inject({ method: 'GET', url: '/v1/doctor' })).json<Report>();
    assert.deepEqual(
      all.hops.map((h) => h.name),
      one.hops.map((h) => `dapi1/${h.name}`),
    );
  });

  it('refuses an unknown VM or network (404) and both at once (400)', async () => {
    const vm = await app.inject({ method: 'GET', url: '/v1/doctor?vm=0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e' });
    assert.equal(vm.statusCode, 404);
    assert.equal(vm.json<{ code: string }>().code, 'NOT_FOUND');
    assert.equal((await app.inject({ method: 'GET', url: '/v1/doctor?network=nope' })).statusCode, 404);
    const both = await app.inject({ method: 'GET', url: `/v1/doctor?vm=${VM}&network=dapi1` });
    assert.equal(both.statusCode, 400);
    assert.deepEqual(both.json<{ code: string; field: string }>().code, 'VALIDATION_FAILED');
  });
});
