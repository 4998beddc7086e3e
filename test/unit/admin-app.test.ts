// The admin API through Fastify's inject, over a real SQLite store (no kernel: converge is a stub).
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

/** The bodies this test reads (the admin API's JSON; the schemas are in src/server/admin/). */
interface ErrorJson {
  code: string;
  message: string;
  field?: string;
}
interface NetworkJson {
  id: string;
  bridge: string;
  state: string;
  mtu?: number;
  domain?: string;
}
interface VmJson {
  id: string;
  user_data_bytes: number;
  user_data_b64?: string;
  meta?: Record<string, string>;
}
interface BatchJson {
  vms: { created: string[] };
}

describe('admin API', () => {
  const degraded = new Set<string>();
  let reloadRefusal: string | undefined;
  let app: FastifyInstance;
  let store: SqliteStore;
  let dir: string;
  let rotations = 0;
  let converged = 0;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'imds-admin-'));
    store = SqliteStore.open(dir);
    const inventory = Inventory.open(store, { dhcpDomain: 'novalocal' });
    const stats = new Stats();
    const metrics = new Metrics({
      stats,
      vmCount: () => inventory.vmCount(),
      networkStates: () => inventory.networkList().map((n) => ({ network: n.id, state: 'serving' })),
      dhcpServers: () => [],
      build: { dataPlane: 'native' },
    });
    stats.observeRequest('net1', 200, 0.0004);
    stats.reconcileFailed('net1');
    stats.reconcileDuration.observe(0.02);
    app = await buildAdminApp({
      inventory,
      log: createLogger({ level: 'silent' }),
      metrics,
      converge: () => {
        converged++;
        return Promise.resolve({
          networks: inventory.networkList().map((n) => ({ network: n.id, state: 'serving' as const, reason: undefined, changed: 0 })),
          removed: [],
          removalFailures: [],
          applied: new Map(),
          ms: 1,
        });
      },
      convergeNetwork: (id) => {
        converged++;
        return Promise.resolve({
          networks: [{ network: id, state: 'serving' as const, reason: undefined, changed: 0 }],
          removed: [],
          removalFailures: [],
          applied: new Map(),
          ms: 1,
        });
      },
      statusOf: (network) =>
        degraded.has(network)
          ? { network, state: 'degraded', reason: 'DHCP server restarting', changed: 0 }
          : { network, state: 'serving', reason: undefined, changed: 0 },
      reload: () => Promise.resolve(reloadRefusal),
      probe: () => Promise.reject(new Error('no kernel here')),
      rotateTokenKey: () => rotations++,
      configDrive: (id, format) => Promise.resolve(Buffer.from(`image of ${id} as ${format}`)),
      info: () => ({ version: 'test' }),
    });
  });
  after(async () => {
    await app.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('creates a network (converging the kernel) and lists it', async () => {
    const r = await app.inject({
      method: 'POST',
      url: '/v1/networks',
      payload: { id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' },
    });
    assert.equal(r.statusCode, 201, r.body);
    assert.equal(r.json<NetworkJson>().bridge, 'imdsb-net1');
    assert.equal(r.json<NetworkJson>().state, 'serving');
    assert.equal(converged, 1);
    const list = await app.inject({ method: 'GET', url: '/v1/networks' });
    assert.deepEqual(
      list.json<NetworkJson[]>().map((n) => n.id),
      ['net1'],
    );
  });

  it('patches a network: null clears a field, an absent one is kept', async () => {
    const set = await app.inject({ method: 'PATCH', url: '/v1/networks/net1', payload: { mtu: 1400, domain: 'example.test' } });
    assert.equal(set.statusCode, 200, set.body);
    assert.deepEqual([set.json<NetworkJson>().mtu, set.json<NetworkJson>().domain], [1400, 'example.test']);
    const cleared = await app.inject({ method: 'PATCH', url: '/v1/networks/net1', payload: { mtu: null } });
    assert.equal(cleared.statusCode, 200, cleared.body);
    assert.deepEqual([cleared.json<NetworkJson>().mtu, cleared.json<NetworkJson>().domain], [undefined, 'example.test']);
    const required = await app.inject({ method: 'PATCH', url: '/v1/networks/net1', payload: { cidr: null } });
    assert.deepEqual([required.statusCode, required.json<ErrorJson>().field], [400, 'cidr']);
    const guarded = await app.inject({ method: 'PATCH', url: '/v1/networks/net1?if_revision=3', payload: { mtu: 1400 } });
    assert.deepEqual([guarded.statusCode, guarded.json<ErrorJson>().field], [400, 'if_revision'], 'no revisions without a registry');
  });

  it('answers validation errors as {code, message, field}', async () => {
    const bad = await app.inject({
      method: 'POST',
      url: '/v1/networks',
      payload: { id: 'net2', cidr: '198.51.100.0/24', service_ip: 'x' },
    });
    assert.equal(bad.statusCode, 400);
    assert.equal(bad.json<ErrorJson>().code, 'VALIDATION_FAILED');
    assert.equal(bad.json<ErrorJson>().field, 'service_ip');
    const unknown = await app.inject({
      method: 'POST',
      url: '/v1/networks',
      payload: { id: 'net2', cidr: '198.51.100.0/24', service_ip: '198.51.100.2', colour: 'red' },
    });
    assert.equal(unknown.statusCode, 400);
    assert.match(unknown.json<ErrorJson>().message, /colour/);
    const notJson = await app.inject({
      method: 'POST',
      url: '/v1/networks',
      headers: { 'content-type': 'application/json' },
      payload: '{',
    });
    assert.equal(notJson.statusCode, 400);
    assert.equal(notJson.json<ErrorJson>().code, 'VALIDATION_FAILED');
    const missing = await app.inject({ method: 'GET', url: '/v1/vms/00000000-0000-4000-8000-000000000000' });
    assert.deepEqual([missing.statusCode, missing.json<ErrorJson>().code], [404, 'NOT_FOUND']);
    const route = await app.inject({ method: 'GET', url: '/v2/nothing' });
    assert.deepEqual([route.statusCode, route.json<ErrorJson>().code], [404, 'NOT_FOUND']);
  });

  it('lists the first 20 problems of a body, then counts the rest', async () => {
    const vms = Array.from({ length: 25 }, (_, i) => ({ id: `v${i}`, network: 'net1', ip: 'x', mac: 'y', hostname: 'h' }));
    const bad = await app.inject({ method: 'POST', url: '/v1/import', payload: { vms } });
    assert.deepEqual([bad.statusCode, bad.json<ErrorJson>().field], [400, 'vms[0].id']);
    const problems = bad.json<ErrorJson>().message.split('; ');
    assert.equal(problems.length, 21);
    assert.equal(problems.at(-1), '… and 55 more', '25 VMs with 3 problems each');
  });

  it('creates, shows, patches (null clears) and deletes a VM with binary user data', async () => {
    const created = await app.inject({
      method: 'POST',
      url: '/v1/vms',
      payload: {
        id: VM,
        network: 'net1',
        ip: '198.51.100.10',
        mac: '52:54:00:12:34:56',
        hostname: 'vm1',
        user_data_b64: Buffer.from([0x1f, 0x8b, 8, 0]).toString('base64'),
        meta: { a: 'b' },
      },
    });
    assert.equal(created.statusCode, 201, created.body);
    assert.equal(created.json<VmJson>().user_data_bytes, 4);
    assert.equal(created.json<VmJson>().user_data_b64, undefined, 'no user data in create/list responses');
    const shown = await app.inject({ method: 'GET', url: `/v1/vms/${VM}` });
    assert.deepEqual([...Buffer.from(shown.json<VmJson>().user_data_b64 ?? '', 'base64')], [0x1f, 0x8b, 8, 0]);
    const both = await app.inject({ method: 'PATCH', url: `/v1/vms/${VM}`, payload: { user_data: 'x', user_data_b64: 'eA==' } });
    assert.deepEqual([both.statusCode, both.json<ErrorJson>().field], [400, 'user_data']);
    const patched = await app.inject({ method: 'PATCH', url: `/v1/vms/${VM}`, payload: { meta: null, user_data: 'text' } });
    assert.equal(patched.statusCode, 200, patched.body);
    assert.equal(patched.json<VmJson>().meta, undefined);
    assert.equal(patched.json<VmJson>().user_data_bytes, 4);
    const clash = await app.inject({
      method: 'POST',
      url: '/v1/vms',
      payload: {
        id: '2b4e28ba-2fa1-11d2-883f-0016d3cca427',
        network: 'net1',
        ip: '198.51.100.10',
        mac: '52:54:00:12:34:57',
        hostname: 'vm2',
      },
    });
    assert.deepEqual([clash.statusCode, clash.json<ErrorJson>().code, clash.json<ErrorJson>().field], [400, 'VALIDATION_FAILED', 'ip']);
  });

  it('refuses to delete a non-empty network unless forced', async () => {
    const refused = await app.inject({ method: 'DELETE', url: '/v1/networks/net1' });
    assert.deepEqual([refused.statusCode, refused.json<ErrorJson>().code], [409, 'NETWORK_NOT_EMPTY']);
  });

  it('imports all or nothing', async () => {
    const vms = [
      { id: '00000000-0000-4000-8000-000000000001', network: 'net1', ip: '198.51.100.21', mac: '52:54:00:00:00:21', hostname: 'a' },
      { id: '00000000-0000-4000-8000-000000000002', network: 'net1', ip: '198.51.100.21', mac: '52:54:00:00:00:22', hostname: 'b' },
    ];
    const bad = await app.inject({ method: 'POST', url: '/v1/import', payload: { vms } });
    assert.equal(bad.statusCode, 400);
    assert.equal(bad.json<ErrorJson>().field, 'vms[1].ip');
    assert.equal((await app.inject({ method: 'GET', url: '/v1/vms' })).json<VmJson[]>().length, 1);
    const good = await app.inject({ method: 'POST', url: '/v1/import', payload: { vms: [vms[0], { ...vms[1], ip: '198.51.100.22' }] } });
    assert.equal(good.statusCode, 200, good.body);
    assert.equal(good.json<BatchJson>().vms.created.length, 2);
  });

  it('reads and clears passwords', async () => {
    const r = await app.inject({ method: 'GET', url: `/v1/vms/${VM}/password` });
    assert.deepEqual(r.json(), { password: '' });
    const cleared = await app.inject({ method: 'DELETE', url: `/v1/vms/${VM}/password` });
    assert.equal(cleared.statusCode, 204);
  });

  it('serves health, Prometheus metrics and the OpenAPI document', async () => {
    const health = await app.inject({ method: 'GET', url: '/v1/health' });
    assert.equal(health.statusCode, 200);
    assert.deepEqual(health.json(), { status: 'ok', networks: { serving: 1, degraded: 0 }, vms: 3 });
    degraded.add('net1');
    const sick = await app.inject({ method: 'GET', url: '/v1/health' });
    degraded.clear();
    assert.equal(sick.statusCode, 503, 'a degraded network makes the daemon unhealthy');
    assert.deepEqual(sick.json(), { status: 'degraded', networks: { serving: 0, degraded: 1 }, vms: 3 });
    const metrics = await app.inject({ method: 'GET', url: '/metrics' });
    assert.match(metrics.headers['content-type'] as string, /^text\/plain/);
    assert.match(metrics.body, /imds_requests_total\{network="net1",status="200"\} 1/);
    assert.match(metrics.body, /imds_vms 3/);
    assert.match(metrics.body, /imds_networks\{state="serving"\} 1/);
    assert.match(metrics.body, /imds_request_duration_seconds_bucket\{network="net1",le="0\.0005"\} 1/);
    assert.match(metrics.body, /imds_request_duration_seconds_bucket\{network="net1",le="0\.00025"\} 0/);
    assert.match(metrics.body, /imds_request_duration_seconds_count\{network="net1"\} 1/);
    assert.match(metrics.body, /imds_reconcile_errors_total\{network="net1"\} 1/);
    assert.match(metrics.body, /imds_reconcile_duration_seconds_bucket\{le="0\.025"\} 1/);
    assert.match(metrics.body, /# TYPE imds_request_duration_seconds histogram/);
    const doc = await app.inject({ method: 'GET', url: '/openapi.json' });
    assert.equal(doc.json<{ info: { title: string } }>().info.title, 'imds admin API');
  });

  it('rotates the token key on request', async () => {
    const r = await app.inject({ method: 'POST', url: '/v1/token-key/rotate' });
    assert.equal(r.statusCode, 200);
    assert.match(r.json<{ rotated_at: string }>().rotated_at, /^\d{4}-\d\d-\d\dT/);
    assert.equal(rotations, 1);
  });

  it('reloads through the API and answers with the verdict', async () => {
    reloadRefusal = 'configuration invalid; keeping the running one: networks[0].cidr: bad';
    const refused = await app.inject({ method: 'POST', url: '/v1/reload' });
    assert.equal(refused.statusCode, 400);
    assert.deepEqual(refused.json<{ code: string; message: string }>().code, 'CONFIG_INVALID');
    assert.match(refused.json<{ message: string }>().message, /^reload rejected: configuration invalid.*networks\[0\]\.cidr: bad$/);
    reloadRefusal = undefined;
    const applied = await app.inject({ method: 'POST', url: '/v1/reload' });
    assert.deepEqual([applied.statusCode, applied.json()], [200, { reloaded: true }]);
  });
});
