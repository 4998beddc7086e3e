import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { commandOf, stagesOf } from '../../src/controller/apply.ts';
import { desiredState, type DesiredNetwork } from '../../src/controller/desired.ts';
import type { ObservedState } from '../../src/controller/observe.ts';
import { formatPlan, isEmpty, plan, type Step } from '../../src/controller/plan.ts';
import type { LinkState } from '../../src/netns/iproute.ts';
import { parseTable, type RenderedTable } from '../../src/netns/nft.ts';

const desired = desiredState({
  namespacePrefix: 'imds-',
  listenPort: 8775,
  networks: [{ id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2', mtu: 1400 }],
});
const d = desired.networks.get('net1') as DesiredNetwork;

function link(name: string, extra: Partial<LinkState> = {}): LinkState {
  return {
    name,
    index: 1,
    kind: undefined,
    master: undefined,
    up: true,
    mtu: 1400,
    alias: undefined,
    mac: undefined,
    addresses: [],
    ...extra,
  };
}

/** Kernel state exactly as the plan for `d` leaves it. */
function converged(): ObservedState {
  const rules = Array.from({ length: d.nft.ruleCount }, () => ({ rule: { comment: `imds:${d.nft.hash}` } }));
  const table = parseTable(
    JSON.stringify({ nftables: [{ table: {} }, { set: { name: 'vm_ips', elem: [] } }, { set: { name: 'guests', elem: [] } }, ...rules] }),
  );
  const shared = desired.bridgeTable as RenderedTable;
  const bridgeRules = Array.from({ length: shared.ruleCount }, () => ({ rule: { comment: `imds:${shared.hash}` } }));
  const bridgeTable = parseTable(JSON.stringify({ nftables: [{ table: {} }, { set: { name: 'guests_net1', elem: [] } }, ...bridgeRules] }));
  return {
    bridgeTables: new Map([['imds-interception', bridgeTable]]),
    hostLinks: new Map([
      ['eth0', link('eth0', { mtu: 1500 })],
      ['imdsb-net1', link('imdsb-net1', { kind: 'bridge', alias: 'imds:net1:bridge' })],
      ['imdsv-net1', link('imdsv-net1', { kind: 'veth', alias: 'imds:net1:veth', master: 'imdsb-net1' })],
    ]),
    namespaces: new Set(['imds-net1']),
    inside: new Map([
      [
        'imds-net1',
        {
          links: new Map([
            ['lo', link('lo', { mtu: 65536 })],
            ['imds0', link('imds0', { kind: 'veth', mac: d.innerMac, addresses: ['198.51.100.2/24', '169.254.169.254/32'] })],
          ]),
          table,
        },
      ],
    ]),
  };
}

function stepsOf(observed: ObservedState): Step[] {
  const p = plan(desired, observed);
  return [...p.removals.flatMap((r) => r.steps), ...p.networks.flatMap((n) => n.steps), ...p.host];
}

describe('planner', () => {
  it('builds everything from nothing, host objects before the namespace contents', () => {
    const steps = stepsOf({
      hostLinks: new Map([['eth0', link('eth0')]]),
      namespaces: new Set(),
      inside: new Map(),
      bridgeTables: new Map(),
    });
    assert.deepEqual(
      steps.map((s) => (s.kind === 'nft' ? `nft@${s.netns ?? 'host'}` : s.kind)),
      ['netns-add', 'ip', 'ip', 'nft@imds-net1', 'nft@host'],
    );
    assert.match(d.innerMac, /^02(:[0-9a-f]{2}){5}$/);
    const host = steps[1] as Extract<Step, { kind: 'ip' }>;
    assert.equal(host.netns, undefined);
    assert.deepEqual(host.lines, [
      'link add imdsb-net1 type bridge',
      'link set imdsb-net1 alias imds:net1:bridge',
      'link set imdsb-net1 mtu 1400',
      'link set imdsb-net1 up',
      `link add imdsv-net1 mtu 1400 type veth peer name imds0 address ${d.innerMac} mtu 1400 netns imds-net1`,
      'link set imdsv-net1 alias imds:net1:veth',
      'link set imdsv-net1 master imdsb-net1',
      'link set imdsv-net1 up',
    ]);
    const inside = steps[2] as Extract<Step, { kind: 'ip' }>;
    assert.equal(inside.netns, 'imds-net1');
    assert.deepEqual(inside.lines, [
      'link set lo up',
      'link set imds0 up',
      'addr add 198.51.100.2/24 dev imds0',
      'addr add 169.254.169.254/32 dev imds0',
    ]);
    const p = plan(desired, { hostLinks: new Map(), namespaces: new Set(), inside: new Map(), bridgeTables: new Map() });
    assert.equal(p.networks[0]?.fresh, true);
    assert.deepEqual(
      p.networks[0]?.rollback.map((s) => (s.kind === 'ip' ? s.lines[0] : s.kind === 'nft' ? s.script.trim() : s.kind)),
      ['link del imdsv-net1', 'link del imdsb-net1', 'netns-del'],
    );
  });

  it('types what each step repairs, and marks the host batch that creates the bridge (its ports are put back)', () => {
    const steps = stepsOf({ hostLinks: new Map(), namespaces: new Set(), inside: new Map(), bridgeTables: new Map() });
    assert.deepEqual(
      steps.map((s) => s.target),
      ['namespace', 'host_links', 'namespace_links', 'nft_table', 'bridge_table'],
    );
    assert.equal((steps[1] as Extract<Step, { kind: 'ip' }>).createsBridge, true);
    const halfPair = converged();
    halfPair.hostLinks.delete('imdsv-net1');
    const repair = stepsOf(halfPair);
    assert.deepEqual(
      repair.map((s) => [s.target, s.kind === 'ip' ? s.createsBridge : undefined]),
      [
        ['namespace_links', undefined],
        ['host_links', undefined],
        ['namespace_links', undefined],
      ],
      'a veth recreated on an existing bridge does not',
    );
    const down = converged();
    down.hostLinks.set('imdsb-net1', link('imdsb-net1', { kind: 'bridge', alias: 'imds:net1:bridge', up: false }));
    assert.equal((stepsOf(down)[0] as Extract<Step, { kind: 'ip' }>).createsBridge, undefined, 'nor a bridge set up again');
  });

  it('prints the plan as `imds plan` always has', () => {
    const p = plan(desired, { hostLinks: new Map(), namespaces: new Set(), inside: new Map(), bridgeTables: new Map() });
    assert.equal(
      formatPlan(p),
      [
        'ensure bridge table [host] nft -f (replace table)  # bridge table missing',
        'ensure net1 [imds-net1] netns-add  # namespace missing',
        `ensure net1 [host] ip link add imdsb-net1 type bridge; ip link set imdsb-net1 alias imds:net1:bridge; ip link set ` +
          `imdsb-net1 mtu 1400; ip link set imdsb-net1 up; ip link add imdsv-net1 mtu 1400 type veth peer name imds0 address ` +
          `${d.innerMac} mtu 1400 netns imds-net1; ip link set imdsv-net1 alias imds:net1:veth; ip link set imdsv-net1 master ` +
          `imdsb-net1; ip link set imdsv-net1 up  # bridge missing, veth missing`,
        'ensure net1 [imds-net1] ip link set lo up; ip link set imds0 up; ip addr add 198.51.100.2/24 dev imds0; ip addr add ' +
          '169.254.169.254/32 dev imds0  # namespace links and addresses',
        'ensure net1 [imds-net1] nft -f (replace table)  # nft table missing',
      ].join('\n'),
    );
    const o = converged();
    o.hostLinks.set('imdsv-old', link('imdsv-old', { kind: 'veth', alias: 'imds:old:veth' }));
    o.namespaces.add('imds-old');
    o.bridgeTables.set('imds-old', parseTable('{"nftables": []}'));
    o.hostLinks.set('imdsv-net1', link('imdsv-net1', { kind: 'veth', alias: 'imds:net1:veth', master: 'imdsb-net1', up: false }));
    assert.equal(
      formatPlan(plan(desired, o)),
      [
        'remove old [host] nft -f (delete table)  # bridge table no network declares',
        'remove old [host] ip link del imdsv-old  # owned links no network declares',
        'remove old [imds-old] netns-del  # namespace no network declares',
        'ensure net1 [host] ip link set imdsv-net1 up  # veth down',
      ].join('\n'),
    );
  });

  it('plans nothing when the kernel matches (applying twice changes nothing)', () => {
    const p = plan(desired, converged());
    assert.ok(isEmpty(p), formatPlan(p));
  });

  it('repairs only what drifted', () => {
    const o = converged();
    o.hostLinks.set('imdsv-net1', link('imdsv-net1', { kind: 'veth', alias: 'imds:net1:veth', master: undefined, up: false }));
    const ns = o.inside.get('imds-net1');
    assert.ok(ns);
    ns.links.set('imds0', link('imds0', { mac: d.innerMac, addresses: ['198.51.100.2/24', '10.0.0.1/8'] }));
    ns.table = undefined;
    const steps = stepsOf(o);
    assert.deepEqual(
      steps.map((s) => (s.kind === 'ip' ? `${s.netns ?? 'host'}: ${s.lines.join('; ')}` : s.kind)),
      [
        'host: link set imdsv-net1 master imdsb-net1; link set imdsv-net1 up',
        'imds-net1: addr add 169.254.169.254/32 dev imds0; addr del 10.0.0.1/8 dev imds0',
        'nft',
      ],
    );
  });

  it('restores the inner MAC and the bridge table, each where it lives', () => {
    const o = converged();
    o.inside
      .get('imds-net1')
      ?.links.set('imds0', link('imds0', { kind: 'veth', mac: '02:00:00:00:00:01', addresses: ['198.51.100.2/24', '169.254.169.254/32'] }));
    o.bridgeTables.delete('imds-interception');
    const steps = stepsOf(o);
    assert.deepEqual(
      steps.map((s) => (s.kind === 'ip' ? `${s.netns ?? 'host'}: ${s.lines.join('; ')}` : `${s.kind}@${s.netns ?? 'host'}`)),
      [`imds-net1: link set imds0 address ${d.innerMac}`, 'nft@host'],
    );
    assert.match(
      (steps[1] as Extract<Step, { kind: 'nft' }>).script,
      /^table bridge imds-interception \{\}\ndelete table bridge imds-interception\n/,
    );
  });

  it('replaces a bridge table whose set is gone', () => {
    const o = converged();
    const t = o.bridgeTables.get('imds-interception');
    assert.ok(t);
    t.sets.clear();
    assert.deepEqual(
      stepsOf(o).map((s) => `${s.kind}@${s.netns ?? 'host'}`),
      ['nft@host'],
    );
  });

  it('replaces a flushed nft table', () => {
    const o = converged();
    const ns = o.inside.get('imds-net1');
    assert.ok(ns);
    ns.table = parseTable(JSON.stringify({ nftables: [{ table: {} }] }));
    assert.deepEqual(
      stepsOf(o).map((s) => s.kind),
      ['nft'],
    );
  });

  it('repairs a half veth pair by recreating both ends', () => {
    const o = converged();
    o.hostLinks.delete('imdsv-net1');
    const steps = stepsOf(o);
    assert.equal(steps[0]?.kind, 'ip');
    assert.deepEqual(steps[0].lines, ['link del imds0']);
    assert.match((steps[1] as Extract<Step, { kind: 'ip' }>).lines.join('\n'), /link add imdsv-net1 .* peer name imds0 .* netns imds-net1/);
  });

  it('removes an outer end whose namespace is gone on its own, best effort (the kernel may beat it to it), before recreating the pair', () => {
    const o = converged();
    o.namespaces.delete('imds-net1');
    o.inside.delete('imds-net1');
    const steps = stepsOf(o);
    assert.deepEqual(
      steps.map((s) => s.kind),
      ['netns-add', 'ip', 'ip', 'ip', 'nft'],
    );
    const del = steps[1] as Extract<Step, { kind: 'ip' }>;
    assert.deepEqual(del.lines, ['link del imdsv-net1']);
    assert.equal(del.bestEffort, true);
    assert.match((steps[2] as Extract<Step, { kind: 'ip' }>).lines.join('\n'), /link add imdsv-net1 /);
    assert.notEqual((steps[2] as Extract<Step, { kind: 'ip' }>).bestEffort, true);
  });

  it('reports a conflict instead of touching a foreign object in the way', () => {
    const o = converged();
    o.hostLinks.set('imdsb-net1', link('imdsb-net1', { kind: 'dummy' }));
    const p = plan(desired, o);
    assert.match(p.networks[0]?.conflict ?? '', /"imdsb-net1" exists but is a dummy device/);
    assert.deepEqual(p.networks[0]?.steps, []);
    const o2 = converged();
    o2.hostLinks.set('imdsv-net1', link('imdsv-net1', { kind: 'veth' }));
    assert.match(plan(desired, o2).networks[0]?.conflict ?? '', /not the veth imds created/);
  });

  it('uses an existing bridge without claiming it', () => {
    const ext = desiredState({
      namespacePrefix: 'imds-',
      listenPort: 8775,
      networks: [{ id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2', bridge: 'br0' }],
    });
    const o: ObservedState = {
      hostLinks: new Map([['br0', link('br0', { kind: 'bridge', up: false })]]),
      namespaces: new Set(),
      inside: new Map(),
      bridgeTables: new Map(),
    };
    const p = plan(ext, o);
    const host = p.networks[0]?.steps.find((s) => s.kind === 'ip' && s.netns === undefined) as Extract<Step, { kind: 'ip' }>;
    assert.ok(
      host.lines.every((l) => !l.includes('link set br0') && !l.includes('link add br0')),
      host.lines.join('\n'),
    );
    assert.deepEqual(
      p.networks[0]?.rollback.map((s) => (s.kind === 'ip' ? s.lines[0] : s.kind)),
      ['link del imdsv-net1', 'netns-del'],
      'rollback keeps the operator bridge',
    );
  });

  it('removes owned orphans (veths before bridges, then the namespace) and nothing foreign', () => {
    const o = converged();
    o.hostLinks.set('imdsv-old', link('imdsv-old', { kind: 'veth', alias: 'imds:old:veth' }));
    o.hostLinks.set('imdsb-old', link('imdsb-old', { kind: 'bridge', alias: 'imds:old:bridge' }));
    o.hostLinks.set('imdsb-mine', link('imdsb-mine', { kind: 'bridge' }));
    o.hostLinks.set('br-other', link('br-other', { kind: 'bridge', alias: 'someone else' }));
    o.namespaces.add('imds-old');
    o.bridgeTables.set('imds-old', parseTable('{"nftables": []}'));
    o.bridgeTables.set('filter', parseTable('{"nftables": []}'));
    const p = plan(desired, o);
    assert.equal(p.removals.length, 1);
    assert.deepEqual(
      p.removals[0]?.steps.map((s) => (s.kind === 'ip' ? s.lines.join('; ') : s.kind === 'nft' ? s.script.trim() : `${s.kind} ${s.netns}`)),
      ['delete table bridge imds-old', 'link del imdsv-old; link del imdsb-old', 'netns-del imds-old'],
    );
    assert.ok(p.networks.every((n) => n.steps.length === 0));
  });

  it('builds one bridge table for all networks, each with its own set', () => {
    const two = desiredState({
      namespacePrefix: 'imds-',
      listenPort: 8775,
      networks: [
        { id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' },
        { id: 'net2', cidr: '198.51.100.0/24', service_ip: '198.51.100.2', uplink: 'eth0' },
      ],
    });
    const p = plan(two, {
      hostLinks: new Map([['eth0', link('eth0')]]),
      namespaces: new Set(),
      inside: new Map(),
      bridgeTables: new Map(),
    });
    assert.equal(p.host.length, 1);
    assert.ok(
      p.networks.every((n) => n.steps.every((s) => s.target !== 'bridge_table')),
      'no network plans a table of its own',
    );
    assert.deepEqual(two.bridgeTable?.sets, ['guests_net1', 'guests_net2']);
    assert.deepEqual(
      [...two.networks.values()].map((n) => [n.bridgeTable, n.bridgeSet]),
      [
        ['imds-interception', 'guests_net1'],
        ['imds-interception', 'guests_net2'],
      ],
    );
  });

  it("replaces an older imds's per-network bridge table with the shared one in the same transaction (no gap on upgrade)", () => {
    const o = converged();
    o.bridgeTables.delete('imds-interception');
    o.bridgeTables.set('imds-net1', parseTable('{"nftables": []}'));
    const p = plan(desired, o);
    assert.deepEqual(p.removals, [], 'the legacy table of a declared network is not a removal of its own');
    assert.equal(p.host.length, 1);
    const step = p.host[0] as Extract<Step, { kind: 'nft' }>;
    assert.match(
      step.script,
      /^table bridge imds-interception \{\}\ndelete table bridge imds-interception\ntable bridge imds-interception \{/,
    );
    assert.ok(step.script.endsWith('}\ndelete table bridge imds-net1\n'), step.script);
    assert.equal(step.why, 'bridge table missing, per-network bridge tables of an older imds (imds-net1)');
    // The shared table already whole: the legacy one still goes, through the same kind of step.
    const whole = converged();
    whole.bridgeTables.set('imds-net1', parseTable('{"nftables": []}'));
    assert.match((plan(desired, whole).host[0] as Extract<Step, { kind: 'nft' }>).script, /delete table bridge imds-net1\n$/);
  });

  it('removes the shared bridge table when no network is declared, and never a foreign one', () => {
    const none = desiredState({ namespacePrefix: 'imds-', listenPort: 8775, networks: [] });
    assert.equal(none.bridgeTable, undefined);
    const o = converged();
    o.bridgeTables.set('filter', parseTable('{"nftables": []}'));
    const p = plan(none, o);
    assert.deepEqual(
      p.host.map((s) => (s.kind === 'nft' ? s.script : s.kind)),
      ['delete table bridge imds-interception\n'],
    );
    assert.ok(
      p.removals.every((r) => r.steps.every((s) => s.kind !== 'nft')),
      'the shared table is not also a network removal',
    );
    assert.deepEqual(plan(none, { ...o, bridgeTables: new Map([['filter', parseTable('{"nftables": []}')]]) }).host, []);
  });
});

describe('apply stages', () => {
  it('creates the namespace first, then loads the nft table while the host batch runs', () => {
    const p = plan(desired, {
      hostLinks: new Map([['eth0', link('eth0')]]),
      namespaces: new Set(),
      inside: new Map(),
      bridgeTables: new Map(),
    });
    const stages = stagesOf(p.networks[0]?.steps ?? []);
    assert.deepEqual(
      stages.map((stage) => stage.map((s) => `${s.kind}@${s.netns ?? 'host'}`)),
      [['netns-add@imds-net1'], ['ip@host', 'nft@imds-net1'], ['ip@imds-net1']],
    );
    assert.deepEqual(commandOf(stages[1]?.[1] as Step), { argv: ['nft', '-f', '-'], stdin: d.nft.script, netns: 'imds-net1' });
    assert.deepEqual(commandOf(p.host[0] as Step), { argv: ['nft', '-f', '-'], stdin: desired.bridgeTable?.script });
  });

  it('keeps a half-pair repair before the host batch', () => {
    const o = converged();
    o.hostLinks.delete('imdsv-net1');
    const stages = stagesOf(stepsOf(o));
    assert.equal((stages[0]?.[0] as Extract<Step, { kind: 'ip' }>).lines[0], 'link del imds0');
    assert.equal((stages[1]?.[0] as Extract<Step, { kind: 'ip' }>).netns, undefined);
    assert.equal(stages.flat().length, stepsOf(o).length, 'every step runs once');
  });
});
