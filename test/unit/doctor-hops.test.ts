// imds doctor's judging, pure: evidence made by hand (a healthy network, then one thing wrong at a
// time) in, hops out.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { desiredState, type DesiredNetwork } from '../../src/controller/desired.ts';
import { networkHops, vmHops } from '../../src/doctor/doctor.ts';
import type { NetworkEvidence, TableEvidence, VmEvidence } from '../../src/doctor/evidence.ts';
import type { Hop } from '../../src/doctor/hop.ts';
import type { Network, Vm } from '../../src/model/schema.ts';
import type { LinkState } from '../../src/netns/iproute.ts';
import type { RenderedTable } from '../../src/netns/nft.ts';

const NET: Network = { id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2', dhcp: true };
const VM: Vm = {
  id: '1b4e28ba-2fa1-11d2-883f-0016d3cca427',
  network: 'net1',
  ip: '198.51.100.10',
  mac: '52:54:00:00:00:0a',
  hostname: 'alpha',
};
const PAIR = '52:54:00:00:00:0a . 198.51.100.10';
const NOW = Date.parse('2026-12-02T20:00:00Z');
const INODE = 4026532316;

function link(name: string, extra: Partial<LinkState>): LinkState {
  return {
    name,
    index: 1,
    kind: undefined,
    master: undefined,
    up: true,
    mtu: 1500,
    alias: undefined,
    mac: undefined,
    addresses: [],
    ...extra,
  };
}

function table(
  d: DesiredNetwork['nft'],
  sets: Record<string, string[]>,
  rules: TableEvidence['counters']['rules'],
  named: [string, number][] = [],
): TableEvidence {
  return {
    state: {
      ruleCount: d.ruleCount,
      rulesByHash: new Map([[d.hash, d.ruleCount]]),
      sets: new Map(Object.entries(sets).map(([k, v]) => [k, new Set(v)])),
    },
    counters: { rules, named: new Map(named) },
  };
}

/** Everything as imds builds it, the VM on its port, its requests answered 200. */
function healthy(): { ev: NetworkEvidence; vm: VmEvidence } {
  const state = desiredState({ namespacePrefix: 'imds-', listenPort: 8775, networks: [NET] });
  const desired = state.networks.get('net1') as DesiredNetwork;
  const shared = state.bridgeTable as RenderedTable;
  const ev: NetworkEvidence = {
    network: NET,
    desired,
    desiredBridgeTable: shared,
    listenPort: 8775,
    status: { network: 'net1', state: 'serving', reason: undefined, changed: 0 },
    hostLinks: new Map([
      ['imdsb-net1', link('imdsb-net1', { kind: 'bridge' })],
      ['imdsv-net1', link('imdsv-net1', { kind: 'veth', master: 'imdsb-net1' })],
    ]),
    bridgeAgeingS: 300,
    fdb: [{ mac: VM.mac, port: 'tap0', master: 'imdsb-net1', state: '' }],
    bridgeTable: table(shared, { guests_net1: [PAIR] }, [{ chain: 'steer', action: 'accept', packets: 3, set: 'guests_net1' }]),
    namespaceInode: INODE,
    nsLinks: new Map([['imds0', link('imds0', { kind: 'veth', mac: desired.innerMac, addresses: [...desired.addresses] })]]),
    nsTable: table(
      desired.nft,
      { guests: [PAIR], vm_ips: [VM.ip] },
      [{ chain: 'prerouting', action: 'dnat', packets: 12 }],
      [['spoofed', 0]],
    ),
    neighbours: [{ ip: VM.ip, mac: VM.mac, state: ['REACHABLE'] }],
    listener: { open: true, fd: 7, socket: { listening: true, tcp: true, port: 8775, netnsInode: INODE }, error: undefined },
    dhcp: {
      status: { network: 'net1', state: 'running', pid: 4242, restarts: 0, last_error: undefined, healthy: true },
      processNetnsInode: INODE,
      hostsPath: '/run/imds/dhcp/net1/hosts',
      hostsText: '52:54:00:00:00:0a,198.51.100.10,alpha\n',
      leasesText: `${NOW / 1000 + 3600} 52:54:00:00:00:0a 198.51.100.10 alpha *\n`,
    },
    errors: new Map(),
  };
  const vm: VmEvidence = {
    vm: VM,
    contact: { requests: 28, firstSeen: NOW - 60_000, lastSeen: NOW - 5_000, lastStatus: 200 },
    recent: [
      { at: NOW - 5_000, status: 200, method: 'GET', path: '/openstack/latest/meta_data.json', requests: 1, by: 'node' },
      { at: NOW - 6_000, status: 200, requests: 27, by: 'native' },
    ],
    bucket: { tokens: 272.5, refused: 0 },
    now: NOW,
    rateLimit: { perSecond: 20, burst: 300 },
    startedAt: NOW - 3_600_000,
  };
  return { ev, vm };
}

const failed = (hops: Hop[]): string[] => hops.filter((h) => !h.ok).map((h) => h.name);
const hop = (hops: Hop[], name: string): Hop => hops.find((h) => h.name === name) as Hop;

describe('doctor hops', () => {
  it('pass on a healthy network and VM, in the order of the path, with the evidence', () => {
    const { ev, vm } = healthy();
    const hops = vmHops(ev, vm);
    assert.deepEqual(failed(hops), []);
    assert.deepEqual(
      hops.map((h) => h.name),
      [
        'vm',
        'network',
        'bridge',
        'bridge-port',
        'interception',
        'namespace',
        'veth',
        'addresses',
        'neighbour',
        'nft-table',
        'guard',
        'dhcp-server',
        'dhcp-lease',
        'listener',
        'endpoint',
        'tokens',
        'rate-limit',
        'requests',
      ],
    );
    assert.ok(hops.every((h) => h.fix === null));
    assert.match(hop(hops, 'bridge-port').detail, /52:54:00:00:00:0a is on port tap0 of imdsb-net1/);
    assert.match(hop(hops, 'interception').detail, /is in set guests_net1 of table bridge imds-interception; 3 frames steered/);
    // Another network's steering rule counts for that network, not this one.
    ev.bridgeTable?.counters.rules.splice(0, 1, { chain: 'steer', action: 'accept', packets: 9, set: 'guests_net2' });
    assert.match(hop(vmHops(ev, vm), 'interception').detail, /; 0 frames steered/);
    assert.match(hop(hops, 'nft-table').detail, /12 packets DNATed/);
    assert.match(hop(hops, 'dhcp-lease').detail, /leased 198\.51\.100\.10 to 52:54:00:00:00:0a until 2026-12-02T21:00:00\.000Z/);
    assert.match(hop(hops, 'requests').detail, /28 requests since .*answered 200/);
    assert.match(
      hop(hops, 'requests').detail,
      new RegExp(
        String.raw`Recent \(UTC, newest first\): \d\d:\d\d:\d\d GET /openstack/latest/meta_data\.json 200; ` +
          String.raw`\d\d:\d\d:\d\d native ×27, last 200 \(native: answered by the native loop, which records no paths\)$`,
      ),
    );
    assert.match(hop(hops, 'rate-limit').detail, /not limited now: 272 of 300 tokens left in 198\.51\.100\.10's bucket .*; none refused/);
    assert.deepEqual(failed(networkHops(ev, [VM])), []);
  });

  it('bridge-port: not on the bridge though heard from lately; an aged-out entry of a silent VM passes', () => {
    const { ev, vm } = healthy();
    ev.fdb = [];
    assert.deepEqual(failed(vmHops(ev, vm)), ['bridge-port']);
    const silent = { ...vm, contact: { ...(vm.contact as NonNullable<VmEvidence['contact']>), lastSeen: NOW - 600_000 } };
    assert.match(hop(vmHops(ev, silent), 'bridge-port').detail, /silent longer than its ageing time \(300 s/);
    assert.deepEqual(failed(vmHops(ev, { ...vm, contact: undefined })), ['bridge-port', 'requests']);
  });

  it('neighbour: the address seen from another MAC names both MACs (and the port that MAC is on)', () => {
    const { ev, vm } = healthy();
    ev.neighbours = [{ ip: VM.ip, mac: '52:54:00:00:00:ff', state: ['STALE'] }];
    ev.fdb = [{ mac: '52:54:00:00:00:ff', port: 'tap9', master: 'imdsb-net1', state: '' }];
    ev.nsTable?.counters.named.set('spoofed', 17);
    const hops = vmHops(ev, { ...vm, contact: undefined });
    assert.deepEqual(failed(hops), ['bridge-port', 'neighbour', 'requests']);
    const n = hop(hops, 'neighbour');
    assert.match(n.detail, /saw 198\.51\.100\.10 from 52:54:00:00:00:ff .* registered with 52:54:00:00:00:0a: .*\(17 packets/);
    assert.match(n.fix ?? '', /imds vm set 1b4e28ba-2fa1-11d2-883f-0016d3cca427 --mac 52:54:00:00:00:ff/);
    assert.match(hop(hops, 'bridge-port').detail, /198\.51\.100\.10 was seen from 52:54:00:00:00:ff on port tap9/);
  });

  it('neighbour: the MAC seen with another address, and an unanswered address', () => {
    const { ev, vm } = healthy();
    ev.neighbours = [{ ip: '198.51.100.99', mac: VM.mac, state: ['REACHABLE'] }];
    assert.match(hop(vmHops(ev, vm), 'neighbour').detail, /MAC 52:54:00:00:00:0a with address 198\.51\.100\.99/);
    ev.neighbours = [{ ip: VM.ip, mac: undefined, state: ['FAILED'] }];
    assert.match(hop(vmHops(ev, vm), 'neighbour').detail, /got no answer \(neighbour state FAILED\)/);
    ev.neighbours = [];
    assert.equal(hop(vmHops(ev, vm), 'neighbour').ok, true);
  });

  it('interception and guard: a missing pair fails at VM and network level; extra pairs at network level', () => {
    const { ev, vm } = healthy();
    ev.bridgeTable?.state.sets.set('guests_net1', new Set());
    assert.deepEqual(failed(vmHops(ev, vm)), ['interception']);
    assert.match(hop(networkHops(ev, [VM]), 'interception').detail, /missing 52:54:00:00:00:0a \. 198\.51\.100\.10/);
    ev.bridgeTable?.state.sets.set('guests_net1', new Set([PAIR, '52:54:00:00:00:0b . 198.51.100.11']));
    assert.equal(hop(vmHops(ev, vm), 'interception').ok, true);
    assert.match(hop(networkHops(ev, [VM]), 'interception').detail, /not a VM's: 52:54:00:00:00:0b/);
    const g = healthy();
    g.ev.nsTable?.state.sets.set('guests', new Set());
    assert.deepEqual(failed(vmHops(g.ev, g.vm)), ['guard']);
    assert.match(hop(vmHops(g.ev, g.vm), 'guard').detail, /drops the VM's own requests as spoofed/);
    assert.deepEqual(failed(networkHops(g.ev, [VM])), ['guard']);
  });

  it('tables: absent, or not as imds built them (a deleted DNAT rule)', () => {
    const { ev, vm } = healthy();
    ev.bridgeTable = undefined;
    assert.match(hop(vmHops(ev, vm), 'interception').detail, /does not exist/);
    const n = healthy();
    const state = n.ev.nsTable?.state;
    if (state !== undefined) state.ruleCount = 4;
    n.ev.nsTable?.counters.rules.splice(0);
    assert.deepEqual(failed(vmHops(n.ev, n.vm)), ['nft-table', 'guard']);
    assert.match(hop(vmHops(n.ev, n.vm), 'nft-table').detail, /the DNAT of 169\.254\.169\.254:80 is missing/);
  });

  it('namespace, veth, addresses and listener: what is missing is named', () => {
    const a = healthy();
    a.ev.hostLinks.delete('imdsv-net1');
    assert.deepEqual(failed(networkHops(a.ev, [VM])), ['veth']);
    const b = healthy();
    b.ev.hostLinks.set('imdsv-net1', link('imdsv-net1', { kind: 'veth' }));
    assert.match(hop(networkHops(b.ev, [VM]), 'veth').detail, /on no bridge, not on imdsb-net1/);
    const c = healthy();
    c.ev.nsLinks?.get('imds0')?.addresses.pop();
    assert.match(hop(networkHops(c.ev, [VM]), 'addresses').detail, /lacks 169\.254\.169\.254\/32/);
    const d = healthy();
    d.ev.namespaceInode = undefined;
    d.ev.nsLinks = undefined;
    d.ev.nsTable = undefined;
    assert.deepEqual(failed(networkHops(d.ev, [VM])), ['namespace', 'veth', 'addresses', 'nft-table', 'guard', 'dhcp-server', 'listener']);
    assert.match(hop(networkHops(d.ev, [VM]), 'listener').detail, /the namespace was replaced/);
    const e = healthy();
    e.ev.hostLinks.set('imdsb-net1', link('imdsb-net1', { kind: 'bridge', up: false }));
    assert.deepEqual(failed(networkHops(e.ev, [VM])), ['bridge']);
    const u = healthy();
    u.ev.desired = { ...u.ev.desired, uplink: 'eth1' };
    assert.match(hop(networkHops(u.ev, [VM]), 'bridge').detail, /uplink eth1 does not exist, not on imdsb-net1/);
    u.ev.hostLinks.set('eth1', link('eth1', { master: 'imdsb-net1' }));
    assert.equal(hop(networkHops(u.ev, [VM]), 'bridge').ok, true);
  });

  it('dhcp: a server that does not stay up, and a missing static lease line', () => {
    const { ev, vm } = healthy();
    if (ev.dhcp?.status !== undefined)
      ev.dhcp.status = { ...ev.dhcp.status, state: 'restarting', pid: undefined, restarts: 3, last_error: 'exited with code 2: bad' };
    assert.match(hop(vmHops(ev, vm), 'dhcp-server').detail, /dnsmasq is restarting \(3 restarts\); last error: exited with code 2: bad/);
    const l = healthy();
    if (l.ev.dhcp !== undefined) l.ev.dhcp.hostsText = '52:54:00:00:00:0a,198.51.100.11,alpha\n';
    assert.match(
      hop(vmHops(l.ev, l.vm), 'dhcp-lease').detail,
      /has no line 52:54:00:00:00:0a,198\.51\.100\.10,alpha \(has 52:54:00:00:00:0a,198\.51\.100\.11,alpha\)/,
    );
    const n = healthy();
    n.ev.dhcp = undefined;
    assert.ok(!vmHops(n.ev, n.vm).some((h) => h.name.startsWith('dhcp')));
  });

  it('endpoint, tokens, rate limit and requests, from the settings and the last answer', () => {
    const { ev, vm } = healthy();
    assert.deepEqual(failed(vmHops(ev, { ...vm, vm: { ...VM, http_endpoint: 'disabled' } })), ['endpoint']);
    const last = (lastStatus: number): VmEvidence => ({
      ...vm,
      contact: { ...(vm.contact as NonNullable<VmEvidence['contact']>), lastStatus },
    });
    assert.deepEqual(failed(vmHops(ev, { ...last(401), vm: { ...VM, http_tokens: 'required' } })), ['tokens']);
    // The limiter's real state decides, not the last answer: a VM refused a while ago whose bucket refilled passes.
    assert.deepEqual(failed(vmHops(ev, last(429))), []);
    assert.match(
      hop(vmHops(ev, { ...last(429), bucket: { tokens: 40, refused: 12 } }), 'rate-limit').detail,
      /12 requests refused with 429/,
    );
    const limited = hop(vmHops(ev, { ...last(429), bucket: { tokens: 0.25, refused: 3 } }), 'rate-limit');
    assert.equal(limited.ok, false);
    assert.match(limited.detail, /limited now: 0\.2 of 300 tokens left .*3 requests refused .*served in 1 s at the earliest/);
    assert.equal(hop(vmHops(ev, { ...vm, bucket: 'none' }), 'rate-limit').ok, true);
    assert.match(hop(vmHops(ev, { ...vm, bucket: 'none' }), 'rate-limit').detail, /no bucket in the limiter/);
    // Without the limiter's state (an older daemon's deps), the last answer is the evidence, and the detail says so.
    const guessed = hop(vmHops(ev, { ...last(429), bucket: undefined }), 'rate-limit');
    assert.equal(guessed.ok, false);
    assert.match(guessed.detail, /could not be read/);
    assert.equal(hop(vmHops(ev, { ...last(429), rateLimit: { perSecond: 0, burst: 300 } }), 'rate-limit').ok, true);
    assert.equal(hop(vmHops(ev, { ...vm, bucket: 'off' }), 'rate-limit').ok, true);
    assert.deepEqual(failed(vmHops(ev, last(500))), ['requests']);
    assert.deepEqual(failed(vmHops(ev, last(404))), []);
  });

  it("vm: its MAC on another network's bridge fails, naming the bridge, the port and the network", () => {
    const { ev, vm } = healthy();
    ev.fdb = [];
    const elsewhere = { port: 'tap7', bridge: 'imdsb-net2', network: 'net2', own: 'imdsb-net1' };
    const hops = vmHops(ev, { ...vm, elsewhere });
    assert.deepEqual(failed(hops), ['vm', 'bridge-port']);
    const h = hop(hops, 'vm');
    assert.match(h.detail, /but 52:54:00:00:00:0a is on port tap7 of imdsb-net2 \(network net2's bridge\), not on imdsb-net1/);
    assert.match(h.fix ?? '', /ip link set tap7 master imdsb-net1\); or, .* imds vm set 1b4e28ba-\S+ --network net2 --ip ADDRESS/);
    const foreign = hop(vmHops(ev, { ...vm, elsewhere: { ...elsewhere, bridge: 'br0', network: undefined } }), 'vm');
    assert.match(foreign.detail, /of br0 \(a bridge of no imds network\)/);
    assert.doesNotMatch(foreign.fix ?? '', /--network/);
  });

  it('requests: a contact kept from before the daemon started is said to be so, and passes', () => {
    const { ev, vm } = healthy();
    const before: VmEvidence = {
      ...vm,
      contact: { requests: 28, firstSeen: NOW - 7_200_000, lastSeen: NOW - 5_400_000, lastStatus: 200 },
      recent: [],
      startedAt: NOW - 3_600_000,
    };
    ev.fdb = []; // its MAC aged out of the bridge while it was silent
    const hops = vmHops(ev, before);
    assert.deepEqual(failed(hops), []);
    assert.match(
      hop(hops, 'requests').detail,
      /^no request since the daemon started \(2026-.*\); the last one before it was 90 min ago \(.*\), answered 200; 28 requests since/,
    );
    assert.match(hop(hops, 'bridge-port').detail, /silent longer than its ageing time/);
    assert.deepEqual(
      failed(vmHops(ev, { ...before, contact: { ...(before.contact as NonNullable<VmEvidence['contact']>), lastStatus: 500 } })),
      ['requests'],
    );
    assert.match(hop(vmHops(ev, { ...vm, contact: undefined }), 'requests').detail, /has ever been recorded \(this daemon started/);
  });

  it('a degraded network, and kernel reads that failed, fail hops of their own', () => {
    const { ev, vm } = healthy();
    ev.status = { network: 'net1', state: 'degraded', reason: 'DHCP server restarting', changed: 0 };
    ev.errors.set('forwarding table', 'bridge: not found');
    assert.deepEqual(failed(vmHops(ev, vm)), ['network', 'reads']);
    assert.match(hop(vmHops(ev, vm), 'reads').detail, /forwarding table: bridge: not found/);
  });
});
