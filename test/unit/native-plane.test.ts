// The native table follows the index (src/server/native-plane.ts sync): a full sync publishes and
// removes what differs anywhere; a sync told the networks that changed compares only those, so a
// change to one VM costs its network, not every VM of the host. The addon is a recorder here.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type * as NativeAddon from 'imds-netns';
import { networkSchema, vmSchema, type Vm } from '../../src/model/schema.ts';
import { NativePlane } from '../../src/server/native-plane.ts';
import { Inventory } from '../../src/store/inventory.ts';
import { SqliteStore } from '../../src/store/sqlite-store.ts';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** An addon that records what the plane puts into and takes out of its table: `set|rm slot ip`. */
function recorder(): { addon: typeof NativeAddon; calls: string[] } {
  const calls: string[] = [];
  let next = 1;
  const addon = {
    dpRoute: () => next++,
    dpBlob: (bytes: Buffer) => ({ bytes }) as unknown as NativeAddon.DpBlob,
    dpSharedResponse: () => next++,
    dpSetVm: (slot: number, ip: number) => calls.push(`set ${slot} ${ip}`),
    dpRemoveVm: (slot: number, ip: number) => calls.push(`rm ${slot} ${ip}`),
  } as unknown as typeof NativeAddon;
  return { addon, calls };
}

const ipNumber = (ip: string): number => ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
const net = (id: string) => networkSchema.parse({ id, cidr: '198.51.100.0/24', service_ip: '198.51.100.2' });
const vm = (n: number, network: string): Vm =>
  vmSchema.parse({
    id: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
    network,
    ip: `198.51.100.${10 + n}`,
    mac: `52:54:00:00:00:${n.toString(16).padStart(2, '0')}`,
    hostname: `vm${n}`,
  });

/** An inventory of two networks with two VMs each, whose index changes the plane follows as the daemon wires it. */
function setup(): { inv: Inventory; plane: NativePlane; calls: string[]; hints: (ReadonlySet<string> | undefined)[] } {
  const dir = mkdtempSync(join(tmpdir(), 'imds-plane-'));
  dirs.push(dir);
  const { addon, calls } = recorder();
  const plane = new NativePlane(addon);
  const hints: (ReadonlySet<string> | undefined)[] = [];
  const inv = Inventory.open(
    SqliteStore.open(dir),
    { dhcpDomain: 'novalocal' },
    {
      onIndexChanged: (index, networks) => {
        hints.push(networks);
        plane.sync(index, networks);
      },
    },
  );
  for (const id of ['net1', 'net2']) inv.createNetwork(net(id), 'api');
  inv.applyBatch({ vms: [vm(1, 'net1'), vm(2, 'net1'), vm(3, 'net2'), vm(4, 'net2')] }, { origin: 'api' });
  return { inv, plane, calls, hints };
}

describe('native plane: the table follows the index', () => {
  it('a batch (no networks named) publishes every VM of every network', () => {
    const { calls, hints } = setup();
    assert.equal(hints.at(-1), undefined);
    const slots = new Set(calls.map((c) => c.split(' ')[1]));
    assert.equal(calls.filter((c) => c.startsWith('set ')).length, 4, calls.join('; '));
    assert.equal(slots.size, 2, 'one slot per network');
  });

  it('a VM added, changed or removed is published or taken out in its network only, and nothing else is touched', () => {
    const { inv, calls, hints } = setup();
    const slotOf = (ip: string) => calls.find((c) => c.endsWith(` ${ipNumber(ip)}`))?.split(' ')[1];
    const net2Slot = slotOf('198.51.100.13');
    calls.length = 0;
    inv.createVm(vm(5, 'net2'), 'api');
    assert.deepEqual([...(hints.at(-1) ?? [])], ['net2']);
    assert.deepEqual(calls, [`set ${net2Slot} ${ipNumber('198.51.100.15')}`]);
    calls.length = 0;
    inv.updateVm({ ...vm(5, 'net2'), hostname: 'renamed' });
    assert.deepEqual(calls, [`set ${net2Slot} ${ipNumber('198.51.100.15')}`]);
    calls.length = 0;
    inv.deleteVm(vm(5, 'net2').id);
    assert.deepEqual(calls, [`rm ${net2Slot} ${ipNumber('198.51.100.15')}`]);
  });

  it('a VM that moves network leaves the old one and joins the new one in the same change', () => {
    const { inv, calls, hints } = setup();
    const slot = (network: string) => (network === 'net1' ? calls[0] : calls.at(-1))?.split(' ')[1];
    const [net1Slot, net2Slot] = [slot('net1'), slot('net2')];
    calls.length = 0;
    inv.updateVm({ ...vm(1, 'net2'), ip: '198.51.100.31' });
    assert.deepEqual([...(hints.at(-1) ?? [])].sort(), ['net1', 'net2']);
    assert.deepEqual(calls.sort(), [`rm ${net1Slot} ${ipNumber('198.51.100.11')}`, `set ${net2Slot} ${ipNumber('198.51.100.31')}`].sort());
  });

  it('a network deleted with its VMs takes them all out', () => {
    const { inv, calls, hints } = setup();
    const net1Slot = calls[0]?.split(' ')[1];
    calls.length = 0;
    inv.deleteNetwork('net1', true);
    assert.deepEqual([...(hints.at(-1) ?? [])], ['net1']);
    assert.deepEqual(calls.sort(), [`rm ${net1Slot} ${ipNumber('198.51.100.11')}`, `rm ${net1Slot} ${ipNumber('198.51.100.12')}`].sort());
  });

  it('a sync compares only the networks it is told: a change in another network waits for a sync of that one (or a full one)', () => {
    const { inv } = setup();
    const { addon, calls } = recorder(); // a second plane, synced by hand
    const plane = new NativePlane(addon);
    plane.sync(inv.index);
    assert.equal(calls.length, 4);
    inv.createVm(vm(6, 'net2'), 'api');
    plane.sync(inv.index, new Set(['net1']));
    assert.equal(calls.length, 4, 'net1 unchanged: nothing published, net2 not looked at');
    plane.sync(inv.index, new Set(['net2']));
    assert.deepEqual(
      calls.slice(4).map((c) => c.split(' ')[2]),
      [String(ipNumber('198.51.100.16'))],
    );
    inv.deleteVm(vm(6, 'net2').id);
    plane.sync(inv.index);
    assert.deepEqual(
      calls.slice(5).map((c) =>
        c
          .split(' ')
          .filter((_, i) => i !== 1)
          .join(' '),
      ),
      [`rm ${ipNumber('198.51.100.16')}`],
    );
  });
});
