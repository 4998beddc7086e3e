// FOR UNIT TESTS ONLY: an in-memory EtcdApi that follows the interface's contract (src/registry/etcd-api.ts)
// and etcd's semantics as far as the registry's pure logic needs them: one revision counter bumped
// by every successful write, prefix ranges at one revision, transactions with create-only and
// mod-revision compares, watches from a revision (history replayed, then live events, delivered
// asynchronously), compaction, and an outage switch (calls fail, watches report connection(false)
// and resume after the last revision they delivered once back). It is not etcd: integration tests
// use a real cluster.
import type {
  Compare,
  EtcdApi,
  KeyValue,
  Op,
  RangeResult,
  TxnResult,
  Watch,
  WatchEvent,
  WatchHandlers,
} from '../../src/registry/etcd-api.ts';

interface FakeWatch {
  prefix: string;
  /** The next revision to deliver. */
  next: number;
  handlers: WatchHandlers;
  closed: boolean;
  /** Told connection(false) during the outage in progress. */
  down: boolean;
}

export class FakeEtcd implements EtcdApi {
  revision = 1;
  compactRevision = 0;
  private readonly kvs = new Map<string, KeyValue>();
  /** Every event with the revision it happened at. */
  private readonly history: { revision: number; event: WatchEvent }[] = [];
  private readonly watches = new Set<FakeWatch>();
  private unavailable = false;
  /** Watches cut off (connection(false), no delivery) while calls still work. */
  private watchesCut = false;
  /** Each event in a watch message of its own (as etcd sends a burst of separate writes), all in one round. */
  messagePerEvent = false;
  /** Counts of calls, for tests that check what was asked. */
  readonly calls = { rangePrefix: 0, get: 0, txn: 0, watchPrefix: 0, close: 0 };

  private check(): void {
    if (this.unavailable) throw new Error('14 UNAVAILABLE: No connection established (fake)');
  }

  async rangePrefix(prefix: string): Promise<RangeResult> {
    this.calls.rangePrefix++;
    await Promise.resolve();
    this.check();
    const kvs = [...this.kvs.values()].filter((kv) => kv.key.startsWith(prefix)).sort((a, b) => (a.key < b.key ? -1 : 1));
    return { kvs: kvs.map((kv) => ({ ...kv })), revision: this.revision };
  }

  async get(key: string): Promise<KeyValue | undefined> {
    this.calls.get++;
    await Promise.resolve();
    this.check();
    const kv = this.kvs.get(key);
    return kv === undefined ? undefined : { ...kv };
  }

  /** Runs before the next transactions (a concurrent writer getting in first). */
  beforeTxn: (() => Promise<void> | void) | undefined;
  /** etcd's --max-txn-ops: more compares or operations in one transaction are refused. */
  maxTxnOps = 128;

  async txn(compares: readonly Compare[], ops: readonly Op[]): Promise<TxnResult> {
    this.calls.txn++;
    await this.beforeTxn?.();
    await Promise.resolve();
    this.check();
    if (compares.length > this.maxTxnOps || ops.length > this.maxTxnOps)
      throw new Error('3 INVALID_ARGUMENT: etcdserver: too many operations in txn request');
    const holds = compares.every((c) => {
      if ('prefix' in c) return [...this.kvs.values()].every((kv) => !kv.key.startsWith(c.key) || kv.modRevision <= c.unchangedSince);
      const kv = this.kvs.get(c.key);
      return 'absent' in c ? kv === undefined : kv?.modRevision === c.modRevision;
    });
    if (!holds || ops.length === 0) return { succeeded: holds, revision: this.revision };
    const keys = ops.map((op) => ('put' in op ? op.put : op.delete));
    if (new Set(keys).size !== keys.length) throw new Error('3 INVALID_ARGUMENT: etcdserver: duplicate key given in txn request');
    const revision = ++this.revision;
    const events: WatchEvent[] = [];
    for (const op of ops) {
      if ('put' in op) {
        const before = this.kvs.get(op.put);
        const kv = { key: op.put, value: op.value, createRevision: before?.createRevision ?? revision, modRevision: revision };
        this.kvs.set(op.put, kv);
        events.push({ type: 'put', kv: { ...kv } });
      } else if (this.kvs.delete(op.delete)) events.push({ type: 'delete', key: op.delete, modRevision: revision });
    }
    for (const event of events) this.history.push({ revision, event });
    this.deliverSoon();
    return { succeeded: true, revision };
  }

  /** A plain put (as `etcdctl put` does). */
  put(key: string, value: string): Promise<TxnResult> {
    return this.txn([], [{ put: key, value }]);
  }

  delete(key: string): Promise<TxnResult> {
    return this.txn([], [{ delete: key }]);
  }

  watchPrefix(prefix: string, fromRevision: number, handlers: WatchHandlers): Watch {
    this.calls.watchPrefix++;
    const w: FakeWatch = { prefix, next: fromRevision, handlers, closed: false, down: false };
    this.watches.add(w);
    this.deliverSoon();
    return {
      close: () => {
        w.closed = true;
        this.watches.delete(w);
      },
    };
  }

  /** Forgets history before `revision` (etcdctl compact). */
  compact(revision: number): void {
    this.compactRevision = revision;
    for (let i = this.history.length - 1; i >= 0; i--)
      if ((this.history[i] as { revision: number }).revision < revision) this.history.splice(i, 1);
    this.deliverSoon();
  }

  /** Every endpoint unreachable (true) or back (false). */
  setUnavailable(down: boolean): void {
    this.unavailable = down;
    this.deliverSoon();
  }

  /** Cuts the watch streams only (a partition between the daemon's watch and etcd), or restores them. */
  cutWatches(cut: boolean): void {
    this.watchesCut = cut;
    this.deliverSoon();
  }

  watchCount(): number {
    return this.watches.size;
  }

  async close(): Promise<void> {
    this.calls.close++;
    for (const w of this.watches) w.closed = true;
    this.watches.clear();
    await Promise.resolve();
  }

  private deliverSoon(): void {
    setImmediate(() => this.deliver());
  }

  private deliver(): void {
    for (const w of [...this.watches]) {
      if (w.closed) continue;
      if (this.unavailable || this.watchesCut) {
        if (!w.down) {
          w.down = true;
          w.handlers.connection(false, '14 UNAVAILABLE (fake)');
        }
        continue;
      }
      if (w.down) {
        w.down = false;
        w.handlers.connection(true);
      }
      if (w.next <= this.compactRevision) {
        this.watches.delete(w);
        w.closed = true;
        w.handlers.compacted(this.compactRevision);
        continue;
      }
      const due = this.history.filter((h) => h.revision >= w.next && keyOf(h.event).startsWith(w.prefix));
      if (w.next <= this.revision) w.next = this.revision + 1;
      if (due.length > 0 && this.messagePerEvent) for (const h of due) w.handlers.events([h.event], h.revision);
      else if (due.length > 0)
        w.handlers.events(
          due.map((h) => h.event),
          this.revision,
        );
    }
  }
}

function keyOf(event: WatchEvent): string {
  return event.type === 'put' ? event.kv.key : event.key;
}

/** Resolves after pending deliveries (setImmediate rounds) have run. */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}
