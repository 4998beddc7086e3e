// Makes anti-spoofing drops visible. The namespace's guard rule counts what it drops (a registered
// VM's address sent from another MAC) in the named counter `spoofed`; the kernel tells no one, so
// this reads the counters on an interval, one `nft` per serving network, and logs one line per
// network whose count grew (so a flood is one line an interval, not one per packet).
import { messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { NFT_TABLE } from '../model/names.ts';
import { parseCounterPackets, SPOOF_COUNTER } from '../netns/nft.ts';
import type { Runner } from '../netns/run.ts';
import type { Stats } from '../stats.ts';

export interface SpoofWatchDeps {
  runner: Runner;
  log: Logger;
  stats: Stats;
  /** Serving networks and their namespaces. */
  serving(): { id: string; netns: string }[];
  intervalMs: number;
}

export class SpoofWatch {
  private readonly deps: SpoofWatchDeps;
  private readonly last = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(deps: SpoofWatchDeps) {
    this.deps = deps;
  }

  start(): void {
    if (this.deps.intervalMs <= 0 || this.timer !== undefined) return;
    this.timer = setInterval(() => {
      this.running ??= this.check().finally(() => (this.running = undefined));
    }, this.deps.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** Reads every serving network's counter once. */
  async check(): Promise<void> {
    const { runner, log, stats } = this.deps;
    const serving = this.deps.serving();
    for (const id of [...this.last.keys()]) if (!serving.some((n) => n.id === id)) this.last.delete(id);
    for (const { id, netns } of serving) {
      try {
        const r = await runner.run(['nft', '-j', 'list', 'counter', 'ip', NFT_TABLE, SPOOF_COUNTER], { netns, allowFailure: true });
        if (r.code !== 0) continue; // the table is being rebuilt; the reconciler reports that
        const packets = parseCounterPackets(r.stdout);
        if (packets === undefined) continue;
        const before = this.last.get(id);
        this.last.set(id, packets);
        const grew = before === undefined ? packets : packets - before;
        if (grew > 0) {
          stats.spoofed(id, grew);
          log.warn(
            { network: id, packets: grew, total: packets },
            "dropped metadata traffic carrying a registered VM's address from another MAC (spoofing)",
          );
        }
      } catch (err) {
        log.debug({ network: id, err: messageOf(err) }, 'spoof counter not read');
      }
    }
  }
}
