// Writes that may not fit one etcd transaction (`vm import`, `network rm --force` of a large
// network): key writes, each guarded by what the key held when read (absent, or its mod revision),
// cut into transactions of at most `maxTxnOps` compares and operations (etcd's --max-txn-ops, 128
// by default) and written in order. Writes that fit one transaction are all or nothing in etcd
// itself. When a later transaction is refused (a key changed since it was read: another writer) or
// fails (etcd unreachable), the ones already written are undone, newest first, each key put back
// only if it still holds what was written (its mod revision is the write's); a watcher may see the
// first transactions for a moment. Keys that cannot be undone are named in the error.
import { ImdsError, isImdsError, messageOf } from '../errors.ts';
import type { Compare, KeyValue, Op, TxnResult } from './etcd-api.ts';

/** One key written: its op, and what it held when read (undefined: absent). */
export interface KeyWrite {
  key: string;
  op: Op;
  before: KeyValue | undefined;
  /**
   * A compare that must hold in the same transaction: a VM's network the write does not change (so
   * it is not changed meanwhile), the VMs' prefix when a network is deleted (no VM written onto it since the read).
   */
  also?: Compare;
}

/** One etcd transaction of a chunked write. */
export interface WriteTxn {
  compares: Compare[];
  ops: Op[];
  writes: KeyWrite[];
}

export interface ChunkEtcd {
  txn(compares: readonly Compare[], ops: readonly Op[]): Promise<TxnResult>;
  get(key: string): Promise<KeyValue | undefined>;
}

/** The compare that holds while the key is as it was read. */
export function guardOf(w: KeyWrite): Compare {
  return w.before === undefined ? { key: w.key, absent: true } : { key: w.key, modRevision: w.before.modRevision };
}

/** Cuts the writes into transactions of at most `maxTxnOps` compares and operations each, in order; `firstOps` go with the first. */
export function chunkWrites(writes: readonly KeyWrite[], maxTxnOps: number, firstOps: readonly Op[] = []): WriteTxn[] {
  const txns: WriteTxn[] = [];
  const fresh = (): WriteTxn => {
    const txn: WriteTxn = { compares: [], ops: txns.length === 0 ? [...firstOps] : [], writes: [] };
    txns.push(txn);
    return txn;
  };
  let current: WriteTxn | undefined;
  for (const w of writes) {
    const extra = (t: WriteTxn) => (w.also !== undefined && !t.compares.some((c) => c.key === w.also?.key) ? 1 : 0);
    if (current === undefined || current.compares.length + 1 + extra(current) > maxTxnOps || current.ops.length + 1 > maxTxnOps)
      current = fresh();
    if (w.also !== undefined && extra(current) === 1) current.compares.push(w.also);
    current.compares.push(guardOf(w));
    current.ops.push(w.op);
    current.writes.push(w);
  }
  return txns;
}

interface Applied {
  txn: WriteTxn;
  revision: number;
}

/**
 * Writes every transaction; returns the revision of the last. Throws REGISTRY_CONFLICT or the
 * failure, after the undo; `what` names the operation in messages ("import", `network rm "net1"`).
 */
export async function writeChunks(etcd: ChunkEtcd, txns: readonly WriteTxn[], what: string): Promise<number> {
  const applied: Applied[] = [];
  for (const txn of txns) {
    let result: TxnResult;
    try {
      result = await etcd.txn(txn.compares, txn.ops);
    } catch (err) {
      // A transaction that failed in flight may still have been applied: its keys cannot be undone
      // (no revision is known) and are named with the others left.
      const maybe = isImdsError(err) && (err.details as { maybeApplied?: boolean } | undefined)?.maybeApplied === true;
      if (applied.length === 0 && !maybe) throw err;
      const left = [...(await undo(etcd, applied)), ...(maybe ? txn.writes.map((w) => w.key) : [])];
      throw new ImdsError(
        isImdsError(err) ? err.code : 'INTERNAL',
        `${what} stopped after ${applied.length} of ${txns.length} transactions: ${messageOf(err)}; ${undoneText(left)}`,
        { details: { transactions: txns.length, written: applied.length, maybeApplied: maybe, notUndone: left }, cause: err },
      );
    }
    if (!result.succeeded) {
      const changed = await firstChanged(etcd, txn);
      const left = await undo(etcd, applied);
      const prefix = changed !== undefined && 'prefix' in changed;
      const key = changed === undefined ? 'a key it writes' : prefix ? `a key under ${changed.key}` : changed.key;
      throw new ImdsError(
        'REGISTRY_CONFLICT',
        `${what}: ${key} changed in the registry since it was read (another writer); ` +
          `${applied.length === 0 ? 'nothing was written' : undoneText(left)}: read it again and retry`,
        { details: { key: changed?.key, prefix, transactions: txns.length, written: applied.length, notUndone: left } },
      );
    }
    applied.push({ txn, revision: result.revision });
  }
  return applied.at(-1)?.revision ?? 0;
}

function undoneText(left: readonly string[]): string {
  if (left.length === 0) return 'what was written was undone, nothing was changed';
  const named = left.slice(0, 5).join(', ') + (left.length > 5 ? ` and ${left.length - 5} more` : '');
  return `undone except ${left.length} key(s) changed again meanwhile, not reachable or of unknown outcome: ${named}`;
}

/** The first compare of a refused transaction that no longer holds (a key's, a VM's network included; else the prefix compared). */
async function firstChanged(etcd: ChunkEtcd, txn: WriteTxn): Promise<Compare | undefined> {
  try {
    for (const c of txn.compares) {
      if ('prefix' in c) continue;
      const kv = await etcd.get(c.key);
      const holds = 'absent' in c ? kv === undefined : kv?.modRevision === c.modRevision;
      if (!holds) return c;
    }
  } catch {
    return undefined; // the error names no key then
  }
  return txn.compares.find((c) => 'prefix' in c);
}

/** The compare and op that put one key back as it was before the write, if it still holds the write. */
function undoOf(w: KeyWrite, revision: number): { compare: Compare; op: Op } {
  const compare: Compare = 'put' in w.op ? { key: w.key, modRevision: revision } : { key: w.key, absent: true };
  const op: Op = w.before === undefined ? { delete: w.key } : { put: w.key, value: w.before.value };
  return { compare, op };
}

/**
 * Undoes the applied transactions, newest first; returns the keys left as written. A transaction
 * whose undo is refused is undone key by key (the keys changed again meanwhile stay); once etcd
 * fails (unreachable: every call would wait for its deadline), nothing more is tried and every key
 * not yet undone is named.
 */
async function undo(etcd: ChunkEtcd, applied: readonly Applied[]): Promise<string[]> {
  const left: string[] = [];
  const newestFirst = [...applied].reverse();
  const keysOf = (writes: readonly KeyWrite[]): string[] => writes.map((w) => w.key);
  const older = (k: number): string[] => newestFirst.slice(k + 1).flatMap((a) => keysOf(a.txn.writes));
  for (const [k, { txn, revision }] of newestFirst.entries()) {
    const steps = txn.writes.map((w) => undoOf(w, revision));
    try {
      const whole = await etcd.txn(
        steps.map((s) => s.compare),
        steps.map((s) => s.op),
      );
      if (whole.succeeded) continue;
    } catch {
      return [...left, ...keysOf(txn.writes), ...older(k)];
    }
    for (const [i, s] of steps.entries()) {
      try {
        const one = await etcd.txn([s.compare], [s.op]);
        if (!one.succeeded) left.push((txn.writes[i] as KeyWrite).key);
      } catch {
        return [...left, ...keysOf(txn.writes.slice(i)), ...older(k)];
      }
    }
  }
  return left;
}
