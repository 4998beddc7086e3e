// What `imds doctor` reports: hops along the path a guest's request takes, each passed (✓) or
// failed (✗) with the evidence it was judged on and, when failed, the fix. The report is the
// admin API's answer and `imds doctor --json`'s output, exactly: {ok, hops: [{name, ok, detail, fix}]}.

export interface Hop {
  /** Stable, machine-readable: `bridge-port`, `guard`, …; prefixed `<network>/` when every network is checked. */
  name: string;
  ok: boolean;
  /** The evidence, as read from the kernel and the daemon. */
  detail: string;
  /** What to do; null when the hop passed. */
  fix: string | null;
}

export interface DoctorReport {
  ok: boolean;
  hops: Hop[];
}

export function pass(name: string, detail: string): Hop {
  return { name, ok: true, detail, fix: null };
}

export function fail(name: string, detail: string, fix: string): Hop {
  return { name, ok: false, detail, fix };
}

export function reportOf(hops: Hop[]): DoctorReport {
  return { ok: hops.every((h) => h.ok), hops };
}

/** `1 packet`, `2 packets`. */
export function count(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** How long ago `then` was, for details: `12 s ago`, `5 min ago`, `3 h ago`. */
export function ago(then: number, now: number): string {
  const s = Math.max(0, Math.round((now - then) / 1000));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

/** What every kernel hop says when something outside imds damaged what it built. */
export const REPAIR_FIX =
  'imds repairs its own objects when it notices damage (log: `repaired kernel drift`); if it stays broken, ' +
  '`imds reload` rebuilds every network, and `imds status` or the log (`kernel drift not repaired`) says what is in the way';
