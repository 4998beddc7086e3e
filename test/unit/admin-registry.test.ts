// The admin API with a registry: Fastify's inject, the registry writer and sync against the
// in-memory FakeEtcd (test/helpers/fake-etcd.ts: unit tests only), a real Inventory (no kernel).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { createLogger } from '../../src/log.ts';
import { Metrics } from '../../src/metrics.ts';
import { decodeVm, encodeHost, registryKeys } from '../../src/registry/layout.ts';
import { RegistrySync } from '../../src/registry/sync.ts';
import { RegistryWriter } from '../../src/registry/writer.ts';
import { buildAdminApp } from '../../src/server/admin-app.ts';
import { Stats } from '../../src/stats.ts';
import { Inventory } from '../../src/store/inventory.ts';
import { SqliteStore } from '../../src/store/sqlite-store.ts';
import { FakeEtcd, settle } from '../helpers/fake-etcd.ts';

const VM = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const VM2 = '2b4e28ba-2fa1-11d2-883f-0016d3cca427';
const keys = registryKeys('/imds/');

describe('admin API with a registry', () => {
  let app: FastifyInstance;
  let dir: string;
  let store: SqliteStore;
  let inventory: Inventory;
  let sync: RegistrySync;
  const etcd = new FakeEtcd();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'imds-admin-registry-'));
    store = SqliteStore.open(dir);
    inventory = Inventory.open(store, { dhcpDomain: 'novalocal' });
    await etcd.put(keys.host('hv2'), encodeHost({ host_id: 'hv2', version: '0.0.0', started_at: '2026-01-01T00:00:00.000Z' }));
    const log = createLogger({ level: 'silent' });
    sync = new RegistrySync({ etcd: () => Promise.resolve(etcd), prefix: '/imds/', hostId: 'hv1', target: inventory, log });
    await sync.start();
    const writer = new RegistryWriter({ etcd: () => Promise.resolve(etcd), keys, sync, hostId: 'hv1' });
    const stats = new Stats();
    const vmRefs = { byId: (id: string) => sync.state.vms.get(id)?.vm, all: () => [...sync.state.vms.values()].map((v) => v.vm) };
    const registry = {
      hostId: 'hv1',
      writer,
      status: () => sync.status(),
      vmRefs,
      hostOf: (vmId: string) => sync.state.vms.get(vmId)?.host,
      passwords: { cancel: () => false },
      revisionOf: (kind: 'network' | 'vm', id: string) => sync.state.modRevisions.get(kind === 'vm' ? keys.vm(id) : keys.network(id)),
    };
    const metrics = new Metrics({
      stats,
      vmCount: () => inventory.vmCount(),
      networkStates: () => [],
      dhcpServers: () => [],
      build: { dataPlane: 'native' },
      registry: () => sync.status(),
    });
    const summary = () => Promise.resolve({ networks: [], removed: [], removalFailures: [], applied: new Map(), ms: 1 });
    app = await buildAdminApp({
      inventory,
      log,
      metrics,
      converge: summary,
      convergeNetwork: summary,
      statusOf: (network) => ({ network, state: 'serving', reason: undefined, changed: 0 }),
      probe: () => Promise.reject(new Error('no kernel here')),
      rotateTokenKey: () => undefined,
      configDrive: () => Promise.reject(new Error('no drive here')),
      info: () => ({ version: 'test' }),
      registry,
    });
  });
  after(async () => {
    await app.close();
    await sync.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const call = async (method: 'GET' | 'POST' | 'PATCH' | 'DELETE' | 'PUT', url: string, payload?: object) => {
    const r = await app.inject({ method, url, ...(payload === undefined ? {} : { payload }) });
    return { status: r.statusCode, body: r.body === '' ? undefined : (JSON.parse(r.body) as Record<string, unknown>) };
  };

  it('writes a network and a VM to etcd; this host serves the VM when the call returns', async () => {
    assert.equal((await call('POST', '/v1/networks', { id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' })).status, 201);
    const created = await call('POST', '/v1/vms', {
      id: VM,
      network: 'net1',
      ip: '198.51.100.10',
      mac: '52:54:00:12:34:56',
      hostname: 'vm1',
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal(created.body?.['host'], 'hv1');
    const doc = decodeVm(VM, (await etcd.get(keys.vm(VM)))?.value ?? '');
    assert.ok(doc.ok && doc.value.host === 'hv1');
    assert.equal(inventory.getVm(VM)?.origin, 'registry');
    assert.equal((await call('GET', `/v1/vms/${VM}`)).body?.['host'], 'hv1');
    const again = await call('POST', '/v1/vms', {
      id: VM,
      network: 'net1',
      ip: '198.51.100.11',
      mac: '52:54:00:12:34:57',
      hostname: 'vm2',
    });
    assert.deepEqual([again.status, again.body?.['code']], [409, 'ALREADY_EXISTS']);
  });

  it('shows the revision and changes a VM or network only if_revision still holds (409 REGISTRY_CONFLICT otherwise)', async () => {
    const shown = await call('GET', `/v1/vms/${VM}`);
    const revision = shown.body?.['revision'] as number;
    assert.equal(revision, (await etcd.get(keys.vm(VM)))?.modRevision);
    const ok = await call('PATCH', `/v1/vms/${VM}?if_revision=${revision}`, { name: 'first' });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.ok((ok.body?.['revision'] as number) > revision, 'the answer shows the new revision');
    const stale = await call('PATCH', `/v1/vms/${VM}?if_revision=${revision}`, { name: 'second' });
    assert.deepEqual([stale.status, stale.body?.['code']], [409, 'REGISTRY_CONFLICT']);
    assert.equal((await call('DELETE', `/v1/vms/${VM}?if_revision=${revision}`)).status, 409);
    assert.equal(inventory.getVm(VM)?.vm.name, 'first');
    const bad = await call('PATCH', `/v1/vms/${VM}?if_revision=abc`, { name: 'x' });
    assert.deepEqual([bad.status, bad.body?.['code'], bad.body?.['field']], [400, 'VALIDATION_FAILED', 'querystring.if_revision']);
    const net = await call('GET', '/v1/networks/net1');
    const netRev = net.body?.['revision'] as number;
    assert.equal(netRev, (await etcd.get(keys.network('net1')))?.modRevision);
    assert.equal((await call('PATCH', `/v1/networks/net1?if_revision=${netRev - 1}`, { mtu: 1400 })).status, 409);
    assert.equal((await call('PATCH', `/v1/networks/net1?if_revision=${netRev}`, { mtu: 1400 })).status, 200);
    assert.equal((await call('DELETE', `/v1/networks/net1?force=true&if_revision=${netRev}`)).status, 409);
  });

  it('migrates with PATCH host: the VM leaves this host when the call returns', async () => {
    // A host that never registered is refused (naming the field), unless allow_unknown_host=true.
    const typo = await call('PATCH', `/v1/vms/${VM}`, { host: 'hv2typo' });
    assert.deepEqual([typo.status, typo.body?.['code'], typo.body?.['field']], [400, 'VALIDATION_FAILED', 'host']);
    assert.match(String(typo.body?.['message']), /no host "hv2typo" is registered \(known: hv2 \(not live\)\)/);
    const unknown = { id: VM2, network: 'net1', ip: '198.51.100.19', mac: '52:54:00:12:34:59', hostname: 'early', host: 'hv9' };
    assert.equal((await call('POST', '/v1/vms', unknown)).status, 400);
    const early = await call('POST', '/v1/vms?allow_unknown_host=true', unknown);
    assert.equal(early.status, 201, JSON.stringify(early.body));
    assert.equal((await call('DELETE', `/v1/vms/${VM2}`)).status, 200);
    const moved = await call('PATCH', `/v1/vms/${VM}`, { host: 'hv2' });
    assert.equal(moved.status, 200, JSON.stringify(moved.body));
    assert.equal(moved.body?.['host'], 'hv2');
    assert.equal(inventory.getVm(VM), undefined);
    assert.deepEqual(inventory.networkList(), []);
    const elsewhere = await call('GET', `/v1/vms/${VM}`);
    assert.equal(elsewhere.status, 404);
    assert.match(String(elsewhere.body?.['message']), /placed on host hv2, not on this one \(hv1\)/);
  });

  it('sets the password create-only in etcd', async () => {
    assert.equal((await call('PUT', `/v1/vms/${VM}/password`, { password: 'pw' })).status, 204);
    const second = await call('PUT', `/v1/vms/${VM}/password`, { password: 'pw2' });
    assert.deepEqual([second.status, second.body?.['code']], [409, 'ALREADY_EXISTS']);
    assert.equal((await etcd.get(keys.password(VM)))?.value, 'pw');
  });

  it('refuses writes with 503 REGISTRY_UNAVAILABLE and reports itself degraded while etcd is unreachable', async () => {
    etcd.setUnavailable(true);
    await settle();
    const refused = await call('PATCH', `/v1/vms/${VM}`, { host: 'hv1' });
    assert.deepEqual([refused.status, refused.body?.['code']], [503, 'REGISTRY_UNAVAILABLE']);
    const health = await call('GET', '/v1/health');
    assert.equal(health.status, 503);
    assert.deepEqual(health.body?.['registry'], { connected: false, revision: sync.status().revision });
    const metrics = await app.inject({ method: 'GET', url: '/metrics' });
    assert.match(metrics.body, /^imds_registry_connected 0$/m);
    etcd.setUnavailable(false);
    await settle();
    assert.equal((await call('GET', '/v1/health')).status, 200);
  });

  it('imports into etcd: created, then unchanged; a dry run writes nothing; --prune=vms deletes what the file left out', async () => {
    const vm2 = '2b4e28ba-2fa1-11d2-883f-0016d3cca427';
    const net = { id: 'imp', cidr: '203.0.113.0/24', service_ip: '203.0.113.2' };
    const vmA = { id: vm2, network: 'imp', ip: '203.0.113.10', mac: '52:54:00:aa:00:01', hostname: 'imp-a', host: 'hv1' };
    const vmB = {
      id: VM.replace('1b4e', '3b4e'),
      network: 'imp',
      ip: '203.0.113.11',
      mac: '52:54:00:aa:00:02',
      hostname: 'imp-b',
      host: 'hv2',
    };
    const dry = await call('POST', '/v1/import?dry_run=true', { networks: [net], vms: [vmA, vmB] });
    assert.equal(dry.status, 200, JSON.stringify(dry.body));
    assert.deepEqual((dry.body?.['vms'] as { created: string[] }).created, [vmA.id, vmB.id]);
    assert.equal(await etcd.get(keys.network('imp')), undefined, 'a dry run writes nothing');
    const r = await call('POST', '/v1/import', { networks: [net], vms: [vmA, { ...vmB, password: 'posted-elsewhere' }] });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual((r.body?.['networks'] as { created: string[] }).created, ['imp']);
    assert.equal(inventory.getVm(vmA.id)?.vm.hostname, 'imp-a', 'served here when the call returns');
    assert.equal(inventory.getVm(vmB.id), undefined, "hv2's VM is not served here");
    assert.equal((await etcd.get(keys.password(vmB.id)))?.value, 'posted-elsewhere');
    const stored = decodeVm(vmB.id, (await etcd.get(keys.vm(vmB.id)))?.value ?? '');
    assert.ok(stored.ok && stored.value.host === 'hv2');
    // The same file again changes nothing; without host, a VM stays where it is.
    const { host: _h, ...vmBNoHost } = vmB;
    const again = await call('POST', '/v1/import', { networks: [net], vms: [vmA, vmBNoHost] });
    assert.deepEqual((again.body?.['vms'] as { unchanged: string[] }).unchanged, [vmA.id, vmB.id]);
    // Moving a VM by its host alone is an update.
    const moved = await call('POST', '/v1/import', { vms: [{ ...vmB, host: 'hv1' }] });
    assert.deepEqual((moved.body?.['vms'] as { updated: string[] }).updated, [vmB.id]);
    assert.equal(inventory.getVm(vmB.id)?.vm.hostname, 'imp-b');
    const pruned = await call('POST', '/v1/import?prune=vms', { vms: [vmA] });
    assert.deepEqual((pruned.body?.['vms'] as { deleted: string[] }).deleted, [vmB.id]);
    assert.equal(await etcd.get(keys.vm(vmB.id)), undefined);
    assert.equal(await etcd.get(keys.password(vmB.id)), undefined, "the pruned VM's password goes with it");
    assert.equal(inventory.getVm(vmB.id), undefined);
  });

  it('refuses an import that breaks a rule against the registry, naming the entry, writing nothing', async () => {
    const clash = {
      id: '4b4e28ba-2fa1-11d2-883f-0016d3cca427',
      network: 'imp',
      ip: '203.0.113.10',
      mac: '52:54:00:aa:00:09',
      hostname: 'x',
    };
    const before = etcd.revision;
    const r = await call('POST', '/v1/import', { vms: [{ ...clash, host: 'hv3' }] });
    assert.equal(r.status, 400);
    assert.equal(r.body?.['code'], 'VALIDATION_FAILED');
    assert.match(String(r.body?.['message']), /vms\[0\]/);
    assert.equal(etcd.revision, before);
  });
});
