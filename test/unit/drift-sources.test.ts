// The drift watch's sources: for each, whether an event matters and the typed cause it leads to,
// on message bytes as the kernel sends them (built by hand, one captured).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { desiredState, type DesiredNetwork } from '../../src/controller/desired.ts';
import { BridgePortTracker } from '../../src/controller/drift/bridge-ports.ts';
import type { Cause } from '../../src/controller/drift/causes.ts';
import { HostLinkSource, linkOwners } from '../../src/controller/drift/host-links.ts';
import { hostNftRules } from '../../src/controller/drift/host-nft.ts';
import { namespaceLinkCause, namespaceNftRules } from '../../src/controller/drift/namespace-events.ts';
import { namespaceCause, NamespaceWatch } from '../../src/controller/drift/namespace-watch.ts';
import { parseNftEvent } from '../../src/controller/drift/nft-events.ts';
import { ATTRIBUTION_WAIT_MS, NftSource, UNCOMMITTED_WAIT_MS } from '../../src/controller/drift/nft-source.ts';
import { OWN_PID_CAPACITY, OWN_PID_TTL_MS, OwnProcesses } from '../../src/controller/drift/own-processes.ts';
import { parseRtMessage } from '../../src/netns/netlink.ts';
import { addressMessage, FakeClock, linkMessage, newGen, nftMessage, nla, cstr, setElement } from '../helpers/drift-fakes.ts';

const log = pino({ level: 'silent' });
const IP = 2;
const BRIDGE = 7;
const INET = 1;
const [RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR] = [16, 17, 20, 21];

const networks: DesiredNetwork[] = [
  ...desiredState({
    namespacePrefix: 'imds-',
    listenPort: 8775,
    networks: [
      { id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' },
      { id: 'net2', cidr: '203.0.113.0/24', service_ip: '203.0.113.2', uplink: 'eth1' },
    ],
  }).networks.values(),
];

describe('nftables event bytes', () => {
  it('reads the generation message the kernel sent for an `nft -f` (captured): generation, pid, process name', () => {
    const captured = { type: (10 << 8) | 15, data: Buffer.from('00000002080001000000000208000200000012c5080003006e667400', 'hex') };
    assert.deepEqual(parseNftEvent(captured), { kind: 'generation', transaction: 2, id: 2, pid: 4805, proc: 'nft' });
  });

  it('reads the table, set and transaction of element events, and the table of structural ones', () => {
    assert.deepEqual(parseNftEvent(setElement(IP, 'imds', 'guests', 0x1234, true)), {
      kind: 'set-element',
      family: IP,
      transaction: 0x1234,
      table: 'imds',
      set: 'guests',
    });
    for (const t of [0, 2, 3, 5, 6, 8, 9, 11, 18]) {
      const e = parseNftEvent(nftMessage(t, BRIDGE, 7, [nla(1, cstr('imds-net1')), nla(2, cstr('prerouting'))]));
      assert.deepEqual(e, { kind: 'structural', family: BRIDGE, transaction: 7, table: 'imds-net1' }, `type ${t}`);
    }
    assert.equal(parseNftEvent({ type: (1 << 8) | 12, data: Buffer.alloc(8) }), undefined, 'another subsystem');
    assert.equal(parseNftEvent({ type: (10 << 8) | 6, data: Buffer.alloc(2) }), undefined, 'too short');
  });
});

describe('nftables source: set elements by attribution', () => {
  const setup = () => {
    const clock = new FakeClock();
    const own = new OwnProcesses(clock);
    const causes: Cause[] = [];
    const source = new NftSource({ rules: namespaceNftRules('net1'), emit: (c) => causes.push(c), own, clock });
    return { clock, own, causes, source };
  };
  const changed: Cause = { kind: 'guest-set-changed', network: 'net1', place: 'inner' };

  it('lets set-element events of a transaction committed by one of our processes be', async () => {
    const { clock, own, causes, source } = setup();
    own.started(4242);
    source.onMessages([setElement(IP, 'imds', 'guests', 9), setElement(IP, 'imds', 'vm_ips', 9), newGen(9, 4242)]);
    await clock.advance(5000);
    assert.deepEqual(causes, []);
  });

  it("leads anyone else's to a comparison, however soon after one of our own writes", async () => {
    const { clock, own, causes, source } = setup();
    own.started(4242);
    source.onMessages([setElement(IP, 'imds', 'guests', 9), newGen(9, 4242)]);
    await clock.advance(20);
    source.onMessages([setElement(IP, 'imds', 'guests', 10, true), setElement(IP, 'imds', 'guests', 10, true)]);
    source.onMessages([newGen(10, 5151)]);
    await clock.advance(ATTRIBUTION_WAIT_MS - 1);
    assert.deepEqual(causes, [], 'waits for a late report of the pid');
    await clock.advance(1);
    assert.deepEqual(causes, [changed], 'one cause for the transaction');
  });

  it('takes a transaction for ours when the runner reports its pid just after the kernel event', async () => {
    const { clock, own, causes, source } = setup();
    source.onMessages([setElement(IP, 'imds', 'guests', 3), newGen(3, 777)]);
    await clock.advance(2);
    own.started(777);
    await clock.advance(5000);
    assert.deepEqual(causes, []);
  });

  it('puts a transaction together over several reads', async () => {
    const { clock, own, causes, source } = setup();
    own.started(100);
    source.onMessages([setElement(IP, 'imds', 'guests', 4)]);
    await clock.advance(3);
    source.onMessages([setElement(IP, 'imds', 'guests', 4)]);
    source.onMessages([newGen(4, 100)]);
    await clock.advance(5000);
    assert.deepEqual(causes, []);
    source.onMessages([setElement(IP, 'imds', 'guests', 5)]);
    source.onMessages([newGen(5, 101)]);
    await clock.advance(ATTRIBUTION_WAIT_MS);
    assert.deepEqual(causes, [changed]);
  });

  it("counts events whose generation message was lost as anyone else's", async () => {
    const { clock, own, causes, source } = setup();
    own.started(100);
    source.onMessages([setElement(IP, 'imds', 'guests', 6)]);
    source.onMessages([setElement(IP, 'imds', 'guests', 7), newGen(7, 100)]);
    assert.deepEqual(causes, [changed], 'at once, when a later transaction closes');
    source.onMessages([setElement(IP, 'imds', 'guests', 8)]);
    await clock.advance(UNCOMMITTED_WAIT_MS - 1);
    assert.equal(causes.length, 1);
    await clock.advance(1);
    assert.deepEqual(causes, [changed, changed], 'or after a while without one');
  });

  it("cares only for its own table: structural changes at once, elements only of the guest sets, nothing of a neighbour's table", async () => {
    const { clock, causes, source } = setup();
    source.onMessages([
      nftMessage(6, IP, 11, [nla(1, cstr('imds')), nla(2, cstr('input'))]),
      nftMessage(0, INET, 11, [nla(1, cstr('neighbour'))]),
      nftMessage(9, INET, 11, [nla(1, cstr('imds')), nla(2, cstr('guests'))]),
      setElement(INET, 'neighbour', 's', 11),
      setElement(INET, 'imds', 'guests', 11),
      setElement(IP, 'imds', 'other', 11),
    ]);
    assert.deepEqual(causes, [{ kind: 'namespace-table-changed', network: 'net1' }]);
    source.onMessages([newGen(11, 999)]);
    await clock.advance(5000);
    assert.equal(causes.length, 1, 'no guest set of ours changed');
  });

  it("in the hypervisor namespace: the shared bridge table (one repair, not one per network) and each network's guest set", async () => {
    const clock = new FakeClock();
    const causes: Cause[] = [];
    const source = new NftSource({ rules: hostNftRules(() => networks), emit: (c) => causes.push(c), own: new OwnProcesses(clock), clock });
    source.onMessages([
      nftMessage(8, BRIDGE, 1, [nla(1, cstr('imds-interception')), nla(2, cstr('prerouting'))]),
      nftMessage(8, IP, 1, [nla(1, cstr('imds-interception'))]),
      nftMessage(8, BRIDGE, 1, [nla(1, cstr('filter'))]),
      nftMessage(8, BRIDGE, 1, [nla(1, cstr('imds-net1'))]),
      setElement(BRIDGE, 'imds-interception', 'guests_net2', 1, true),
      setElement(BRIDGE, 'imds-interception', 'guests', 1),
      setElement(BRIDGE, 'filter', 'guests_net1', 1),
      newGen(1, 31337),
    ]);
    await clock.advance(ATTRIBUTION_WAIT_MS);
    assert.deepEqual(causes, [
      { kind: 'bridge-table-changed', network: 'net1', table: 'imds-interception' },
      { kind: 'guest-set-changed', network: 'net2', place: 'bridge' },
    ]);
  });
});

describe('host links', () => {
  const setup = () => {
    const causes: Cause[] = [];
    const owner = linkOwners(() => networks);
    const reads: string[][] = [];
    const ports = new BridgePortTracker({
      read: (bridges) => {
        reads.push(bridges);
        return Promise.resolve(new Map([['imdsb-net1', { index: 5, ports: ['imdsv-net1', 'tap-a'] }]]));
      },
      owner,
      log,
    });
    const source = new HostLinkSource({ owner, ports, emit: (c) => causes.push(c), log });
    const send = (type: number, f: Parameters<typeof linkMessage>[1]) => source.onMessages([parseRtMessage(linkMessage(type, f))]);
    return { causes, ports, source, send, reads };
  };

  it("notices a network's links deleted, taken off their bridge or changed, and nothing else", () => {
    const { causes, send } = setup();
    send(RTM_NEWLINK, { index: 7, up: true, name: 'imdsv-net1', mtu: 1500, master: 5, alias: 'imds:net1:veth' });
    assert.deepEqual(causes, [], 'the first sight of a link that is up only records it');
    send(RTM_NEWLINK, { index: 7, up: true, name: 'imdsv-net1', mtu: 1500, master: 5, alias: 'imds:net1:veth' });
    assert.deepEqual(causes, [], 'the same state again');
    send(RTM_NEWLINK, { index: 7, up: true, name: 'imdsv-net1', mtu: 1400, master: 5, alias: 'imds:net1:veth' });
    send(RTM_DELLINK, { family: 7, index: 7, name: 'imdsv-net1' });
    send(RTM_DELLINK, { index: 5, name: 'imdsb-net1' });
    send(RTM_NEWLINK, { index: 9, up: false, name: 'eth1', mtu: 1500 });
    send(RTM_NEWLINK, { index: 11, up: false, name: 'foreign0', mtu: 1500 });
    send(RTM_DELLINK, { index: 11, name: 'foreign0' });
    assert.deepEqual(causes, [
      { kind: 'link-changed', network: 'net1', link: 'imdsv-net1' },
      { kind: 'link-left-bridge', network: 'net1', link: 'imdsv-net1' },
      { kind: 'link-deleted', network: 'net1', link: 'imdsb-net1' },
      { kind: 'link-changed', network: 'net2', link: 'eth1' },
    ]);
  });

  it("keeps the bridge's ports: read once, then from events, remembered when the bridge goes", async () => {
    const { ports, send, reads } = setup();
    ports.track(networks[0] as DesiredNetwork);
    ports.track(networks[0] as DesiredNetwork);
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(reads, [['imdsb-net1']], 'one read');
    assert.deepEqual(ports.portsOf('imdsb-net1'), ['tap-a'], "imds's own veth is not a guest's port");
    send(RTM_NEWLINK, { index: 21, up: true, name: 'tap-b', master: 5 });
    send(RTM_NEWLINK, { index: 22, up: true, name: 'tap-c', master: 5 });
    send(RTM_DELLINK, { index: 22, name: 'tap-c' }); // deleted: gone from the list
    send(RTM_NEWLINK, { index: 23, up: true, name: 'tap-d', master: 99 }); // another bridge
    // The bridge is deleted: its ports leave it (AF_BRIDGE deletes, then NEWLINKs without a master).
    send(RTM_DELLINK, { family: 7, index: 21, name: 'tap-b' });
    send(RTM_NEWLINK, { index: 21, up: true, name: 'tap-b' });
    send(RTM_DELLINK, { index: 5, name: 'imdsb-net1' });
    assert.deepEqual(ports.portsOf('imdsb-net1'), ['tap-a', 'tap-b']);
    // Recreated with a new index; a port put on it is seen again.
    send(RTM_NEWLINK, { index: 30, up: true, name: 'imdsb-net1', alias: 'imds:net1:bridge' });
    send(RTM_NEWLINK, { index: 24, up: true, name: 'tap-e', master: 30 });
    assert.deepEqual(ports.portsOf('imdsb-net1'), ['tap-a', 'tap-b', 'tap-e']);
  });
});

describe('namespace events', () => {
  it('notices a link deleted or down and an address removed inside, not what comes up or is added', () => {
    const cause = (m: { type: number; data: Buffer }) => namespaceLinkCause('net1', parseRtMessage(m));
    assert.deepEqual(cause(linkMessage(RTM_DELLINK, { index: 2, name: 'imds0' })), {
      kind: 'namespace-link-deleted',
      network: 'net1',
      link: 'imds0',
    });
    assert.deepEqual(cause(linkMessage(RTM_NEWLINK, { index: 2, name: 'imds0', up: false })), {
      kind: 'namespace-link-down',
      network: 'net1',
      link: 'imds0',
    });
    assert.deepEqual(cause(addressMessage(RTM_DELADDR, 2, [169, 254, 169, 254], 32)), {
      kind: 'namespace-address-removed',
      network: 'net1',
    });
    assert.equal(cause(linkMessage(RTM_NEWLINK, { index: 2, name: 'imds0', up: true })), undefined);
    assert.equal(cause(addressMessage(RTM_NEWADDR, 2, [198, 51, 100, 2], 24)), undefined);
  });

  it('notices a namespace whose name is gone or names another namespace, by inode', () => {
    const w = { network: 'net1', netns: 'imds-net1', ino: 4026532001 };
    assert.equal(namespaceCause(w, 4026532001), undefined);
    assert.deepEqual(namespaceCause(w, undefined), { kind: 'namespace-removed', network: 'net1' });
    assert.deepEqual(namespaceCause(w, 4026532999), { kind: 'namespace-replaced', network: 'net1' });
  });

  it('checks every watched namespace on each look (a change in /run/netns, or the periodic check)', () => {
    const causes: Cause[] = [];
    const inodes = new Map<string, number>([
      ['imds-net1', 101],
      ['imds-net2', 999],
    ]);
    const watch = new NamespaceWatch({
      dir: '/nonexistent/netns',
      namespaces: () => [
        { network: 'net1', netns: 'imds-net1', ino: 101 },
        { network: 'net2', netns: 'imds-net2', ino: 202 },
        { network: 'net3', netns: 'imds-net3', ino: 303 },
      ],
      inodeOf: (netns) => inodes.get(netns),
      emit: (c) => causes.push(c),
      intervalMs: 0,
    });
    watch.start();
    watch.check();
    watch.stop();
    assert.deepEqual(causes, [
      { kind: 'namespace-replaced', network: 'net2' },
      { kind: 'namespace-removed', network: 'net3' },
    ]);
  });
});

describe('own processes', () => {
  it('remembers the pids it was told of for a while, and only the latest few thousand', () => {
    const clock = new FakeClock();
    const own = new OwnProcesses(clock);
    own.started(10);
    assert.equal(own.has(10), true);
    assert.equal(own.has(11), false);
    clock.t += OWN_PID_TTL_MS + 1;
    assert.equal(own.has(10), false, 'expired');
    for (let pid = 1000; pid < 1000 + OWN_PID_CAPACITY + 10; pid++) own.started(pid);
    assert.equal(own.has(1000), false, 'the oldest made room');
    assert.equal(own.has(1000 + OWN_PID_CAPACITY + 9), true);
  });
});
