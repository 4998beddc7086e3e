// The daemon's registry side built from a configuration, with the in-memory FakeEtcd (unit tests only).
import assert from 'node:assert/strict';
import { after, it } from 'node:test';
import { pino } from 'pino';
import { parseConfig } from '../../src/config.ts';
import { buildRegistrySide } from '../../src/daemon/registry-side.ts';
import type { EtcdConnection } from '../../src/registry/etcd-api.ts';
import { encodeNetwork, encodeVm, registryKeys } from '../../src/registry/layout.ts';
import type { BatchInput } from '../../src/store/batch-plan.ts';
import { FakeEtcd } from '../helpers/fake-etcd.ts';

const log = pino({ level: 'silent' });
const none = { created: [], updated: [], unchanged: [], deleted: [] };
const sides: { close(): Promise<void> }[] = [];
after(async () => {
  for (const s of sides) await s.close();
});

it('is built only with a registry', () => {
  const target = { applyBatch: () => ({ networks: none, vms: none }), password: () => '' };
  assert.equal(buildRegistrySide(parseConfig('{}', 'imds.yaml'), { target, log }), undefined);
});

it('connects with the configured endpoints and TLS, applies the placement, and reports its state', async () => {
  const cfg = parseConfig(
    'host_id: hv1\nregistry:\n  etcd:\n    endpoints: ["https://e1:2379"]\n    prefix: /t/\n    tls: { ca: /ca.pem }\n',
    'imds.yaml',
  );
  const etcd = new FakeEtcd();
  const keys = registryKeys('/t/');
  await etcd.put(keys.network('net1'), encodeNetwork({ id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' }));
  const vm = {
    id: '1b4e28ba-2fa1-11d2-883f-0016d3cca427',
    network: 'net1',
    ip: '198.51.100.10',
    mac: '52:54:00:12:34:56',
    hostname: 'vm1',
  };
  await etcd.put(keys.vm(vm.id), encodeVm({ vm, host: 'hv1' }));
  const connections: EtcdConnection[] = [];
  const batches: BatchInput[] = [];
  const applied: number[] = [];
  const side = buildRegistrySide(cfg, {
    target: {
      applyBatch: (batch) => {
        batches.push(batch);
        return { networks: { ...none, created: ['net1'] }, vms: none };
      },
      password: () => '',
    },
    log,
    onApplied: () => applied.push(1),
    factory: (c) => {
      connections.push(c);
      return etcd;
    },
  });
  assert.ok(side !== undefined);
  sides.push(side);
  await side.sync.start();
  assert.deepEqual(connections, [{ endpoints: ['https://e1:2379'], tls: { ca: '/ca.pem' } }]);
  assert.deepEqual(
    batches.map((b) => b.vms?.map((v) => v.id)),
    [[vm.id]],
  );
  assert.equal(applied.length, 1);
  const status = side.status();
  assert.deepEqual([status.host_id, status.connected, status.revision, status.prefix], ['hv1', true, etcd.revision, '/t/']);
  assert.equal(side.vmRefs.byId(vm.id)?.hostname, 'vm1');
});

it('reports a client that cannot be made as disconnected, with the reason', async () => {
  const cfg = parseConfig('host_id: hv1\nregistry:\n  etcd:\n    endpoints: [e1:2379]\n', 'imds.yaml');
  const target = { applyBatch: () => ({ networks: none, vms: none }), password: () => '' };
  const side = buildRegistrySide(cfg, {
    target,
    log,
    factory: () => {
      throw new Error('cannot read /ca.pem');
    },
  });
  assert.ok(side !== undefined);
  sides.push(side);
  await side.sync.start();
  assert.deepEqual([side.status().connected, side.status().lastError], [false, 'cannot read /ca.pem']);
});
