// A process whose output a test awaits line by line instead of sleeping: tcpdump (ready once it
// prints "listening on", done once the packets it should see were printed), a load generator that
// says when it started. Started here, stopped here by its own pid (never by name).
import { spawn, type ChildProcess } from 'node:child_process';

type Waiter = { test: () => boolean; resolve: () => void; reject: (e: Error) => void; timer: NodeJS.Timeout };

export class Streamed {
  readonly child: ChildProcess;
  readonly argv: readonly string[];
  stdout = '';
  stderr = '';
  private exitCode: number | null | undefined;
  private exitSignal: NodeJS.Signals | null = null;
  private readonly waiters: Waiter[] = [];
  private readonly exited: Promise<void>;

  constructor(argv: readonly string[]) {
    this.argv = argv;
    this.child = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout?.on('data', (d: Buffer) => {
      this.stdout += d.toString('latin1');
      this.check();
    });
    this.child.stderr?.on('data', (d: Buffer) => {
      this.stderr += d.toString('latin1');
      this.check();
    });
    this.exited = new Promise((resolve) => {
      this.child.once('close', (code, signal) => {
        this.exitCode = code;
        this.exitSignal = signal;
        const why = new Error(`${this.describe()} exited (code ${code}, signal ${signal}) before the awaited output:\n${this.tailText()}`);
        for (const w of this.waiters.splice(0)) {
          clearTimeout(w.timer);
          w.reject(why);
        }
        resolve();
      });
    });
  }

  /** Resolves once stdout + stderr satisfy `test` (checked on every chunk); rejects on timeout or exit. */
  waitFor(test: (all: { stdout: string; stderr: string }) => boolean, timeoutMs = 15_000, what = 'output'): Promise<void> {
    const t = (): boolean => test({ stdout: this.stdout, stderr: this.stderr });
    if (t()) return Promise.resolve();
    if (this.exitCode !== undefined)
      return Promise.reject(new Error(`${this.describe()} already exited (code ${this.exitCode}) before ${what}:\n${this.tailText()}`));
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        test: t,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          reject(new Error(`${this.describe()}: no ${what} within ${timeoutMs} ms:\n${this.tailText()}`));
        }, timeoutMs),
      };
      this.waiters.push(w);
    });
  }

  waitForStderr(text: string, timeoutMs?: number): Promise<void> {
    return this.waitFor(({ stderr }) => stderr.includes(text), timeoutMs, `"${text}" on stderr`);
  }

  /** Waits for it to exit by itself; resolves with the exit code. */
  async done(timeoutMs = 60_000): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.exited,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`${this.describe()} did not exit within ${timeoutMs} ms:\n${this.tailText()}`)),
            timeoutMs,
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
    return this.exitCode ?? null;
  }

  /** Ends it (SIGTERM to its own pid; SIGKILL after graceMs) and waits until it is gone. */
  async stop(graceMs = 5000): Promise<void> {
    if (this.exitCode !== undefined) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  get exit(): { code: number | null; signal: NodeJS.Signals | null } | undefined {
    return this.exitCode === undefined ? undefined : { code: this.exitCode, signal: this.exitSignal };
  }

  private describe(): string {
    return `${this.argv.slice(0, 8).join(' ')}${this.argv.length > 8 ? ' …' : ''} (pid ${this.child.pid})`;
  }

  private tailText(): string {
    return `stdout: ${this.stdout.slice(-3000)}\nstderr: ${this.stderr.slice(-1500)}`;
  }

  private check(): void {
    for (const w of [...this.waiters]) {
      if (w.test()) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.resolve();
      }
    }
  }
}
