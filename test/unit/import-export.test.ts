// Import and export without a daemon: batches with a dry run, a prune and passwords (the inventory
// over a temporary store), the export document, and the CLI's reading and writing of import files.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parse } from 'yaml';
import { asText, exportText } from '../../src/cli/export.ts';
import { importPath, importRequest, importText } from '../../src/cli/import-document.ts';
import { isImdsError } from '../../src/errors.ts';
import { networkSchema, vmSchema, type Vm } from '../../src/model/schema.ts';
import { exportDocument } from '../../src/store/export.ts';
import { Inventory } from '../../src/store/inventory.ts';
import { SqliteStore } from '../../src/store/sqlite-store.ts';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
function open(): { inv: Inventory; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'imds-import-'));
  dirs.push(dir);
  return { inv: Inventory.open(SqliteStore.open(dir), { dhcpDomain: 'novalocal' }), dir };
}
const net1 = networkSchema.parse({ id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' });
const net2 = networkSchema.parse({ id: 'net2', cidr: '203.0.113.0/24', service_ip: '203.0.113.2' });
const vm = (n: number, extra: Record<string, unknown> = {}): Vm =>
  vmSchema.parse({
    id: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
    network: 'net1',
    ip: `198.51.100.${10 + n}`,
    mac: `52:54:00:00:00:${n.toString(16).padStart(2, '0')}`,
    hostname: `vm${n}`,
    ...extra,
  });
const on2 = (n: number): Vm => vm(n, { network: 'net2', ip: `203.0.113.${10 + n}` });
const ids = (vms: { vm: Vm }[]): string[] => vms.map((v) => v.vm.hostname).sort();

describe('import batches', () => {
  it('reports created, updated, unchanged and deleted; a dry run changes nothing', () => {
    const { inv } = open();
    inv.applyBatch({ networks: [net1, net2], vms: [vm(1), vm(2), on2(3)] }, { origin: 'api' });
    const changes = { networks: [net1], vms: [vm(1), vm(2, { hostname: 'renamed' }), vm(4)] };
    const dry = inv.applyBatch(changes, { origin: 'api', dryRun: true, pruneOrigin: 'api', pruneNetworks: new Set(['net1']) });
    assert.deepEqual(dry.vms, { created: [vm(4).id], updated: [vm(2).id], unchanged: [vm(1).id], deleted: [] });
    assert.deepEqual(dry.networks, { created: [], updated: [], unchanged: ['net1'], deleted: [] });
    assert.deepEqual(ids(inv.vmList()), ['vm1', 'vm2', 'vm3'], 'the dry run changed nothing');
    assert.equal(inv.index.lookup('net1', vm(4).ip), undefined);
    const done = inv.applyBatch(changes, { origin: 'api', pruneOrigin: 'api', pruneNetworks: new Set(['net1']) });
    assert.deepEqual(done.vms, dry.vms, 'the import does what the dry run said');
    assert.deepEqual(ids(inv.vmList()), ['renamed', 'vm1', 'vm3', 'vm4']);
  });

  it('prunes the API VMs of the named networks only, or everything the API made', () => {
    const { inv } = open();
    inv.applyBatch({ networks: [net1, net2], vms: [vm(1), vm(2), on2(3)] }, { origin: 'api' });
    inv.applyBatch({ vms: [vm(5)] }, { origin: 'config' });
    const r = inv.applyBatch({ vms: [vm(1)] }, { origin: 'api', pruneOrigin: 'api', pruneNetworks: new Set(['net1']) });
    assert.deepEqual(r.vms.deleted, [vm(2).id]);
    assert.deepEqual(ids(inv.vmList()), ['vm1', 'vm3', 'vm5'], "net2's VM and the configuration's VM stay");
    const all = inv.applyBatch({ networks: [net1], vms: [vm(1)] }, { origin: 'api', pruneOrigin: 'api' });
    assert.deepEqual([all.networks.deleted, all.vms.deleted], [['net2'], [on2(3).id]]);
    assert.deepEqual(ids(inv.vmList()), ['vm1', 'vm5']);
  });

  it('sets passwords with the batch, all or nothing', () => {
    const { inv, dir } = open();
    inv.applyBatch({ networks: [net1], vms: [vm(1)] }, { origin: 'api' });
    assert.throws(
      () => inv.applyBatch({ vms: [vm(2, { ip: '192.0.2.1' })], passwords: new Map([[vm(2).id, 'x']]) }, { origin: 'api' }),
      (e) => isImdsError(e, 'VALIDATION_FAILED'),
    );
    assert.equal(inv.getPassword(vm(1).id), undefined);
    const r = inv.applyBatch({ vms: [vm(1)], passwords: new Map([[vm(1).id, 'c2VjcmV0']]) }, { origin: 'api' });
    assert.deepEqual(r.vms.updated, [vm(1).id], 'a new password is a change');
    assert.equal(inv.password(vm(1).id), 'c2VjcmV0', 'the guest reads it at once');
    const again = inv.applyBatch({ vms: [vm(1)], passwords: new Map([[vm(1).id, 'c2VjcmV0']]) }, { origin: 'api' });
    assert.deepEqual(again.vms.unchanged, [vm(1).id]);
    const reopened = Inventory.open(SqliteStore.open(dir), { dhcpDomain: 'novalocal' });
    assert.equal(reopened.getPassword(vm(1).id), 'c2VjcmV0', 'stored');
  });

  it('puts everything back when an import is undone (a network the kernel refused)', () => {
    const { inv, dir } = open();
    inv.applyBatch({ networks: [net1, net2], vms: [vm(1), vm(2), on2(3)], passwords: new Map([[vm(1).id, 'one']]) }, { origin: 'api' });
    inv.setPasswordOnce(on2(3).id, 'three');
    const state = () => ({
      networks: inv.networkList(),
      vms: inv.vmList().sort((a, b) => a.vm.id.localeCompare(b.vm.id)),
      passwords: [...inv.passwordList()].sort(),
    });
    const before = state();
    const snapshot = inv.snapshot();
    const net3 = networkSchema.parse({ id: 'net3', cidr: '192.0.2.0/24', service_ip: '192.0.2.2' });
    const r = inv.applyBatch(
      {
        networks: [net1, net3],
        vms: [vm(1, { hostname: 'changed' }), vm(4, { network: 'net3', ip: '192.0.2.10' })],
        passwords: new Map([[vm(1).id, 'new']]),
      },
      { origin: 'api', pruneOrigin: 'api' },
    );
    assert.notDeepEqual(state(), before);
    // Meanwhile (the kernel is slow) other callers change other records: those changes stay.
    inv.createVm(vm(5), 'api');
    const all = (c: typeof r.vms) => new Set([...c.created, ...c.updated, ...c.deleted]);
    inv.revertTo(snapshot, { networks: all(r.networks), vms: all(r.vms), passwords: new Set([vm(1).id, ...all(r.vms)]) });
    assert.equal(inv.getVm(vm(5).id)?.vm.hostname, vm(5).hostname, "another caller's VM stays");
    inv.deleteVm(vm(5).id);
    assert.deepEqual(state(), before);
    assert.equal(inv.index.lookup('net2', on2(3).ip)?.facts.uuid, on2(3).id, 'the index follows');
    const reopened = Inventory.open(SqliteStore.open(dir), { dhcpDomain: 'novalocal' });
    assert.deepEqual(
      reopened
        .vmList()
        .map((v) => v.vm.hostname)
        .sort(),
      ['vm1', 'vm2', 'vm3'],
    );
    assert.deepEqual([...reopened.passwordList()].sort(), before.passwords, 'the store too, passwords included');
    assert.equal(reopened.getNetwork('net3'), undefined);
  });

  it('lets the operator set a password once, or replace it', () => {
    const { inv } = open();
    inv.applyBatch({ networks: [net1], vms: [vm(1)] }, { origin: 'api' });
    inv.setPassword(vm(1).id, 'one', false);
    assert.throws(
      () => inv.setPassword(vm(1).id, 'two', false),
      (e) => isImdsError(e, 'ALREADY_EXISTS'),
    );
    assert.equal(inv.setPasswordOnce(vm(1).id, 'guest'), false, 'the guest cannot overwrite it');
    inv.setPassword(vm(1).id, 'two', true);
    assert.equal(inv.password(vm(1).id), 'two');
  });
});

describe('export document', () => {
  it('sorts, carries user data as base64, and passwords only when asked', () => {
    const vms = [on2(3), vm(2, { user_data: Buffer.from([0, 1, 2]) }), vm(1)];
    const doc = exportDocument([net2, net1], vms, new Map([[vm(1).id, 'pw']]));
    assert.deepEqual(
      doc.networks.map((n) => n.id),
      ['net1', 'net2'],
    );
    assert.deepEqual(
      doc.vms.map((v) => v.hostname),
      ['vm1', 'vm2', 'vm3'],
    );
    assert.equal(doc.vms[1]?.user_data_b64, 'AAEC');
    assert.equal(doc.vms[0]?.password, 'pw');
    assert.equal(exportDocument([net1], [vm(1)]).vms[0]?.password, undefined);
  });

  it('writes text user data as text and bytes as !!binary, and reads both back', () => {
    assert.equal(asText(Buffer.from('#cloud-config\r\nusers: []\n')), '#cloud-config\r\nusers: []\n');
    assert.equal(asText(Buffer.from([0x1f, 0x8b, 8, 0])), undefined);
    assert.equal(asText(Buffer.from([0xc3, 0x28])), undefined, 'not UTF-8');
    const doc = {
      networks: [{ id: 'net1' }],
      vms: [
        { id: 'a', user_data_b64: Buffer.from('#!/bin/sh\necho hi\n').toString('base64') },
        { id: 'b', user_data_b64: 'H4sIAA==' },
      ],
    };
    const yaml = exportText(doc, 'yaml');
    assert.match(yaml, /user_data: \|\n\s+#!\/bin\/sh\n/);
    assert.match(yaml, /user_data: !!binary \|-\n\s+H4sIAA==\n/);
    const back = importRequest(parse(yaml, { customTags: ['binary'] }));
    assert.deepEqual(back.vms, [
      { id: 'a', user_data: '#!/bin/sh\necho hi\n' },
      { id: 'b', user_data_b64: 'H4sIAA==' },
    ]);
    const json = JSON.parse(exportText(doc, 'json')) as { vms: Record<string, unknown>[] };
    assert.deepEqual(json.vms[1], { id: 'b', user_data_b64: 'H4sIAA==' });
  });
});

describe('import files', () => {
  const view = {
    id: vm(1).id,
    network: 'net1',
    ip: '198.51.100.11',
    mac: '52:54:00:00:00:01',
    hostname: 'vm1',
    root_device_name: '/dev/sda',
    user_data_bytes: 2,
    user_data_b64: 'aGk=',
    password_set: true,
    origin: 'api',
    contact: { requests: 1, first_seen: 'x', last_seen: 'y', last_status: 200 },
  };

  it('takes `vm show --json` output: one VM, the view-only fields dropped', () => {
    const { user_data_bytes: _b, password_set: _p, origin: _o, contact: _c, ...spec } = view;
    assert.deepEqual(importRequest(view), { vms: [spec] });
    assert.deepEqual(importRequest([view]), { vms: [spec] });
    const network = {
      id: 'net1',
      cidr: '198.51.100.0/24',
      service_ip: '198.51.100.2',
      bridge: 'imdsb-net1',
      origin: 'api',
      vms: 1,
      state: 'serving',
    };
    assert.deepEqual(importRequest(network), { networks: [{ id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' }], vms: [] });
  });

  it('refuses a VM view without its user data (it would be deleted)', () => {
    const { user_data_b64: _u, ...listed } = view;
    assert.throws(
      () => importRequest({ vms: [listed] }),
      (e) => isImdsError(e, 'VALIDATION_FAILED') && e.field === 'vms[0].user_data' && /would delete them/.test(e.message),
    );
    assert.throws(
      () => importRequest('text'),
      (e) => isImdsError(e, 'VALIDATION_FAILED'),
    );
    assert.throws(() => importRequest({ vms: {} }), /vms: must be a list/);
  });

  it('asks for a dry run or a prune, and prints what would change', () => {
    assert.equal(importPath({}), '/v1/import');
    assert.equal(importPath({ dryRun: true, prune: true }), '/v1/import?dry_run=true&prune=vms');
    assert.equal(importPath({ pruneAll: true }), '/v1/import?prune=all');
    assert.throws(() => importPath({ prune: true, pruneAll: true }), /give one of them/);
    const changes = (c: string[], u: string[], n: string[], d: string[]) => ({ created: c, updated: u, unchanged: n, deleted: d });
    const text = importText({ dry_run: true, networks: changes([], [], ['net1'], []), vms: changes(['a'], ['b'], [], ['c']) });
    assert.equal(
      text,
      'dry run, nothing was changed:\nnetworks: 0 to create, 0 to update, 1 unchanged, 0 to delete\n' +
        'VMs: 1 to create, 1 to update, 0 unchanged, 1 to delete\n+ vm a\n~ vm b\n- vm c\n',
    );
  });
});
