// Keeps the local inventory equal to this host's placement in the registry: a full read at start
// (and after a compaction), then the watch from the revision after it. Every watch message updates
// the registry's state and, when this host's placement changed, applies it to the inventory (once
// for all the messages of one round of I/O) as one batch of origin `registry` that also prunes
// what left (idempotent: a repeated event changes nothing). While etcd is unreachable the
// inventory keeps what it has (the local copy serves) and the sync retries; `status()` says
// whether it is connected. A registry whose `layout` key names a version this imds does not know is
// not applied at all (the local copy keeps serving, the daemon reports itself degraded and writes
// are refused) until the key says version 1 again: its documents may not mean what this code reads.
import { isDeepStrictEqual } from 'node:util';
import { messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { BatchInput, BatchOptions, BatchResult } from '../store/batch-plan.ts';
import type { EtcdApi, Watch, WatchEvent } from './etcd-api.ts';
import { LAYOUT_VERSION, parseKey, registryKeys, type RegistryKeys } from './layout.ts';
import { placementOf, type Placement } from './placement.ts';
import { applyEvents, emptyState, stateOf, type RegistryState } from './registry-state.ts';

/** Where the placement goes: the inventory (its applyBatch). */
export interface SyncTarget {
  applyBatch(batch: BatchInput, options: BatchOptions): BatchResult;
  /** The VM's local password ('' when none). */
  password(vmId: string): string;
}

export interface RegistryStatus {
  connected: boolean;
  /** The last etcd revision applied (0: none yet since the daemon started). */
  revision: number;
  lastError: string | undefined;
  /** When `connected` last changed (ISO 8601). */
  since: string;
}

export interface RegistrySyncOptions {
  /** Gives the client (made once, lazily: a daemon started while etcd is down still starts). */
  etcd: () => Promise<EtcdApi>;
  prefix: string;
  hostId: string;
  target: SyncTarget;
  log: Logger;
  /** First and longest wait between attempts while etcd cannot be read. Default 250 ms, 5 s. */
  retryMs?: { first: number; max: number };
  /** A placement changed the inventory (the daemon converges the kernel when networks changed). */
  onApplied?: (result: BatchResult) => void;
  /** A local password not yet in the registry that must be kept (a guest's, being published). */
  keepPassword?: (vmId: string) => boolean;
  /** The shared IMDSv2 token key changed (undefined: none in the registry). */
  onTokenKey?: (key: Buffer | undefined) => void;
  /** Called once by start() (the daemon registers its host then). */
  onStart?: () => void;
  now?: () => Date;
}

interface Waiter {
  revision: number;
  resolve: (reached: boolean) => void;
  timer: NodeJS.Timeout;
}

export class RegistrySync {
  readonly keys: RegistryKeys;
  private readonly opts: RegistrySyncOptions;
  private api: EtcdApi | undefined;
  private watch: Watch | undefined;
  /** Bumped at every (re)read: handlers of an older watch are ignored. */
  private generation = 0;
  private current: RegistryState = emptyState();
  private applied: Placement | undefined;
  /** The last placement computed was refused by the local store: every event may be the fix. */
  private refused = false;
  /** Why the registry's layout is not one this imds knows (nothing is applied then); undefined when it is. */
  private layoutRefusal: string | undefined;
  private readonly st: RegistryStatus;
  private waiters: Waiter[] = [];
  private retryTimer: NodeJS.Timeout | undefined;
  private retryDelay: number;
  private closed = false;
  /** The token key last told to onTokenKey; null: none told yet (the first read always tells, absent included). */
  private tokenKey: Buffer | undefined | null = null;
  /** Watch messages that changed the registry but no key of this host's placement (not recomputed). */
  skipped = 0;
  /** Placements computed and applied (one per burst of watch messages at most). */
  placements = 0;
  /** A placement owed to watch messages of this round of I/O, and the revision they reached. */
  private owed: { revision: number; immediate: NodeJS.Immediate } | undefined;

  constructor(opts: RegistrySyncOptions) {
    this.opts = opts;
    this.keys = registryKeys(opts.prefix);
    this.retryDelay = opts.retryMs?.first ?? 250;
    this.st = { connected: false, revision: 0, lastError: undefined, since: this.now() };
  }

  /** Starts the first read; never throws (a failure is retried and shown in `status()`). */
  start(): Promise<void> {
    this.opts.onStart?.();
    return this.resync();
  }

  /** With a layout this imds does not know: not connected (degraded), and the layout is the error. */
  status(): RegistryStatus {
    if (this.layoutRefusal === undefined) return { ...this.st };
    return { ...this.st, connected: false, lastError: this.layoutRefusal };
  }

  /** Why the registry cannot be used (a layout this imds does not know); writes are refused with it. */
  get layoutProblem(): string | undefined {
    return this.layoutRefusal;
  }

  /** The registry as last read (every host's VMs): what writes validate against. */
  get state(): Readonly<RegistryState> {
    return this.current;
  }

  /** Resolves true once `revision` is applied, false after `timeoutMs`. */
  waitForRevision(revision: number, timeoutMs: number): Promise<boolean> {
    if (this.st.revision >= revision) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter: Waiter = {
        revision,
        resolve,
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          resolve(false);
        }, timeoutMs),
      };
      this.waiters.push(waiter);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.generation++;
    clearTimeout(this.retryTimer);
    if (this.owed !== undefined) clearImmediate(this.owed.immediate);
    this.owed = undefined;
    this.watch?.close();
    this.watch = undefined;
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.resolve(false);
    }
    this.waiters = [];
    await this.api?.close();
  }

  private now(): string {
    return (this.opts.now?.() ?? new Date()).toISOString();
  }

  private setConnected(up: boolean, reason?: string): void {
    if (reason !== undefined) this.st.lastError = reason;
    if (this.st.connected === up) return;
    this.st.connected = up;
    this.st.since = this.now();
    if (up) this.opts.log.info({ revision: this.st.revision }, 'registry connected');
    else this.opts.log.warn({ reason }, 'registry unreachable: serving from the local copy');
  }

  private async resync(): Promise<void> {
    if (this.closed) return;
    clearTimeout(this.retryTimer);
    this.watch?.close();
    this.watch = undefined;
    const generation = ++this.generation;
    try {
      this.api ??= await this.opts.etcd();
      if (this.closed) {
        await this.api.close(); // closed while the client was being made: close() found none to close
        return;
      }
      const range = await this.api.rangePrefix(this.keys.root);
      if (generation !== this.generation) return;
      this.current = stateOf(range.kvs, this.keys, (key, reason) => this.badDocument(key, reason));
      this.applyPlacement();
      this.reached(range.revision);
      this.retryDelay = this.opts.retryMs?.first ?? 250;
      this.setConnected(true);
      this.opts.log.info({ revision: range.revision, keys: range.kvs.length }, 'registry read');
      this.watch = this.api.watchPrefix(this.keys.root, range.revision + 1, {
        events: (events, revision) => {
          if (generation === this.generation) this.onEvents(events, revision);
        },
        compacted: (compactRevision) => {
          if (generation !== this.generation) return;
          this.opts.log.warn({ compactRevision, revision: this.st.revision }, 'registry watch compacted: reading everything again');
          void this.resync();
        },
        connection: (up, reason) => {
          if (generation === this.generation) this.setConnected(up, reason);
        },
      });
    } catch (err) {
      if (generation !== this.generation || this.closed) return;
      this.setConnected(false, messageOf(err));
      this.st.lastError = messageOf(err);
      const delay = this.retryDelay;
      this.retryDelay = Math.min(delay * 2, this.opts.retryMs?.max ?? 5000);
      this.opts.log.debug({ err: messageOf(err), retryMs: delay }, 'registry read failed; retrying');
      this.retryTimer = setTimeout(() => void this.resync(), delay);
      this.retryTimer.unref();
    }
  }

  private onEvents(events: readonly WatchEvent[], revision: number): void {
    this.setConnected(true);
    // Events of other hosts' VMs (most of them in a large fleet) skip the placement, which walks the whole registry.
    const before = this.concernsThisHost(events);
    const changed = applyEvents(this.current, events, this.keys, (key, reason) => this.badDocument(key, reason));
    if (changed && (before || this.concernsThisHost(events))) this.owePlacement(revision);
    else {
      if (changed) this.skipped++;
      // A placement still owed covers this message too (it is computed from the whole state): its
      // revision is reached when that placement is applied, not before.
      if (this.owed !== undefined) this.owePlacement(revision);
      else this.reached(revision);
    }
  }

  /**
   * The placement is computed from the whole registry (at 10,000 VMs, tens of ms): the messages of
   * a burst of writes, delivered in one round of I/O, are applied as one placement at the end of it
   * (an owed one only moves on to the later revision).
   */
  private owePlacement(revision: number): void {
    if (this.owed !== undefined) {
      this.owed.revision = Math.max(this.owed.revision, revision);
      return;
    }
    this.owed = {
      revision,
      immediate: setImmediate(() => {
        const owed = this.owed;
        this.owed = undefined;
        if (owed === undefined || this.closed) return;
        this.applyPlacement();
        this.reached(owed.revision);
      }),
    };
  }

  /** Whether any event may change this host's placement, judged on the state as it is now (call before and after applying). */
  private concernsThisHost(events: readonly WatchEvent[]): boolean {
    if (this.applied === undefined || this.refused) return true;
    const { hostId } = this.opts;
    const nets = new Set([...this.applied.networks.map((n) => n.id), ...this.applied.orphans.map((o) => o.network)]);
    return events.some((e) => {
      const parsed = parseKey(this.keys, e.type === 'put' ? e.kv.key : e.key);
      if (parsed === undefined || parsed.kind === 'host' || parsed.kind === 'alive') return false;
      if (parsed.kind === 'token-key' || parsed.kind === 'layout') return true;
      if (parsed.kind === 'network') return nets.has(parsed.id);
      return this.current.vms.get(parsed.id)?.host === hostId; // a VM or its password
    });
  }

  private reached(revision: number): void {
    if (revision > this.st.revision) this.st.revision = revision;
    const done = this.waiters.filter((w) => w.revision <= this.st.revision);
    if (done.length === 0) return;
    this.waiters = this.waiters.filter((w) => w.revision > this.st.revision);
    for (const w of done) {
      clearTimeout(w.timer);
      w.resolve(true);
    }
  }

  private badDocument(key: string, reason: string): void {
    this.opts.log.error({ key, reason }, 'registry document ignored: it does not validate');
  }

  /** VMs served here with a local password the registry no longer holds (cleared on another host), unless it is being published. */
  private passwordsGone(next: Placement): Set<string> {
    const { target, keepPassword } = this.opts;
    const gone = next.vms.filter((v) => !next.passwords.has(v.id) && target.password(v.id) !== '' && keepPassword?.(v.id) !== true);
    return new Set(gone.map((v) => v.id));
  }

  /** Sets `layoutRefusal` from the layout key; true when the registry must not be applied. */
  private layoutRefused(): boolean {
    const layout = this.current.layout;
    const problem =
      layout === undefined || (layout.ok && layout.value === LAYOUT_VERSION)
        ? undefined
        : layout.ok
          ? `the registry's layout is version ${layout.value}; this imds knows version ${LAYOUT_VERSION} only: ` +
            'not applying it (serving the local copy, writes refused); upgrade imds or put the layout back'
          : `the registry's layout key ${this.keys.layout} does not validate (${layout.reason}): ` +
            'not applying the registry (serving the local copy, writes refused)';
    if (problem !== this.layoutRefusal) {
      if (problem === undefined) this.opts.log.info({ version: LAYOUT_VERSION }, 'registry layout known again: applying the registry');
      else this.opts.log.error({ key: this.keys.layout, reason: problem }, 'registry layout not known');
    }
    this.layoutRefusal = problem;
    return problem !== undefined;
  }

  /** Applies this host's placement when it differs from the last one applied (nothing with a layout this imds does not know). */
  private applyPlacement(): void {
    if (this.layoutRefused()) return;
    if (this.tokenKey === null || !isDeepStrictEqual(this.tokenKey, this.current.tokenKey)) {
      this.tokenKey = this.current.tokenKey;
      this.opts.onTokenKey?.(this.tokenKey);
    }
    this.placements++;
    const next = placementOf(this.current, this.opts.hostId);
    if (this.applied !== undefined && isDeepStrictEqual(next, this.applied)) return;
    if (next.orphans.length > 0 && !isDeepStrictEqual(next.orphans, this.applied?.orphans))
      this.opts.log.warn({ vms: next.orphans }, 'VMs placed on this host name networks missing from the registry: they are not served');
    try {
      const result = this.opts.target.applyBatch(
        { networks: next.networks, vms: next.vms, passwords: next.passwords, clearPasswords: this.passwordsGone(next) },
        { origin: 'registry', pruneOrigin: 'registry' },
      );
      this.applied = next;
      if (this.refused) this.st.lastError = undefined;
      this.refused = false;
      this.opts.onApplied?.(result);
      this.opts.log.info(
        {
          networks: {
            created: result.networks.created.length,
            updated: result.networks.updated.length,
            deleted: result.networks.deleted.length,
          },
          vms: { created: result.vms.created.length, updated: result.vms.updated.length, deleted: result.vms.deleted.length },
        },
        'registry placement applied',
      );
    } catch (err) {
      this.refused = true;
      this.st.lastError = `placement not applied: ${messageOf(err)}`;
      this.opts.log.error({ err: messageOf(err) }, 'registry placement refused by the local store: keeping the previous one');
    }
  }
}
