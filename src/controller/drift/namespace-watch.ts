// The namespace itself: the kernel sends no event when a namespace's name is removed (and the
// daemon's own sockets keep the namespace alive), so /run/netns is watched and every watched
// namespace's inode compared on each change there and every `intervalMs` (the periodic check).
import { existsSync, watch, type FSWatcher } from 'node:fs';
import type { Cause, CauseSink } from './causes.ts';
import type { WatchedNamespace } from './namespace-events.ts';

/** Whether a watched namespace's name still names it: the cause when it does not. */
export function namespaceCause(w: WatchedNamespace, ino: number | undefined): Cause | undefined {
  if (ino === w.ino) return undefined;
  return ino === undefined ? { kind: 'namespace-removed', network: w.network } : { kind: 'namespace-replaced', network: w.network };
}

export interface NamespaceWatchDeps {
  /** The directory of named namespaces (/run/netns). */
  dir: string;
  namespaces(): readonly WatchedNamespace[];
  inodeOf(netns: string): number | undefined;
  emit: CauseSink;
  /** The periodic check, ms (0: none). */
  intervalMs: number;
}

export class NamespaceWatch {
  private readonly deps: NamespaceWatchDeps;
  private dirWatch: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(deps: NamespaceWatchDeps) {
    this.deps = deps;
  }

  start(): void {
    this.watchDir();
    if (this.deps.intervalMs > 0) {
      this.timer = setInterval(() => {
        this.check();
        if (this.dirWatch === undefined && existsSync(this.deps.dir)) this.watchDir();
      }, this.deps.intervalMs);
      this.timer.unref();
    }
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    this.dirWatch?.close();
    this.dirWatch = undefined;
  }

  /** Compares every watched namespace's inode with the one it had. */
  check(): void {
    for (const w of this.deps.namespaces()) {
      const cause = namespaceCause(w, this.deps.inodeOf(w.netns));
      if (cause !== undefined) this.deps.emit(cause);
    }
  }

  private watchDir(): void {
    try {
      const w = watch(this.deps.dir, () => this.check());
      w.on('error', () => undefined);
      this.dirWatch = w;
    } catch {
      // The directory appears with the first namespace; the periodic check covers the gap.
    }
  }
}
