// Per-caller token buckets: each (network, source address) may make `burst` requests at once and
// `perSecond` a second after that. A caller over its budget is told when to come back (429 and
// Retry-After) at the cost of a map lookup; it cannot take the daemon's time from its neighbours.

interface Bucket {
  tokens: number;
  at: number;
  /** Requests refused since the bucket was made. */
  refused: number;
}

/** A caller's bucket as it is now (nothing taken): what `imds doctor` shows. */
export interface BucketState {
  /** Tokens left, refilled to now (a request needs one). */
  tokens: number;
  /** Requests refused (429) since the bucket was made; a bucket idle until full may be dropped, and this with it. */
  refused: number;
}

export interface RateLimitOptions {
  perSecond: number;
  burst: number;
  /** Buckets kept before idle (full) ones are dropped. */
  maxBuckets?: number;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly perMs: number;
  private readonly burst: number;
  private readonly maxBuckets: number;

  constructor(options: RateLimitOptions) {
    this.perMs = options.perSecond / 1000;
    this.burst = options.burst;
    this.maxBuckets = options.maxBuckets ?? 100_000;
  }

  /** Takes one request from `key`'s bucket: 0 when allowed, else the seconds until one is (≥ 1). */
  take(key: string, nowMs = performance.now()): number {
    let b = this.buckets.get(key);
    if (b === undefined) {
      if (this.buckets.size >= this.maxBuckets) this.sweep(nowMs);
      b = { tokens: this.burst, at: nowMs, refused: 0 };
      this.buckets.set(key, b);
    } else {
      b.tokens = Math.min(this.burst, b.tokens + (nowMs - b.at) * this.perMs);
      b.at = nowMs;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    b.refused++;
    return Math.max(1, Math.ceil((1 - b.tokens) / this.perMs / 1000));
  }

  /** `key`'s bucket without taking from it; undefined when it has none (never asked, or idle and dropped). */
  peek(key: string, nowMs = performance.now()): BucketState | undefined {
    const b = this.buckets.get(key);
    if (b === undefined) return undefined;
    return { tokens: Math.min(this.burst, b.tokens + (nowMs - b.at) * this.perMs), refused: b.refused };
  }

  get size(): number {
    return this.buckets.size;
  }

  /** Drops buckets that have refilled (their callers are idle); if none, the oldest half. */
  private sweep(nowMs: number): void {
    for (const [key, b] of this.buckets) {
      if (b.tokens + (nowMs - b.at) * this.perMs >= this.burst) this.buckets.delete(key);
    }
    if (this.buckets.size < this.maxBuckets) return;
    let drop = Math.floor(this.buckets.size / 2);
    for (const key of this.buckets.keys()) {
      if (drop-- <= 0) break;
      this.buckets.delete(key);
    }
  }
}

/** The limiter as the guest guard asks it: one bucket per (network, source address); `peek` for doctor. */
export function callerLimiter(limiter: RateLimiter): {
  take(network: string, source: string): number;
  peek(network: string, source: string): BucketState | undefined;
} {
  return {
    take: (network, source) => limiter.take(`${network}|${source}`),
    peek: (network, source) => limiter.peek(`${network}|${source}`),
  };
}
