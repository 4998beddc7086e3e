// The drift watch's one scheduler, with a fake clock and a fake repair: bursts, backoff, failures
// that persist, networks side by side, causes that arrive while a repair runs.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Cause } from '../../src/controller/drift/causes.ts';
import type { RepairFailure, RepairReport } from '../../src/controller/drift/report.ts';
import { backoffMs, RepairScheduler, type RepairOutcome } from '../../src/controller/drift/scheduler.ts';
import { FakeClock } from '../helpers/drift-fakes.ts';

interface Call {
  network: string;
  causes: Cause[];
  at: number;
  finish(outcome: RepairOutcome | Error): void;
}

/** A repair that answers when the test says so (or at once with `auto`). */
function fakeRepair(clock: FakeClock, auto?: (network: string, n: number) => RepairOutcome | Error) {
  const calls: Call[] = [];
  const repair = (network: string, causes: readonly Cause[]): Promise<RepairOutcome> =>
    new Promise((resolve, reject) => {
      const finish = (o: RepairOutcome | Error) => (o instanceof Error ? reject(o) : resolve(o));
      calls.push({ network, causes: [...causes], at: clock.now(), finish });
      const n = calls.filter((c) => c.network === network).length;
      if (auto !== undefined) finish(auto(network, n));
    });
  return { calls, repair };
}

function fakeReports() {
  const lines: { msg: string; network: string; fields: RepairReport | RepairFailure }[] = [];
  return {
    lines,
    reports: {
      repaired: (network: string, report: RepairReport) => void lines.push({ msg: 'repaired', network, fields: report }),
      notRepaired: (network: string, f: RepairFailure) => void lines.push({ msg: 'not repaired', network, fields: f }),
      checkFailed: (network: string, f: RepairFailure) => void lines.push({ msg: 'check failed', network, fields: f }),
    },
  };
}

const fixed: RepairOutcome = { state: 'serving', report: { wrong: ['veth missing'], done: ['ip in host'], kinds: ['host_links'] } };
const conflict: RepairOutcome = { state: 'degraded', wrong: ['bridge missing'], reason: '"imdsb-net1" exists but is a veth device' };
const deleted = (network: string, link: string): Cause => ({ kind: 'link-deleted', network, link });

describe('drift scheduler', () => {
  it('paused (a hand-over): waits for the repair running, drops what is noticed, repairs again once resumed', async () => {
    const clock = new FakeClock();
    const { calls, repair } = fakeRepair(clock);
    const { reports } = fakeReports();
    const s = new RepairScheduler({ repair, reports, clock, settleMs: 20 });
    s.add(deleted('net1', 'imdsv-net1'));
    s.add(deleted('net2', 'imdsv-net2'));
    await clock.advance(20);
    assert.equal(calls.length, 2);
    let paused = false;
    const pausing = s.pause().then(() => (paused = true));
    await clock.advance(1);
    assert.equal(paused, false, 'pause waits for the repairs running');
    calls[0]?.finish(fixed);
    calls[1]?.finish(fixed);
    await pausing;
    s.add(deleted('net1', 'imdsv-net1'));
    await clock.advance(1000);
    assert.equal(calls.length, 2, 'nothing runs while paused');
    s.resume();
    s.add({ kind: 'repair-resumed', network: 'net1' });
    await clock.advance(20);
    assert.equal(calls.length, 3);
    assert.deepEqual(calls[2]?.causes, [{ kind: 'repair-resumed', network: 'net1' }], 'what was noticed while paused was dropped');
  });

  it('turns a burst of causes into one repair, logged once with everything noticed', async () => {
    const clock = new FakeClock();
    const { calls, repair } = fakeRepair(clock, () => fixed);
    const { lines, reports } = fakeReports();
    const s = new RepairScheduler({ repair, reports, clock, settleMs: 20 });
    s.add(deleted('net1', 'imdsv-net1'));
    await clock.advance(5);
    s.add({ kind: 'link-left-bridge', network: 'net1', link: 'imdsv-net1' });
    s.add(deleted('net1', 'imdsv-net1')); // the same cause twice counts once
    s.add({ kind: 'namespace-table-changed', network: 'net1' });
    await clock.advance(14);
    assert.equal(calls.length, 0, 'nothing before the settle window ends');
    await clock.advance(1);
    assert.equal(calls.length, 1);
    assert.equal(calls[0]?.at, 20, 'the window starts with the first cause');
    assert.deepEqual(
      calls[0]?.causes.map((c) => c.kind),
      ['link-deleted', 'link-left-bridge', 'namespace-table-changed'],
    );
    await clock.advance(1000);
    assert.equal(calls.length, 1, 'one repair for the burst');
    assert.deepEqual(lines, [
      {
        msg: 'repaired',
        network: 'net1',
        fields: {
          noticed: ['imdsv-net1 deleted', 'imdsv-net1 left its bridge', 'nftables changed in the namespace'],
          wrong: ['veth missing'],
          done: ['ip in host'],
          kinds: ['host_links'],
        },
      },
    ]);
    assert.equal(s.busy('net1'), false);
  });

  it('backs off while a repair fails (0.5 s doubling to 30 s) and starts again from the settle window after a success', async () => {
    assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 8].map(backoffMs), [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    const clock = new FakeClock();
    const failures = 8;
    const { calls, repair } = fakeRepair(clock, (_network, n) => (n <= failures ? conflict : fixed));
    const { lines, reports } = fakeReports();
    const s = new RepairScheduler({ repair, reports, clock, settleMs: 20 });
    s.add(deleted('net1', 'imdsb-net1'));
    await clock.advance(200_000);
    assert.equal(calls.length, failures + 1, 'attempts until one succeeds, then none');
    const gaps = calls.slice(1).map((c, i) => c.at - (calls[i] as Call).at);
    assert.deepEqual(gaps, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    const announced = lines.filter((l) => l.msg === 'not repaired').map((l) => (l.fields as RepairFailure).retry_in_ms);
    assert.deepEqual(announced, gaps, 'each failure announces the delay it keeps');
    for (const l of lines.filter((x) => x.msg === 'not repaired')) {
      assert.equal((l.fields as RepairFailure).err, '"imdsb-net1" exists but is a veth device');
      assert.deepEqual((l.fields as RepairFailure).wrong, ['bridge missing']);
    }
    const last = lines.at(-1);
    assert.equal(last?.msg, 'repaired');
    assert.deepEqual((last?.fields as RepairReport).noticed, ['imdsb-net1 deleted'], 'the success reports what was noticed first');
    // Reset: the next damage is repaired after the settle window, not after a backoff.
    const t = clock.now();
    s.add(deleted('net1', 'imdsv-net1'));
    await clock.advance(25);
    assert.equal(calls.length, failures + 2);
    assert.equal(calls.at(-1)?.at, t + 20);
  });

  it('keeps backing off a cause whose repair keeps failing, logging each attempt with retry_in_ms', async () => {
    const clock = new FakeClock();
    const { calls, repair } = fakeRepair(clock, () => new Error('observe: nft: exit 1'));
    const { lines, reports } = fakeReports();
    const s = new RepairScheduler({ repair, reports, clock, settleMs: 20 });
    s.add({ kind: 'namespace-removed', network: 'net1' });
    await clock.advance(20 + 500 + 1000 + 2000 + 4000);
    assert.equal(calls.length, 5);
    for (const c of calls)
      assert.deepEqual(c.causes, [{ kind: 'namespace-removed', network: 'net1' }], 'the cause is kept for each attempt');
    assert.deepEqual(
      lines.map((l) => [l.msg, (l.fields as RepairFailure).retry_in_ms, (l.fields as RepairFailure).err]),
      [500, 1000, 2000, 4000, 8000].map((ms) => ['check failed', ms, 'observe: nft: exit 1']),
    );
    // A new cause does not cut the backoff short.
    s.add(deleted('net1', 'imdsv-net1'));
    await clock.advance(7999);
    assert.equal(calls.length, 5);
    await clock.advance(1);
    assert.equal(calls.length, 6);
    assert.deepEqual(
      calls[5]?.causes.map((c) => c.kind),
      ['namespace-removed', 'link-deleted'],
    );
    await s.stop();
    await clock.advance(100_000);
    assert.equal(calls.length, 6, 'nothing after stop');
    assert.equal(clock.pending(), 0);
  });

  it('repairs two networks independently: one backing off does not hold the other', async () => {
    const clock = new FakeClock();
    const { calls, repair } = fakeRepair(clock, (network) => (network === 'net1' ? conflict : fixed));
    const { lines, reports } = fakeReports();
    const s = new RepairScheduler({ repair, reports, clock, settleMs: 20 });
    s.add(deleted('net1', 'imdsb-net1'));
    s.add(deleted('net2', 'imdsv-net2'));
    await clock.advance(20);
    assert.deepEqual(
      calls.map((c) => [c.network, c.at]),
      [
        ['net1', 20],
        ['net2', 20],
      ],
    );
    await clock.advance(100);
    s.add(deleted('net2', 'imdsb-net2'));
    await clock.advance(20);
    assert.deepEqual(calls.at(-1) && [calls.at(-1)?.network, calls.at(-1)?.at], ['net2', 140], 'net2 repaired at once again');
    await clock.advance(400);
    assert.deepEqual(
      calls.filter((c) => c.network === 'net1').map((c) => c.at),
      [20, 520],
    );
    assert.deepEqual(
      lines.map((l) => `${l.msg} ${l.network}`),
      ['not repaired net1', 'repaired net2', 'repaired net2', 'not repaired net1'],
    );
  });

  it('runs exactly one more repair for causes that arrive while one runs', async () => {
    const clock = new FakeClock();
    const { calls, repair } = fakeRepair(clock);
    const { lines, reports } = fakeReports();
    const s = new RepairScheduler({ repair, reports, clock, settleMs: 20 });
    s.add(deleted('net1', 'imdsv-net1'));
    await clock.advance(20);
    assert.equal(calls.length, 1);
    await clock.advance(50);
    s.add({ kind: 'namespace-address-removed', network: 'net1' });
    s.add({ kind: 'guest-set-changed', network: 'net1', place: 'inner' });
    await clock.advance(10);
    s.add({ kind: 'namespace-address-removed', network: 'net1' });
    await clock.advance(1000);
    assert.equal(calls.length, 1, 'no second repair while the first runs');
    assert.equal(s.busy('net1'), true);
    calls[0]?.finish(fixed);
    await clock.advance(19);
    assert.equal(calls.length, 1, 'the next one waits for its settle window');
    await clock.advance(1);
    assert.equal(calls.length, 2);
    assert.deepEqual(
      calls[1]?.causes.map((c) => c.kind),
      ['namespace-address-removed', 'guest-set-changed'],
    );
    calls[1]?.finish({ state: 'serving', report: undefined });
    await clock.advance(10_000);
    assert.equal(calls.length, 2, 'exactly one more');
    assert.deepEqual(
      lines.map((l) => l.msg),
      ['repaired'],
      'a repair that found nothing is not logged',
    );
    assert.equal(s.busy('net1'), false);
  });

  it('stops: no repair starts any more, and stopping waits for the one running (shutdown closes the listeners next)', async () => {
    const clock = new FakeClock();
    const { calls, repair } = fakeRepair(clock);
    const { reports } = fakeReports();
    const s = new RepairScheduler({ repair, reports, clock, settleMs: 20 });
    s.add(deleted('net1', 'imdsv-net1'));
    s.add(deleted('net2', 'imdsv-net2'));
    await clock.advance(20);
    s.add(deleted('net1', 'imdsb-net1'));
    s.add(deleted('net3', 'imdsv-net3'));
    let stopped = false;
    const stopping = s.stop().then(() => (stopped = true));
    await clock.advance(1000);
    assert.equal(stopped, false, 'two repairs still running');
    calls[0]?.finish(fixed);
    await clock.advance(1000);
    assert.equal(stopped, false, 'one still running');
    calls[1]?.finish(new Error('observe failed'));
    await stopping;
    await clock.advance(100_000);
    assert.deepEqual(
      calls.map((c) => c.network),
      ['net1', 'net2'],
      'nothing after stop: not the causes that came while they ran, nor a retry',
    );
    assert.equal(clock.pending(), 0);
  });

  it('drops the causes of a network that is no longer declared', async () => {
    const clock = new FakeClock();
    const { calls, repair } = fakeRepair(clock, () => ({ state: 'gone' }));
    const { lines, reports } = fakeReports();
    const s = new RepairScheduler({ repair, reports, clock, settleMs: 20 });
    s.add({ kind: 'namespace-removed', network: 'old' });
    await clock.advance(60_000);
    assert.equal(calls.length, 1);
    assert.deepEqual(lines, []);
    assert.equal(s.busy('old'), false);
  });
});
