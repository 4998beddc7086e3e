// Counters the request path and the reconciler update: plain numbers, no library on the hot path.
// src/metrics.ts exposes them in Prometheus format when /metrics is scraped.
import { ContactBook } from './contact.ts';

/** Upper bounds (seconds) of the request duration histogram. */
export const REQUEST_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1] as const;
/** Upper bounds (seconds) of the reconcile duration histogram. */
export const RECONCILE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10] as const;

export class Histogram {
  readonly bounds: readonly number[];
  /** Non-cumulative counts per bucket; the last slot is +Inf. */
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(value: number): void {
    let i = 0;
    while (i < this.bounds.length && value > (this.bounds[i] as number)) i++;
    this.counts[i] = (this.counts[i] as number) + 1;
    this.sum += value;
    this.count++;
  }
}

export interface NetworkRequestStats {
  byStatus: Map<number, number>;
  duration: Histogram;
}

export class Stats {
  /** When each VM last reached the service (src/contact.ts). */
  readonly contacts = new ContactBook();
  private readonly sources: (() => void)[] = [];

  /** `collect` runs `fn` first: it adds what was counted elsewhere (the native data plane's loop). */
  addSource(fn: () => void): void {
    this.sources.push(fn);
  }

  private collectedAt = -Infinity;

  /**
   * Brings the counters up to date; readers (the metrics scrape, the admin API) call it first. Runs
   * the sources at most every 20 ms (a listing of many VMs reads once).
   */
  collect(): this {
    const now = performance.now();
    if (now - this.collectedAt < 20) return this;
    this.collectedAt = now;
    for (const fn of this.sources) fn();
    return this;
  }

  readonly requests = new Map<string, NetworkRequestStats>();
  readonly reconcileErrors = new Map<string, number>();
  readonly reconcileDuration = new Histogram(RECONCILE_BUCKETS);

  /** One guest request answered. */
  observeRequest(network: string, status: number, seconds: number): void {
    const s = this.requestStats(network);
    s.byStatus.set(status, (s.byStatus.get(status) ?? 0) + 1);
    s.duration.observe(seconds);
  }

  /** Requests the native data plane answered: counts by status, per-bucket durations, their sum and count. */
  addRequests(network: string, byStatus: readonly [number, number][], buckets: readonly number[], sum: number, count: number): void {
    const s = this.requestStats(network);
    for (const [status, n] of byStatus) if (n > 0) s.byStatus.set(status, (s.byStatus.get(status) ?? 0) + n);
    buckets.forEach((n, i) => (s.duration.counts[i] = (s.duration.counts[i] ?? 0) + n));
    s.duration.sum += sum;
    s.duration.count += count;
  }

  private requestStats(network: string): NetworkRequestStats {
    let s = this.requests.get(network);
    if (s === undefined) this.requests.set(network, (s = { byStatus: new Map(), duration: new Histogram(REQUEST_BUCKETS) }));
    return s;
  }

  /** Requests from addresses that are no registered VM of the network (what a VM whose registration is wrong sends). */
  readonly unknownCallerRequests = new Map<string, number>();

  unknownCallers(network: string, n = 1): void {
    if (n > 0) this.unknownCallerRequests.set(network, (this.unknownCallerRequests.get(network) ?? 0) + n);
  }

  /** Guest requests refused before their answer, by network and reason (rate_limited, token_invalid, …). */
  readonly rejections = new Map<string, Map<string, number>>();
  /** Requests without an IMDSv2 session token, by network and VM (as AWS's MetadataNoToken). */
  readonly noTokens = new Map<string, Map<string, number>>();

  /** Packets the namespaces' guard rules dropped as spoofed, by network (read by SpoofWatch). */
  readonly spoofedPackets = new Map<string, number>();

  spoofed(network: string, packets: number): void {
    this.spoofedPackets.set(network, (this.spoofedPackets.get(network) ?? 0) + packets);
  }

  /** Kernel drift repaired, by network and kind (namespace, host_links, namespace_links, nft_table, bridge_table). */
  readonly repairs = new Map<string, Map<string, number>>();
  /** Repairs that did not leave the network serving, by network. */
  readonly repairFailures = new Map<string, number>();

  repaired(network: string, kind: string): void {
    increment(this.repairs, network, kind);
  }

  repairFailed(network: string): void {
    this.repairFailures.set(network, (this.repairFailures.get(network) ?? 0) + 1);
  }

  rejected(network: string, reason: string, n = 1): void {
    increment(this.rejections, network, reason, n);
  }

  /** On the request path: no key strings built, two lookups. */
  noToken(network: string, vm: string, n = 1): void {
    increment(this.noTokens, network, vm, n);
  }

  /**
   * VMs gone from a network (removed, or moved to another network): their per-VM series go, and the
   * contact of each that no longer `exists` anywhere. What the native loop counted for them before is
   * drained first, so a later scrape cannot bring them back.
   */
  forgetVms(gone: readonly { id: string; network: string }[], exists: (vmId: string) => boolean): void {
    if (gone.length === 0) return;
    this.collectedAt = -Infinity;
    this.collect();
    for (const { id, network } of gone) {
      const byVm = this.noTokens.get(network);
      byVm?.delete(id);
      if (byVm?.size === 0) this.noTokens.delete(network);
      if (!exists(id)) this.contacts.forget(id);
    }
  }

  /**
   * Networks no longer declared: their series go (requests, durations, rejections, no-token, unknown
   * callers, spoofed packets, repairs, reconcile errors), so that a deleted network does not stay on
   * every scrape forever. Called at scrape time with the declared networks, after `collect` (what the
   * native loop counted for them is drained first, and dropped with them). Returns the networks dropped.
   */
  forgetNetworks(declared: (network: string) => boolean): string[] {
    const gone = new Set<string>();
    for (const counts of this.networkSeries()) {
      for (const network of counts.keys()) {
        if (declared(network)) continue;
        counts.delete(network);
        gone.add(network);
      }
    }
    return [...gone];
  }

  private networkSeries(): Map<string, unknown>[] {
    return [
      this.requests,
      this.rejections,
      this.noTokens,
      this.unknownCallerRequests,
      this.spoofedPackets,
      this.repairs,
      this.repairFailures,
      this.reconcileErrors,
    ];
  }

  reconcileFailed(network: string): void {
    this.reconcileErrors.set(network, (this.reconcileErrors.get(network) ?? 0) + 1);
  }
}

function increment(counts: Map<string, Map<string, number>>, outer: string, inner: string, n = 1): void {
  let byInner = counts.get(outer);
  if (byInner === undefined) counts.set(outer, (byInner = new Map<string, number>()));
  byInner.set(inner, (byInner.get(inner) ?? 0) + n);
}
