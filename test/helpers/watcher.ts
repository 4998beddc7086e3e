// A guest that asks for its metadata continuously (test/helpers/guest/watch.mjs, every request
// reported with its start, end and outcome), and what its requests say about an outage.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { Guest } from './sandbox.ts';

const GUEST_DIR = new URL('./guest/', import.meta.url).pathname;

/** One request of the watcher: start and end (epoch ms), outcome and, for a failure, why. */
export interface WatchedRequest {
  s: number;
  e: number;
  ok: boolean;
  why?: string;
}

type Waiter = { what: string; pred: (r: WatchedRequest) => boolean; resolve: (r: WatchedRequest) => void; reject: (e: Error) => void };

export class Watcher {
  readonly name: string;
  readonly requests: WatchedRequest[] = [];
  private readonly child: ChildProcess;
  private readonly waiters: Waiter[] = [];
  private stderr = '';
  private ended: string | undefined;
  private stopped = false;

  /** `timeoutMs` below 1 s (the first SYN retransmission): a lost SYN is a failure, not a late success. */
  constructor(guest: Guest, options: { intervalMs?: number; timeoutMs?: number } = {}) {
    this.name = guest.name;
    const args = [join(GUEST_DIR, 'watch.mjs'), String(options.intervalMs ?? 10), String(options.timeoutMs ?? 200)];
    this.child = spawn('ip', ['netns', 'exec', guest.netns, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    this.child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const r = JSON.parse(buf.slice(0, nl)) as WatchedRequest;
        buf = buf.slice(nl + 1);
        this.requests.push(r);
        for (const w of [...this.waiters]) {
          if (w.pred(r)) {
            this.waiters.splice(this.waiters.indexOf(w), 1);
            w.resolve(r);
          }
        }
      }
    });
    this.child.stderr?.on('data', (d: Buffer) => void (this.stderr = (this.stderr + d.toString()).slice(-4000)));
    this.child.once('exit', (code, signal) => {
      if (this.stopped) return;
      this.ended = `watcher ${this.name} exited (code ${code}, signal ${signal}): ${this.stderr}`;
      for (const w of this.waiters.splice(0)) w.reject(new Error(`${w.what}: ${this.ended}`));
    });
  }

  /** Resolves with the first request (already reported or to come) that matches; rejects after `timeoutMs` or if the watcher dies. */
  waitFor(what: string, pred: (r: WatchedRequest) => boolean, timeoutMs: number): Promise<WatchedRequest> {
    const seen = this.requests.find(pred);
    if (seen !== undefined) return Promise.resolve(seen);
    if (this.ended !== undefined) return Promise.reject(new Error(`${what}: ${this.ended}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(entry), 1);
        const last = this.requests
          .slice(-5)
          .map((r) => JSON.stringify(r))
          .join('\n  ');
        reject(new Error(`${this.name}: timed out after ${timeoutMs} ms waiting for ${what}; its last requests:\n  ${last}`));
      }, timeoutMs);
      const entry: Waiter = {
        what,
        pred,
        resolve: (r) => (clearTimeout(timer), resolve(r)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
      this.waiters.push(entry);
    });
  }

  /** A request that started at or after `t` and got its document. */
  servedAfter(t: number, timeoutMs: number, what = `a request started after ${t} to be served`): Promise<WatchedRequest> {
    return this.waitFor(what, (r) => r.ok && r.s >= t, timeoutMs);
  }

  /** The requests that ended in (from, to]: every request in flight at `from` that ended after it counts. */
  endedBetween(from: number, to: number): WatchedRequest[] {
    return this.requests.filter((r) => r.e > from && r.e <= to);
  }

  stop(): void {
    this.stopped = true;
    this.child.kill('SIGKILL');
  }
}

export interface Outage {
  /** The failed requests, in order (the first may have started before the damage). */
  failed: WatchedRequest[];
  /** When the first failed request started, ms after the damage (negative: in flight across it). */
  from: number;
  /** When the first failure was seen, ms after the damage. */
  down: number;
  /** When the first success after the last failure ended, ms after the damage (undefined: not yet). */
  back: number | undefined;
}

/**
 * The outage a damage at `t0` caused, from every request that ended after `t0` and by `until`:
 * a request in flight across the damage that failed counts. Undefined when none failed.
 */
export function outageSince(requests: readonly WatchedRequest[], t0: number, until = Infinity): Outage | undefined {
  const seen = requests.filter((r) => r.e > t0 && r.e <= until);
  const failed = seen.filter((r) => !r.ok);
  const last = failed.at(-1);
  if (last === undefined) return undefined;
  const again = seen.slice(seen.indexOf(last) + 1).find((r) => r.ok);
  const first = failed[0] as WatchedRequest;
  return { failed, from: first.s - t0, down: first.e - t0, back: again === undefined ? undefined : again.e - t0 };
}

/** A one-line summary of an outage for `# measured:` lines. */
export function describeOutage(o: Outage | undefined): string {
  if (o === undefined) return 'no failed request';
  const why = [...new Set(o.failed.map((r) => r.why ?? '?'))].join('/');
  return (
    `${o.failed.length} failed (${why}; the first started at ${signed(o.from)} ms), first failure at +${o.down.toFixed(0)} ` +
    `ms, served again at +${o.back === undefined ? '?' : o.back.toFixed(0)} ms`
  );
}

function signed(ms: number): string {
  return `${ms < 0 ? '' : '+'}${ms.toFixed(0)}`;
}
