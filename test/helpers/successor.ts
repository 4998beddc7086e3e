// The daemon `imds restart` hands over to (its successor), under the same rule as a DaemonProcess:
// every exit must be one the test asked for. The successor is not a child of the test (the old
// daemon started it, detached, and is gone), so Node cannot wait for it: a watcher on the kernel's
// process-event connector (exit-watch.py, root) reports its wait status. It writes to the old
// daemon's stdout and stderr (inherited), so its log lines are in the old DaemonProcess's `logs`.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { createInterface } from 'node:readline';
import type { DaemonExit, DaemonProcess, LogLine } from './daemon.ts';
import { within } from './wait.ts';

const WATCHER = new URL('./exit-watch.py', import.meta.url).pathname;
/** The daemon's last word when it stops (src/daemon/serve.ts). */
const STOPPING = 'stopping; namespaces stay in place';

function signalName(n: number): NodeJS.Signals {
  const entry = Object.entries(constants.signals).find(([, v]) => v === n);
  return (entry?.[0] ?? `SIG${n}`) as NodeJS.Signals;
}

export class SuccessorProcess {
  readonly pid: number;
  /** The daemon that started it: its stdout and stderr are this one's. */
  readonly predecessor: DaemonProcess;
  /** Set once it has exited. */
  exit: DaemonExit | undefined;
  /** Why its exit was not one the test asked for; undefined while alive or after an asked-for exit. */
  unexpected: string | undefined;
  private expected = false;
  private readonly watcher: ChildProcess;
  private readonly exited: Promise<DaemonExit>;
  /** Where its output starts in the predecessor's log and stderr (what it wrote before is not checked). */
  private readonly logMark: number;
  private readonly stderrMark: number;

  private constructor(
    predecessor: DaemonProcess,
    pid: number,
    watcher: ChildProcess,
    report: Promise<string>,
    onUnexpectedExit: (s: SuccessorProcess) => void,
  ) {
    this.predecessor = predecessor;
    this.pid = pid;
    this.watcher = watcher;
    this.logMark = predecessor.logs.length;
    this.stderrMark = predecessor.stderrMark;
    this.exited = report.then((line) => {
      const r = JSON.parse(line) as { code?: number | null; signal?: number | null; lost?: boolean };
      const exit: DaemonExit = r.lost
        ? { code: null, signal: null }
        : { code: r.code ?? null, signal: r.signal == null ? null : signalName(r.signal) };
      this.exit = exit;
      if (!this.expected) {
        const how = r.lost ? 'its exit status was lost (the event socket overran)' : `code ${exit.code}, signal ${exit.signal}`;
        this.unexpected = `successor ${pid} (imds restart) exited on its own (${how}); its last output:\n${this.tail()}`;
        onUnexpectedExit(this);
      }
      return exit;
    });
    // A watcher that fails is a failure to watch, not an exit: make it visible through `exited`.
    this.exited.catch(() => undefined);
  }

  /**
   * Watches `pid`, the successor `imds restart` named, started by `predecessor`. Fails if it is
   * already gone (its exit could not be seen) or is not an imds daemon.
   */
  static async watch(predecessor: DaemonProcess, pid: number, onUnexpectedExit: (s: SuccessorProcess) => void): Promise<SuccessorProcess> {
    const watcher = spawn('python3', [WATCHER, String(pid)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    watcher.stderr?.on('data', (d: Buffer) => void (stderr += d.toString()));
    const lines = createInterface({ input: watcher.stdout });
    let subscribed: () => void = () => undefined;
    const listening = new Promise<void>((resolve) => (subscribed = resolve));
    const report = new Promise<string>((resolve, reject) => {
      lines.on('line', (l) => (l === 'listening' ? subscribed() : l.startsWith('{') ? resolve(l) : undefined));
      lines.once('close', () => reject(new Error(`the exit watcher of successor ${pid} ended without a word:\n${stderr}`)));
    });
    report.catch(() => undefined); // observed through `exited`; not unhandled if the watch is given up below
    try {
      await within('the exit watcher to subscribe', Promise.race([listening, report.then(() => undefined)]), 10_000);
    } catch (err) {
      watcher.kill('SIGKILL');
      throw err;
    }
    watcher.unref();
    // Subscribed: from now on its exit is seen. Is it (still) there, and an imds daemon?
    let cmdline = '';
    let state = '';
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] ?? '';
    } catch {
      /* gone */
    }
    if (cmdline === '' || state === 'Z' || !/imds|main\.js/.test(cmdline)) {
      watcher.kill('SIGKILL');
      throw new Error(
        `successor ${pid} is not a running imds daemon (${cmdline === '' ? 'gone' : `state ${state}, ${cmdline.split('\0').join(' ')}`}) ` +
          `before its exit could be watched; the old daemon's last output:\n${predecessor.tail()}`,
      );
    }
    return new SuccessorProcess(predecessor, pid, watcher, report, onUnexpectedExit);
  }

  get alive(): boolean {
    return this.exit === undefined && existsSync(`/proc/${this.pid}`);
  }

  /** Its log lines (those the predecessor's pipe carried since the watch began; the old daemon's last ones may be among them). */
  get logs(): LogLine[] {
    return this.predecessor.logs.slice(this.logMark);
  }

  tail(lines = 30): string {
    const err = this.predecessor.stderrSince(this.stderrMark).split('\n').filter(Boolean).slice(-lines);
    return [...err, ...this.logs.slice(-lines).map((l) => JSON.stringify(l))]
      .map((l) => `  ${l.length > 400 ? `${l.slice(0, 400)}…` : l}`)
      .join('\n');
  }

  /** Kills it with SIGKILL (a crash the test stages) and waits for it to be gone. */
  async kill(): Promise<DaemonExit> {
    this.expected = true;
    if (this.exit) return this.exit;
    try {
      process.kill(this.pid, 'SIGKILL');
    } catch {
      /* already exiting: the watcher tells */
    }
    return within(`successor ${this.pid} to die on SIGKILL`, this.exited, 10_000);
  }

  /**
   * Stops it with SIGTERM and waits, as DaemonProcess.stop: it must exit 0 within 10 s (else it is
   * killed), and its output must show a clean stop: its "stopping" line logged after the signal,
   * nothing at level error or above, nothing on stderr. Throws with its last output otherwise.
   * Returns the exit code (0).
   */
  async stop(): Promise<number | null> {
    if (this.exit) {
      if (this.unexpected !== undefined) throw new Error(this.unexpected);
      return this.exit.code;
    }
    this.expected = true;
    const sent = Date.now();
    process.kill(this.pid, 'SIGTERM');
    const timer = setTimeout(() => {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, 10_000);
    let exit: DaemonExit;
    try {
      exit = await within(`successor ${this.pid} to exit on SIGTERM`, this.exited, 20_000);
    } finally {
      clearTimeout(timer);
    }
    // Every line it wrote is read once the pipes it shared with the old daemon have ended.
    await this.predecessor.outputClosed(10_000).catch((err: unknown) => {
      throw new Error(`successor ${this.pid} exited, but ${(err as Error).message}`, { cause: err });
    });
    const problems: string[] = [];
    if (exit.code !== 0) problems.push(`it exited with code ${exit.code}, signal ${exit.signal}`);
    const mine = this.logs;
    if (!mine.some((l) => l['msg'] === STOPPING && Number(l['time']) >= sent)) problems.push(`no "${STOPPING}" line after the SIGTERM`);
    const errors = mine.filter((l) => typeof l['level'] === 'number' && l['level'] >= 50);
    if (errors.length > 0) problems.push(`it logged at level error or above: ${errors.map((l) => JSON.stringify(l)).join('\n')}`);
    const stderr = this.predecessor.stderrSince(this.stderrMark).trim();
    if (stderr !== '') problems.push(`it wrote to stderr:\n${stderr}`);
    if (problems.length > 0)
      throw new Error(`successor ${this.pid} did not stop cleanly on SIGTERM: ${problems.join('; ')}; its last output:\n${this.tail()}`);
    return exit.code;
  }

  /** Ends the watcher (the sandbox's cleanup). */
  dispose(): void {
    if (this.watcher.exitCode === null && this.watcher.signalCode === null) this.watcher.kill('SIGKILL');
  }
}
