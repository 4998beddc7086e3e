// The processes imds itself started (the runner reports each pid as the command starts:
// RunnerOptions.onStarted). An nftables transaction names the pid that committed it
// (NFTA_GEN_PROC_PID), so set-element events of our own `nft` runs are told from anyone else's by
// attribution, not by timing. A pid is remembered for a while and among the latest few thousand
// only: long enough for its events to arrive, short enough that the kernel does not hand the same
// pid to someone else meanwhile.
import { systemClock, type Clock } from './clock.ts';

/** How long a started pid counts as ours, ms (commands time out after 30 s by default). */
export const OWN_PID_TTL_MS = 120_000;
/** At most this many pids are remembered. */
export const OWN_PID_CAPACITY = 4096;

export class OwnProcesses {
  private readonly clock: Clock;
  /** pid -> when it started; in start order. */
  private readonly pids = new Map<number, number>();

  constructor(clock: Clock = systemClock) {
    this.clock = clock;
  }

  /** A process we started (pass to createRunner as `onStarted`). */
  started(pid: number): void {
    this.pids.delete(pid);
    this.pids.set(pid, this.clock.now());
    this.prune();
  }

  /** Whether `pid` is a process we started recently. */
  has(pid: number): boolean {
    const at = this.pids.get(pid);
    return at !== undefined && this.clock.now() - at <= OWN_PID_TTL_MS;
  }

  private prune(): void {
    const oldest = this.clock.now() - OWN_PID_TTL_MS;
    for (const [pid, at] of this.pids) {
      if (this.pids.size <= OWN_PID_CAPACITY && at >= oldest) break;
      this.pids.delete(pid);
    }
  }
}
