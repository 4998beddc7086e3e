// A daemon started by a test, and the rule that makes a crash red: every exit must be one the test
// asked for (`stop`, `kill`, or `expectExit` for a daemon that should refuse to start). Any other
// exit — a signal from nowhere, an exit code after SIGTERM other than 0, death during a reload — is
// recorded with the daemon's last output, fails whatever waits on it, and fails the test (the
// sandbox checks after each test and after each suite).
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

export type LogLine = Record<string, unknown>;

export interface DaemonExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface DaemonSpawn {
  argv: readonly string[];
  env: NodeJS.ProcessEnv;
  /** Any exit is expected (a daemon the test expects to refuse to start). */
  expectExit?: boolean;
  /** Called once when the daemon exits in a way nobody asked for. */
  onUnexpectedExit: (daemon: DaemonProcess) => void;
}

type Waiter = { predicate: (l: LogLine) => boolean; resolve: (l: LogLine) => void; reject: (e: Error) => void };

export class DaemonProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Parsed JSON log lines so far (stdout). */
  readonly logs: LogLine[] = [];
  /** Set once the daemon has exited. */
  exit: DaemonExit | undefined;
  /** Why its exit was not one the test asked for; undefined while alive or after an expected exit. */
  unexpected: string | undefined;
  private stderr = '';
  /** Characters ever written to stderr (the kept text is cut to its last 100,000 now and then). */
  private stderrTotal = 0;
  private expected: boolean;
  private readonly waiters: Waiter[] = [];
  private readonly stderrWaiters: { text: string; resolve: () => void }[] = [];
  private readonly exited: Promise<DaemonExit>;
  private readonly outputEnded: Promise<void>;

  constructor(spec: DaemonSpawn) {
    const [cmd, ...args] = spec.argv;
    this.child = spawn(cmd as string, args, { stdio: ['ignore', 'pipe', 'pipe'], env: spec.env });
    this.pid = this.child.pid as number;
    this.expected = spec.expectExit ?? false;
    this.child.stderr?.on('data', (d: Buffer) => this.onStderr(d.toString()));
    const lines = createInterface({ input: this.child.stdout! });
    lines.on('line', (line) => this.onLine(line));
    // Its output ends when every process holding its stdout and stderr is gone: it, and a successor
    // `imds restart` started (which writes to the same pipes).
    this.outputEnded = Promise.all([
      new Promise<void>((resolve) => lines.once('close', resolve)),
      new Promise<void>((resolve) => (this.child.stderr ? this.child.stderr.once('close', () => resolve()) : resolve())),
    ]).then(() => undefined);
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        if (!this.expected) {
          this.unexpected = `daemon ${this.pid} exited on its own (code ${code}, signal ${signal}); its last output:\n${this.tail()}`;
          spec.onUnexpectedExit(this);
        }
        const why = new Error(
          `daemon exited (code ${code}, signal ${signal}) before the expected log line; its last output:\n${this.tail()}`,
        );
        for (const w of this.waiters.splice(0)) w.reject(why);
        resolve(this.exit);
      });
    });
  }

  get alive(): boolean {
    return this.exit === undefined;
  }

  /** The last lines it printed (stderr and JSON logs), for failure messages. */
  tail(lines = 30): string {
    const out = [...this.stderr.split('\n').filter(Boolean).slice(-lines), ...this.logs.slice(-lines).map((l) => JSON.stringify(l))];
    return out.map((l) => `  ${l.length > 400 ? `${l.slice(0, 400)}…` : l}`).join('\n');
  }

  /** Resolves with the first log line (past or future) that matches; rejects on timeout or exit. */
  waitFor(predicate: (line: LogLine) => boolean, timeoutMs = 20_000): Promise<LogLine> {
    const seen = this.logs.find(predicate);
    if (seen) return Promise.resolve(seen);
    if (this.exit)
      return Promise.reject(new Error(`daemon already exited (code ${this.exit.code}, signal ${this.exit.signal}):\n${this.tail()}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(entry), 1);
        reject(new Error(`daemon: timed out after ${timeoutMs} ms waiting for a log line; its last output:\n${this.tail()}`));
      }, timeoutMs);
      const entry: Waiter = {
        predicate,
        resolve: (l) => (clearTimeout(timer), resolve(l)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
      this.waiters.push(entry);
    });
  }

  /** Waits for the first log line after index `mark` that matches. */
  waitForAfter(mark: number, predicate: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine> {
    return this.waitFor((l) => predicate(l) && this.logs.indexOf(l) >= mark, timeoutMs);
  }

  /** A mark in its stderr, for `stderrSince`. */
  get stderrMark(): number {
    return this.stderrTotal;
  }

  /** What it (or a successor, which shares the pipe) wrote to stderr since `mark` (as much as is kept). */
  stderrSince(mark: number): string {
    const kept = this.stderr.length - (this.stderrTotal - mark);
    return this.stderr.slice(Math.max(0, kept));
  }

  /**
   * Resolves once its stdout and stderr have ended (every process writing to them is gone, so every
   * line is in `logs`); rejects after `timeoutMs`.
   */
  async outputClosed(timeoutMs = 10_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`daemon ${this.pid}: its stdout and stderr were still open ${timeoutMs} ms later:\n${this.tail()}`)),
        timeoutMs,
      );
    });
    try {
      await Promise.race([this.outputEnded, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  waitForStderr(text: string, timeoutMs = 20_000): Promise<void> {
    if (this.stderr.includes(text)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`daemon: no "${text}" on stderr within ${timeoutMs} ms:\n${this.tail()}`)),
        timeoutMs,
      );
      this.stderrWaiters.push({ text, resolve: () => (clearTimeout(timer), resolve()) });
    });
  }

  /** Sends a signal that must not end it (SIGHUP, SIGSTOP, SIGCONT). */
  signal(signal: 'SIGHUP' | 'SIGSTOP' | 'SIGCONT' | 'SIGUSR1' | 'SIGUSR2'): void {
    this.child.kill(signal);
  }

  /** Kills it with SIGKILL (a crash the test stages) and waits for it to be gone. */
  async kill(): Promise<DaemonExit> {
    this.expected = true;
    if (this.exit) return this.exit;
    this.child.kill('SIGKILL');
    return this.exited;
  }

  /**
   * Stops it with SIGTERM (or SIGINT) and waits; it must exit 0 within 10 s (else it is killed and
   * this throws with its last output). With SIGKILL it is `kill()`. Returns the exit code.
   */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (signal === 'SIGKILL') return (await this.kill()).code;
    if (this.exit) {
      if (this.unexpected !== undefined) throw new Error(this.unexpected);
      return this.exit.code;
    }
    this.expected = true;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    const exit = await this.exited;
    clearTimeout(timer);
    if (exit.code !== 0)
      throw new Error(`daemon ${this.pid} did not stop cleanly on ${signal} (code ${exit.code}, signal ${exit.signal}):\n${this.tail()}`);
    return exit.code;
  }

  /** For a daemon expected to exit by itself (a refusal to start, a stop it was sent elsewhere). */
  async expectExit(timeoutMs = 20_000): Promise<DaemonExit> {
    this.expected = true;
    if (this.exit) return this.exit;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`daemon ${this.pid} did not exit within ${timeoutMs} ms:\n${this.tail()}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private onStderr(text: string): void {
    this.stderr += text;
    this.stderrTotal += text.length;
    if (this.stderr.length > 200_000) this.stderr = this.stderr.slice(-100_000);
    for (const w of [...this.stderrWaiters]) {
      if (this.stderr.includes(w.text)) {
        this.stderrWaiters.splice(this.stderrWaiters.indexOf(w), 1);
        w.resolve();
      }
    }
  }

  private onLine(line: string): void {
    let parsed: LogLine;
    try {
      parsed = JSON.parse(line) as LogLine;
    } catch {
      parsed = { raw: line };
    }
    this.logs.push(parsed);
    for (const w of [...this.waiters]) {
      if (w.predicate(parsed)) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(parsed);
      }
    }
  }
}
