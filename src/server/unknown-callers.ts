// Requests from addresses that are no registered VM of the network — what a VM registered with the
// wrong address or MAC sends — logged at info, at most once per (network, address) a minute, with
// the caller's MAC from the namespace's neighbour table (looked up only for a line that is written)
// and how many requests it made since its last line. The first thing to look at when a VM gets
// nothing. (They are counted per network in Stats as well, on every request.)
import type { Logger } from '../log.ts';
import { LineBudget } from './access-log.ts';

/** Once per key per `intervalMs`; between lines, a key's requests are counted. Holds at most `maxKeys` keys. */
export class OncePerKey {
  private readonly last = new Map<string, { at: number; count: number }>();
  private readonly intervalMs: number;
  private readonly maxKeys: number;

  constructor(intervalMs: number, maxKeys: number) {
    this.intervalMs = intervalMs;
    this.maxKeys = maxKeys;
  }

  /** The requests of `key` to report now (this one included), or 0 while its interval runs. */
  take(key: string, now: number): number {
    const entry = this.last.get(key);
    if (entry !== undefined && now - entry.at < this.intervalMs) {
      entry.count++;
      return 0;
    }
    if (entry === undefined && this.last.size >= this.maxKeys) {
      this.prune(now);
      if (this.last.size >= this.maxKeys) return 0; // a sweep of many addresses: the per-network counter still moves
    }
    const count = (entry?.count ?? 0) + 1;
    this.last.set(key, { at: now, count: 0 });
    return count;
  }

  private prune(now: number): void {
    for (const [key, { at }] of this.last) if (now - at >= this.intervalMs) this.last.delete(key);
  }
}

export interface UnknownCallerOptions {
  /** The caller's MAC in the network's namespace (its neighbour entry), when known. */
  macOf: (network: string, address: string) => string | undefined;
  intervalMs?: number;
  /** Lines at most per second, whatever the addresses (a sweep of a subnet is not a flood of lines). */
  perSecond?: number;
}

export class UnknownCallerLog {
  private readonly once: OncePerKey;
  private readonly budget: LineBudget;
  private readonly log: Logger;
  private readonly macOf: UnknownCallerOptions['macOf'];

  constructor(log: Logger, options: UnknownCallerOptions) {
    this.log = log.child({ component: 'metadata' });
    this.macOf = options.macOf;
    this.once = new OncePerKey(options.intervalMs ?? 60_000, 10_000);
    this.budget = new LineBudget(options.perSecond ?? 20);
  }

  /** A request from `src`, no VM of `network`, answered `status` (for `path`). */
  seen(network: string, src: string, method: string, path: string, status: number, now = Date.now()): void {
    if (!this.log.isLevelEnabled('info')) return;
    const requests = this.once.take(`${network} ${src}`, now);
    if (requests === 0) return;
    const suppressed = this.budget.takeSuppressed(now);
    if (suppressed > 0) this.log.info({ suppressed }, 'requests from unknown addresses: lines suppressed');
    if (!this.budget.take(now)) return;
    this.log.info(
      { network, src, mac: this.macOf(network, src) ?? null, requests, method, path, status },
      'request from an address that is no VM of this network',
    );
  }
}
