import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isImdsError } from '../../src/errors.ts';
import { networkSchema, vmSchema, type Vm } from '../../src/model/schema.ts';
import { Inventory } from '../../src/store/inventory.ts';
import { SqliteStore } from '../../src/store/sqlite-store.ts';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
function open(): { inv: Inventory; store: SqliteStore; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'imds-inv-'));
  dirs.push(dir);
  const store = SqliteStore.open(dir);
  return { inv: Inventory.open(store, { dhcpDomain: 'novalocal' }), store, dir };
}
const net1 = networkSchema.parse({ id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2', gateway: '198.51.100.1' });
const net2 = networkSchema.parse({ id: 'net2', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' });
const vm = (n: number, extra: Record<string, unknown> = {}): Vm =>
  vmSchema.parse({
    id: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
    network: 'net1',
    ip: `198.51.100.${10 + n}`,
    mac: `52:54:00:00:00:${n.toString(16).padStart(2, '0')}`,
    hostname: `vm${n}`,
    ...extra,
  });

function rejects(fn: () => unknown, code: string, field?: string, message?: RegExp): void {
  try {
    fn();
  } catch (err) {
    assert.ok(isImdsError(err), String(err));
    assert.equal(err.code, code, err.message);
    if (field !== undefined) assert.equal(err.field, field, err.message);
    if (message !== undefined) assert.match(err.message, message);
    return;
  }
  assert.fail(`expected ${code}`);
}

describe('inventory', () => {
  it('makes a new VM visible in the index at once, and persists it', () => {
    const { inv, store, dir } = open();
    inv.createNetwork(net1, 'api');
    inv.createVm(vm(1, { user_data: 'hello' }), 'api');
    assert.equal(inv.index.lookup('net1', '198.51.100.11')?.facts.uuid, vm(1).id);
    assert.equal(inv.index.lookup('net1', '198.51.100.11')?.userData?.toString(), 'hello');
    store.close();
    const reopened = Inventory.open(SqliteStore.open(dir), { dhcpDomain: 'novalocal' });
    assert.equal(reopened.index.lookup('net1', '198.51.100.11')?.facts.uuid, vm(1).id);
  });

  it('rejects duplicates and misfits with the field named, writing nothing', () => {
    const { inv } = open();
    inv.createNetwork(net1, 'api');
    inv.createVm(vm(1), 'api');
    rejects(() => inv.createNetwork(net1, 'api'), 'ALREADY_EXISTS', 'id');
    rejects(() => inv.createNetwork({ ...net2, bridge: 'imdsb-net1' }, 'api'), 'VALIDATION_FAILED', 'bridge');
    rejects(() => inv.createVm(vm(1), 'api'), 'ALREADY_EXISTS', 'id');
    rejects(
      () => inv.createVm(vm(2, { ip: '198.51.100.11' }), 'api'),
      'VALIDATION_FAILED',
      'ip',
      /already used in network "net1" by VM 0{8}-/,
    );
    rejects(() => inv.createVm(vm(2, { mac: '52:54:00:00:00:01' }), 'api'), 'VALIDATION_FAILED', 'mac');
    rejects(() => inv.createVm(vm(2, { ip: '198.51.100.1' }), 'api'), 'VALIDATION_FAILED', 'ip', /gateway/);
    rejects(() => inv.createVm(vm(2, { network: 'nope' }), 'api'), 'VALIDATION_FAILED', 'network');
    assert.equal(inv.vmCount(), 1);
  });

  it('moves a VM to a new address and frees the old one', () => {
    const { inv } = open();
    inv.createNetwork(net1, 'api');
    inv.createVm(vm(1), 'api');
    inv.updateVm(vm(1, { ip: '198.51.100.50' }));
    assert.equal(inv.index.lookup('net1', '198.51.100.11'), undefined);
    assert.equal(inv.index.lookup('net1', '198.51.100.50')?.facts.uuid, vm(1).id);
    inv.createVm(vm(2, { ip: '198.51.100.11' }), 'api');
    assert.equal(inv.vmCount('net1'), 2);
  });

  it('refuses a network change its VMs would not fit, and rebuilds documents on a domain change', () => {
    const { inv } = open();
    inv.createNetwork(net1, 'api');
    inv.createVm(vm(1), 'api');
    rejects(
      () => inv.updateNetwork({ ...net1, cidr: '203.0.113.0/24', service_ip: '203.0.113.2', gateway: '203.0.113.1' }),
      'VALIDATION_FAILED',
      'cidr',
      /outside network/,
    );
    inv.updateNetwork({ ...net1, domain: 'example.org' });
    assert.equal(inv.index.lookup('net1', '198.51.100.11')?.facts.hostname, 'vm1.example.org');
  });

  it('refuses to delete a network with VMs unless forced', () => {
    const { inv } = open();
    inv.createNetwork(net1, 'api');
    inv.createVm(vm(1), 'api');
    rejects(() => inv.deleteNetwork('net1', false), 'NETWORK_NOT_EMPTY');
    assert.deepEqual(inv.deleteNetwork('net1', true), [vm(1).id]);
    assert.equal(inv.vmCount(), 0);
    assert.equal(inv.index.lookup('net1', '198.51.100.11'), undefined);
  });

  it('applies a batch all or nothing, naming the offending entries', () => {
    const { inv } = open();
    inv.createNetwork(net1, 'api');
    inv.createVm(vm(1), 'api');
    rejects(
      () =>
        inv.applyBatch(
          { networks: [net2], vms: [vm(2), vm(3, { ip: '198.51.100.11' }), vm(4, { network: 'net2', ip: '198.51.100.11' })] },
          { origin: 'api' },
        ),
      'VALIDATION_FAILED',
      'vms[1].ip',
      /batch rejected, nothing was changed[\s\S]*vms\[1\]\.ip: 198\.51\.100\.11 is already used in network "net1" by VM/,
    );
    assert.equal(inv.vmCount(), 1);
    assert.equal(inv.getNetwork('net2'), undefined);
    const r = inv.applyBatch({ networks: [net2], vms: [vm(2), vm(4, { network: 'net2', ip: '198.51.100.11' })] }, { origin: 'api' });
    assert.deepEqual(r.networks.created, ['net2']);
    assert.equal(r.vms.created.length, 2);
    assert.equal(inv.index.lookup('net2', '198.51.100.11')?.facts.uuid, vm(4).id);
  });

  it('lets a batch swap the addresses of two VMs', () => {
    const { inv } = open();
    inv.createNetwork(net1, 'api');
    inv.applyBatch({ vms: [vm(1), vm(2)] }, { origin: 'api' });
    inv.applyBatch(
      { vms: [vm(1, { ip: '198.51.100.12', mac: '52:54:00:00:00:02' }), vm(2, { ip: '198.51.100.11', mac: '52:54:00:00:00:01' })] },
      { origin: 'api' },
    );
    assert.equal(inv.index.lookup('net1', '198.51.100.12')?.facts.uuid, vm(1).id);
  });

  it('seeds from the file: merge never deletes; authoritative prunes only what the file declared', () => {
    const { inv } = open();
    inv.applyBatch({ networks: [net1], vms: [vm(1), vm(2)] }, { origin: 'config' });
    inv.createVm(vm(3), 'api');
    inv.applyBatch({ networks: [net1], vms: [vm(1)] }, { origin: 'config' });
    assert.equal(inv.vmCount(), 3, 'merge keeps everything');
    inv.applyBatch({ networks: [net1], vms: [vm(1)] }, { origin: 'config', pruneOrigin: 'config' });
    assert.deepEqual(
      inv
        .vmList()
        .map((v) => v.vm.hostname)
        .sort(),
      ['vm1', 'vm3'],
      'the API-made VM stays',
    );
    rejects(
      () => inv.applyBatch({ networks: [], vms: [] }, { origin: 'config', pruneOrigin: 'config' }),
      'VALIDATION_FAILED',
      undefined,
      /unknown network "net1"/,
    );
  });

  it('stores a password once per VM', () => {
    const { inv } = open();
    inv.createNetwork(net1, 'api');
    inv.createVm(vm(1), 'api');
    assert.equal(inv.setPasswordOnce(vm(1).id, 'abc'), true);
    assert.equal(inv.setPasswordOnce(vm(1).id, 'def'), false);
    assert.equal(inv.getPassword(vm(1).id), 'abc');
    rejects(() => inv.getPassword(vm(9).id), 'NOT_FOUND');
  });
});
