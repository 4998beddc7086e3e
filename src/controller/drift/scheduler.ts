// The one scheduler of repairs. Sources hand it typed causes; it merges a burst of them per network
// (a settle window), runs one repair at a time per network (networks are independent), backs off
// while a repair fails (0.5 s doubling to 30 s, keeping the causes for the next attempt), and
// reports: a repair that changed something is logged once and counted; a failure is logged with
// when the next attempt comes. Causes that arrive while a repair runs lead to exactly one more.
import { messageOf } from '../../errors.ts';
import { describeCause, type Cause } from './causes.ts';
import { systemClock, type Clock, type Timer } from './clock.ts';
import type { RepairFailure, RepairReport } from './report.ts';

/** What a repair found and did. */
export type RepairOutcome =
  /** The network is no longer declared: nothing to repair, its causes are dropped. */
  | { state: 'gone' }
  /** The network serves; `report` says what was wrong and done (undefined: nothing was, or it was reported where it was done). */
  | { state: 'serving'; report: Omit<RepairReport, 'noticed'> | undefined }
  /** The network does not serve after the repair. */
  | { state: 'degraded'; wrong: string[]; reason: string };

/** Where the scheduler reports (RepairLog). */
export interface SchedulerReports {
  repaired(network: string, report: RepairReport, ms: number): void;
  notRepaired(network: string, failure: RepairFailure): void;
  checkFailed(network: string, failure: RepairFailure): void;
}

export interface SchedulerDeps {
  /** The targeted repair of one network for these causes. */
  repair(network: string, causes: readonly Cause[]): Promise<RepairOutcome>;
  reports: SchedulerReports;
  clock?: Clock;
  /** How long a burst of causes is gathered before the repair, ms. */
  settleMs?: number;
}

export const SETTLE_MS = 20;
export const BACKOFF_FIRST_MS = 500;
export const BACKOFF_MAX_MS = 30_000;

/** The delay before attempt n+1 after n failed attempts in a row (n >= 1). */
export function backoffMs(failures: number): number {
  return Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (failures - 1));
}

interface NetworkState {
  /** Causes not yet handed to a repair, by their description (one of each). */
  causes: Map<string, Cause>;
  timer: Timer | undefined;
  running: boolean;
  failures: number;
  /** No attempt before this time (clock ms): the backoff. */
  notBefore: number;
}

export class RepairScheduler {
  private readonly deps: SchedulerDeps;
  private readonly clock: Clock;
  private readonly networks = new Map<string, NetworkState>();
  /** Repairs running now. */
  private readonly inFlight = new Set<Promise<void>>();
  private stopped = false;
  /** Paused (a hand-over in progress): causes are dropped, nothing runs. */
  private paused = false;

  constructor(deps: SchedulerDeps) {
    this.deps = deps;
    this.clock = deps.clock ?? systemClock;
  }

  /** A source noticed something about a network. */
  add(cause: Cause): void {
    if (this.stopped || this.paused) return;
    let s = this.networks.get(cause.network);
    if (s === undefined) {
      s = { causes: new Map(), timer: undefined, running: false, failures: 0, notBefore: 0 };
      this.networks.set(cause.network, s);
    }
    s.causes.set(describeCause(cause), cause);
    this.arm(cause.network, s);
  }

  /** Whether a repair of the network is waiting or running (tests, shutdown). */
  busy(network: string): boolean {
    const s = this.networks.get(network);
    return s !== undefined && (s.running || s.timer !== undefined);
  }

  /**
   * No repair starts from now on; resolves once the repairs running now have ended (a reconcile in
   * flight would otherwise open a listener again after shutdown closed them all).
   */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.drain();
  }

  /** As stop, until `resume()`: what is noticed meanwhile is dropped (the caller checks again after). */
  async pause(): Promise<void> {
    this.paused = true;
    await this.drain();
  }

  resume(): void {
    this.paused = false;
  }

  private async drain(): Promise<void> {
    for (const s of this.networks.values()) if (s.timer !== undefined) this.clock.clearTimeout(s.timer);
    this.networks.clear();
    await Promise.all(this.inFlight);
  }

  /** Starts the settle (or backoff) timer unless a repair runs or is already due. */
  private arm(network: string, s: NetworkState): void {
    if (this.stopped || this.paused || s.running || s.timer !== undefined || s.causes.size === 0) return;
    const delay = Math.max(this.deps.settleMs ?? SETTLE_MS, s.notBefore - this.clock.now());
    s.timer = this.clock.setTimeout(() => {
      const run = this.run(network, s);
      this.inFlight.add(run);
      void run.finally(() => this.inFlight.delete(run));
    }, delay);
  }

  private async run(network: string, s: NetworkState): Promise<void> {
    s.timer = undefined;
    if (this.stopped || this.paused) return;
    s.running = true;
    const causes = [...s.causes.values()];
    s.causes.clear();
    const started = this.clock.now();
    try {
      const outcome = await this.deps.repair(network, causes);
      this.settle(network, s, causes, outcome, started);
    } catch (err) {
      this.failed(network, s, causes);
      this.deps.reports.checkFailed(network, { noticed: causes.map(describeCause), err: messageOf(err), retry_in_ms: this.retryIn(s) });
    } finally {
      s.running = false;
      if (this.networks.get(network) === s) {
        if (s.causes.size > 0) this.arm(network, s);
        else if (s.failures === 0) this.networks.delete(network);
      }
    }
  }

  private settle(network: string, s: NetworkState, causes: Cause[], outcome: RepairOutcome, started: number): void {
    const noticed = causes.map(describeCause);
    switch (outcome.state) {
      case 'gone':
        this.networks.delete(network);
        return;
      case 'serving':
        s.failures = 0;
        s.notBefore = 0;
        if (outcome.report !== undefined) this.deps.reports.repaired(network, { noticed, ...outcome.report }, this.clock.now() - started);
        return;
      case 'degraded':
        this.failed(network, s, causes);
        this.deps.reports.notRepaired(network, { noticed, wrong: outcome.wrong, err: outcome.reason, retry_in_ms: this.retryIn(s) });
        return;
    }
  }

  /** One more failure: the causes wait for the next attempt, which backs off. */
  private failed(network: string, s: NetworkState, causes: readonly Cause[]): void {
    s.failures++;
    s.notBefore = this.clock.now() + backoffMs(s.failures);
    const newer = [...s.causes];
    s.causes.clear();
    for (const c of causes) s.causes.set(describeCause(c), c);
    for (const [key, c] of newer) s.causes.set(key, c);
  }

  private retryIn(s: NetworkState): number {
    return Math.round(s.notBefore - this.clock.now());
  }
}
