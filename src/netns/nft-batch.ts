// nft scripts for one namespace, coalesced: scripts submitted while an `nft -f` runs are loaded
// together by the next one. On a 2-core host, twenty networks' bridge tables cost ~27 ms each as
// separate processes (more when they run at once: commits in one namespace serialize) and ~150 ms
// as one script. A combined script is one transaction, so when it fails nothing of it applied and
// each script is retried alone: the failure lands on the script that caused it.
import type { Runner } from './run.ts';

interface Pending {
  script: string;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export class NftBatcher {
  private readonly runner: Runner;
  private readonly netns: string | undefined;
  private queued: Pending[] = [];
  private running = false;

  /** `netns` undefined: the namespace the daemon runs in (the hypervisor's). */
  constructor(runner: Runner, netns?: string) {
    this.runner = runner;
    this.netns = netns;
  }

  /** Loads `script` (with whatever else is waiting); resolves once it is in the kernel. */
  apply(script: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queued.push({ script, resolve, reject });
      // Let callers of this tick join before the first run starts.
      if (!this.running && this.queued.length === 1) setImmediate(() => void this.drain());
    });
  }

  private async drain(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.queued.length > 0) {
        const batch = this.queued;
        this.queued = [];
        await this.runBatch(batch);
      }
    } finally {
      this.running = false;
    }
  }

  private async runBatch(batch: Pending[]): Promise<void> {
    try {
      await this.load(batch.map((p) => (p.script.endsWith('\n') ? p.script : `${p.script}\n`)).join(''));
      for (const p of batch) p.resolve();
      return;
    } catch (err) {
      if (batch.length === 1) {
        batch[0]?.reject(err);
        return;
      }
    }
    for (const p of batch) {
      await this.load(p.script).then(p.resolve, p.reject);
    }
  }

  private async load(script: string): Promise<void> {
    await this.runner.run(['nft', '-f', '-'], { stdin: script, ...(this.netns === undefined ? {} : { netns: this.netns }) });
  }
}
