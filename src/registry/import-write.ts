// Writes a planned registry import (src/registry/import-plan.ts): its transactions in order; when
// one is refused (a key changed since it was read: another writer) or fails (etcd unreachable), the
// transactions already written are undone, newest first, each key put back only if it still holds
// what the import wrote (its mod revision is the import's). An import that fits one transaction is
// all or nothing in etcd itself; a larger one is all or nothing once undone, though a watcher may
// see its first transactions for a moment. Keys that cannot be undone are named in the error.
import { ImdsError, isImdsError, messageOf } from '../errors.ts';
import type { Compare, KeyValue, Op, TxnResult } from './etcd-api.ts';
import type { ImportTxn, KeyWrite } from './import-plan.ts';

export interface ImportEtcd {
  txn(compares: readonly Compare[], ops: readonly Op[]): Promise<TxnResult>;
  get(key: string): Promise<KeyValue | undefined>;
}

interface Applied {
  txn: ImportTxn;
  revision: number;
}

/** Writes every transaction; returns the revision of the last. Throws REGISTRY_CONFLICT or the failure, after the undo. */
export async function writeImport(etcd: ImportEtcd, txns: readonly ImportTxn[]): Promise<number> {
  const applied: Applied[] = [];
  for (const txn of txns) {
    let result: TxnResult;
    try {
      result = await etcd.txn(txn.compares, txn.ops);
    } catch (err) {
      if (applied.length === 0) throw err;
      const left = await undo(etcd, applied);
      throw new ImdsError(
        isImdsError(err) ? err.code : 'INTERNAL',
        `import stopped after ${applied.length} of ${txns.length} transactions: ${messageOf(err)}; ${undoneText(left)}`,
        { details: { transactions: txns.length, written: applied.length, notUndone: left }, cause: err },
      );
    }
    if (!result.succeeded) {
      const changed = await firstChanged(etcd, txn);
      const left = await undo(etcd, applied);
      const what = changed === undefined ? 'a key it writes' : changed;
      throw new ImdsError(
        'REGISTRY_CONFLICT',
        `import: ${what} changed in the registry since it was read (another writer); ${applied.length === 0 ? 'nothing was written' : undoneText(left)}: read it again and retry`,
        { details: { key: changed, transactions: txns.length, written: applied.length, notUndone: left } },
      );
    }
    applied.push({ txn, revision: result.revision });
  }
  return applied.at(-1)?.revision ?? 0;
}

function undoneText(left: readonly string[]): string {
  if (left.length === 0) return 'what was written was undone, nothing was changed';
  const named = left.slice(0, 5).join(', ') + (left.length > 5 ? ` and ${left.length - 5} more` : '');
  return `undone except ${left.length} key(s) changed again meanwhile or not reachable: ${named}`;
}

/** The first key of a refused transaction that no longer holds what was read (a VM's network included). */
async function firstChanged(etcd: ImportEtcd, txn: ImportTxn): Promise<string | undefined> {
  try {
    for (const c of txn.compares) {
      const kv = await etcd.get(c.key);
      const holds = 'absent' in c ? kv === undefined : kv?.modRevision === c.modRevision;
      if (!holds) return c.key;
    }
  } catch {
    // the error names no key then
  }
  return undefined;
}

/** The compare and op that put one key back as it was before the import, if it still holds the import's write. */
function undoOf(w: KeyWrite, revision: number): { compare: Compare; op: Op } {
  const compare: Compare = 'put' in w.op ? { key: w.key, modRevision: revision } : { key: w.key, absent: true };
  const op: Op = w.before === undefined ? { delete: w.key } : { put: w.key, value: w.before.value };
  return { compare, op };
}

/** Undoes the applied transactions, newest first; returns the keys left as the import wrote them. */
async function undo(etcd: ImportEtcd, applied: readonly Applied[]): Promise<string[]> {
  const left: string[] = [];
  for (const { txn, revision } of [...applied].reverse()) {
    const steps = txn.writes.map((w) => undoOf(w, revision));
    try {
      const whole = await etcd.txn(
        steps.map((s) => s.compare),
        steps.map((s) => s.op),
      );
      if (whole.succeeded) continue;
    } catch {
      // tried key by key below
    }
    for (const [i, s] of steps.entries()) {
      try {
        const one = await etcd.txn([s.compare], [s.op]);
        if (!one.succeeded) left.push((txn.writes[i] as KeyWrite).key);
      } catch {
        left.push((txn.writes[i] as KeyWrite).key);
      }
    }
  }
  return left;
}
