// What a repair does and reports: the targeted repair the scheduler runs (reconcile, ports put
// back, kinds from the steps' typed targets), and NetworkServices' guest sets, which are rewritten
// and reported however their damage is found (a set-element event, or a reconcile that saw it).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { desiredState, type DesiredNetwork } from '../../src/controller/desired.ts';
import type { Cause, GuestSetPlace } from '../../src/controller/drift/causes.ts';
import { repairNetwork } from '../../src/controller/drift/repair.ts';
import { repairKinds, type RepairReport } from '../../src/controller/drift/report.ts';
import { NetworkServices, type GuestSetSeen } from '../../src/controller/network-services.ts';
import type { AppliedStep, ReconcileSummary } from '../../src/controller/reconciler.ts';
import type { DhcpServers } from '../../src/dhcp/dhcp-servers.ts';
import type { NftBatcher } from '../../src/netns/nft-batch.ts';
import type { RunOptions, RunResult } from '../../src/netns/run.ts';

const log = pino({ level: 'silent' });
const d = desiredState({
  namespacePrefix: 'imds-',
  listenPort: 8775,
  networks: [{ id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' }],
}).networks.get('net1') as DesiredNetwork;

function summary(steps: AppliedStep[], status: 'serving' | 'degraded' | 'gone', reason?: string): ReconcileSummary {
  return {
    networks: status === 'gone' ? [] : [{ network: 'net1', state: status, reason, changed: steps.length }],
    applied: new Map(steps.length === 0 ? [] : [['net1', steps]]),
    removed: [],
    removalFailures: [],
    ms: 1,
  };
}

function repairWith(result: ReconcileSummary) {
  const calls: string[] = [];
  const repair = repairNetwork({
    reconcile: (network) => {
      calls.push(`reconcile ${network}`);
      return Promise.resolve(result);
    },
    guestSets: {
      checkGuestSets: (network, place, noticed) => {
        calls.push(`check ${network} ${place}: ${noticed.join(', ')}`);
        return Promise.resolve(undefined);
      },
    },
    bridgeOf: (network) => (network === 'net1' ? 'imdsb-net1' : undefined),
    portsOf: () => ['tap-a', 'tap-b'],
    reattach: (bridge, ports) => {
      calls.push(`reattach ${bridge}: ${ports.join(' ')}`);
      return Promise.resolve(ports.slice(0, 1));
    },
    log,
  });
  return { calls, repair };
}

describe('targeted repair', () => {
  const bridgeGone: AppliedStep[] = [
    { kind: 'ip', target: 'host_links', where: 'host', why: 'bridge missing', createsBridge: true },
    { kind: 'nft', target: 'bridge_table', where: 'host', why: 'bridge table missing' },
  ];

  it('reconciles the network, puts the ports back on a bridge it recreated, and names the kinds from the typed targets', async () => {
    const { calls, repair } = repairWith(summary(bridgeGone, 'serving'));
    const outcome = await repair('net1', [{ kind: 'link-deleted', network: 'net1', link: 'imdsb-net1' }]);
    assert.deepEqual(calls, ['reconcile net1', 'reattach imdsb-net1: tap-a tap-b']);
    assert.deepEqual(outcome, {
      state: 'serving',
      report: {
        wrong: ['bridge missing', 'bridge table missing'],
        done: ['ip in host', 'nft in host', 'ports back on imdsb-net1: tap-a'],
        kinds: ['host_links', 'bridge_table'],
      },
    });
  });

  it('puts no ports back when the bridge was not recreated, whatever the reasons say', async () => {
    const steps: AppliedStep[] = [{ kind: 'ip', target: 'host_links', where: 'host', why: 'bridge missing (said a person)' }];
    const { calls, repair } = repairWith(summary(steps, 'serving'));
    await repair('net1', [{ kind: 'link-changed', network: 'net1', link: 'imdsb-net1' }]);
    assert.deepEqual(calls, ['reconcile net1']);
  });

  it('reports a network that does not serve, one that is gone, and one that needed nothing', async () => {
    const cause: Cause[] = [{ kind: 'namespace-removed', network: 'net1' }];
    assert.deepEqual(await repairWith(summary(bridgeGone, 'degraded', 'conflict')).repair('net1', cause), {
      state: 'degraded',
      wrong: ['bridge missing', 'bridge table missing'],
      reason: 'conflict',
    });
    assert.deepEqual(await repairWith(summary([], 'gone')).repair('net1', cause), { state: 'gone' });
    assert.deepEqual(await repairWith(summary([], 'serving')).repair('net1', cause), { state: 'serving', report: undefined });
  });

  it('only compares the guest sets when every cause is about them, once per place', async () => {
    const { calls, repair } = repairWith(summary(bridgeGone, 'serving'));
    const outcome = await repair('net1', [
      { kind: 'guest-set-changed', network: 'net1', place: 'inner' },
      { kind: 'guest-set-changed', network: 'net1', place: 'bridge' },
    ]);
    assert.deepEqual(outcome, { state: 'serving', report: undefined });
    const noticed = 'set elements changed in the namespace table, set elements changed in the bridge table';
    assert.deepEqual(calls, [`check net1 inner: ${noticed}`, `check net1 bridge: ${noticed}`]);
  });

  it('names each kind once, in order of first appearance', () => {
    assert.deepEqual(
      repairKinds([
        { target: 'namespace' },
        { target: 'host_links' },
        { target: 'namespace_links' },
        { target: 'nft_table' },
        { target: 'host_links' },
        { target: 'bridge_table' },
      ]),
      ['namespace', 'host_links', 'namespace_links', 'nft_table', 'bridge_table'],
    );
    assert.deepEqual(repairKinds([]), []);
  });
});

/** NetworkServices against a fake kernel holding the two places' guest sets. */
function services(vms: { mac: string; ip: string }[]) {
  const kernel = { bridge: new Set<string>(), inner: new Set<string>(), vmIps: new Set<string>() };
  const writes: GuestSetPlace[] = [];
  const reports: RepairReport[] = [];
  const pairs = () => vms.map((v) => `${v.mac} . ${v.ip}`);
  const elem = (p: string) => ({ concat: p.split(' . ') });
  const result = (stdout: string): RunResult => ({ argv: [], code: 0, stdout, stderr: '', ms: 1 });
  const runner = {
    run(argv: readonly string[], options?: RunOptions): Promise<RunResult> {
      if (argv.join(' ') === 'nft -f -' && options?.netns === d.netns) {
        kernel.inner = new Set(pairs());
        kernel.vmIps = new Set(vms.map((v) => v.ip));
        writes.push('inner');
        return Promise.resolve(result(''));
      }
      const sets =
        argv[4] === 'bridge'
          ? [{ set: { family: 'bridge', table: d.bridgeTable, name: d.bridgeSet, elem: [...kernel.bridge].map(elem) } }]
          : [
              { set: { family: 'ip', table: 'imds', name: 'vm_ips', elem: [...kernel.vmIps] } },
              { set: { family: 'ip', table: 'imds', name: 'guests', elem: [...kernel.inner].map(elem) } },
            ];
      return Promise.resolve(result(JSON.stringify({ nftables: sets })));
    },
  };
  const hostNft = {
    apply: () => {
      kernel.bridge = new Set(pairs());
      writes.push('bridge');
      return Promise.resolve();
    },
  } as unknown as NftBatcher;
  const dhcp = { stop: () => Promise.resolve(), stopAll: () => Promise.resolve() } as unknown as DhcpServers;
  const s = new NetworkServices({
    runner,
    hostNft,
    dhcp,
    log,
    network: () => undefined,
    hosts: () => vms.map((v) => ({ ...v, hostname: 'h' })),
    defaultDomain: () => 'example',
    repairs: { repaired: (_network, report) => void reports.push(report) },
  });
  return { s, kernel, writes, reports, pairs };
}

const written = (elements: Iterable<string>): GuestSetSeen => ({ elements: new Set(elements), written: true });
const seen = (elements: Iterable<string>): GuestSetSeen => ({ elements: new Set(elements), written: false });
const vm = { mac: '52:54:00:00:00:0a', ip: '198.51.100.10' };

describe('guest sets (NetworkServices)', () => {
  it('rewrites and reports a set a reconcile saw changed by someone else (not only set-element events find damage)', async () => {
    const { s, kernel, writes, reports, pairs } = services([vm]);
    kernel.bridge = new Set(pairs());
    kernel.inner = new Set(pairs());
    kernel.vmIps = new Set([vm.ip]);
    await s.converged(d, { bridge: written(pairs()), inner: written(pairs()) });
    assert.deepEqual(writes, [], 'the table was just loaded with them');
    kernel.inner.clear(); // flushed by hand
    await s.converged(d, { bridge: seen(pairs()), inner: seen([]) });
    assert.deepEqual(writes, ['inner']);
    assert.deepEqual(kernel.inner, new Set(pairs()));
    assert.deepEqual(reports, [
      {
        noticed: ['guest set in the namespace table changed, seen by a reconcile'],
        wrong: ['set guests: 1 missing, 0 not ours'],
        done: ['guest sets rewritten in the namespace table'],
        kinds: ['guest_set'],
      },
    ]);
  });

  it('compares with the VMs after the shared bridge table was rebuilt with the sets as the store had them', async () => {
    const vms = [vm];
    const { s, kernel, writes, reports, pairs } = services(vms);
    await s.converged(d, { bridge: written(pairs()), inner: written(pairs()) });
    // A VM arrives; before its coalesced write, another network's change rebuilds the shared table with it.
    vms.push({ mac: '52:54:00:00:00:0b', ip: '198.51.100.11' });
    kernel.bridge = new Set(pairs());
    await s.bridgeSetsLoaded(['net1']);
    assert.equal(await s.checkGuestSets('net1', 'bridge'), undefined, 'the set holds what the VMs say: nothing to mend');
    assert.deepEqual(reports, []);
    assert.deepEqual(writes, []);
  });

  it('takes a stale sight for what it is when the set is right by now (our own write landed after the look)', async () => {
    const { s, kernel, writes, reports, pairs } = services([vm]);
    await s.converged(d, { bridge: written(pairs()), inner: written(pairs()) });
    kernel.inner = new Set(pairs());
    kernel.vmIps = new Set([vm.ip]);
    await s.converged(d, { bridge: written(pairs()), inner: seen([]) });
    assert.deepEqual(writes, []);
    assert.deepEqual(reports, []);
  });

  it('on first sight (a restart) writes what differs from the VMs without calling it drift', async () => {
    const { s, writes, reports } = services([vm]);
    await s.converged(d, { bridge: seen([]), inner: seen([]) });
    assert.deepEqual(writes.sort(), ['bridge', 'inner']);
    assert.deepEqual(reports, []);
  });

  it('compares with what it wrote, so a VM change still on its way is not drift; a set emptied by hand is, once', async () => {
    const vms = [vm];
    const { s, kernel, writes, reports, pairs } = services(vms);
    await s.converged(d, { bridge: seen([]), inner: seen([]) });
    writes.length = 0;
    vms.push({ mac: '52:54:00:00:00:0c', ip: '198.51.100.11' }); // in the inventory, not written yet
    assert.equal(await s.checkGuestSets('net1', 'bridge'), undefined);
    assert.equal(reports.length, 0);
    kernel.bridge.clear();
    assert.equal(
      await s.checkGuestSets('net1', 'bridge', ['set elements changed in the bridge table']),
      'set guests_net1: 1 missing, 0 not ours',
    );
    assert.deepEqual(kernel.bridge, new Set(pairs()), 'rewritten with the VMs as they are now');
    assert.equal(await s.checkGuestSets('net1', 'bridge'), undefined);
    assert.deepEqual(
      reports.map((r) => [r.noticed, r.wrong, r.kinds]),
      [[['set elements changed in the bridge table'], ['set guests_net1: 1 missing, 0 not ours'], ['guest_set']]],
    );
  });
});
