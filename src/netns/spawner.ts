// Commands started by a helper process (spawner-child.ts) instead of the daemon: starting a
// process from the daemon stalls its event loop while the kernel copies the daemon's page tables
// (~10 ms at ~150 MB RSS on the test hosts), during which no guest is answered; from the helper, a
// few MB of plain Node, the copy is cheap. Commands inside a namespace go through nsenter there
// (the helper has no addon). Used only by the runner (run.ts).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../log.ts';

export const MAX_OUTPUT = 64 * 1024 * 1024;

export interface SpawnerAnswer {
  id: number;
  /** Sent first, once the command started: its pid. */
  started?: number;
  code?: number;
  signal?: NodeJS.Signals | null;
  timedOut?: boolean;
  stdout?: string;
  stderr?: string;
  error?: string;
  message?: string;
}

/** The helper process and the commands it runs for the runner, matched by id. */
export class Spawner {
  private child: ReturnType<typeof spawn> | undefined;
  private readonly pending = new Map<number, (a: SpawnerAnswer) => void>();
  private nextId = 1;
  private readonly script: string;
  private readonly log: Logger | undefined;
  private readonly onStarted: ((pid: number) => void) | undefined;

  constructor(script: string, log: Logger | undefined, onStarted?: (pid: number) => void) {
    this.script = script;
    this.log = log;
    this.onStarted = onStarted;
  }

  private ensure(): ReturnType<typeof spawn> {
    if (this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null) return this.child;
    const child = spawn(process.execPath, [this.script], { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, LC_ALL: 'C' } });
    // It keeps the daemon alive only while a command is pending (see hold()).
    child.unref();
    this.stream(child, 'unref');
    createInterface({ input: child.stdout }).on('line', (line) => {
      let a: SpawnerAnswer;
      try {
        a = JSON.parse(line) as SpawnerAnswer;
      } catch {
        return;
      }
      if (a.started !== undefined) {
        this.onStarted?.(a.started);
        return;
      }
      const done = this.pending.get(a.id);
      this.pending.delete(a.id);
      if (this.pending.size === 0) this.stream(child, 'unref');
      done?.(a);
    });
    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = undefined;
      // Whatever it was running is lost: fail it (the callers retry or report).
      for (const [id, done] of this.pending) done({ id, error: 'ESPAWNER', message: `the spawner exited (${signal ?? code})` });
      this.pending.clear();
      this.log?.warn({ code, signal }, 'spawner exited; the next command starts a new one');
    });
    // The spawner could not be started (EAGAIN, EMFILE…): fail what waits on it; the next command
    // tries a new one. (An 'error' event with no listener would end the daemon.)
    child.on('error', (err) => {
      if (this.child === child) this.child = undefined;
      for (const [id, done] of this.pending)
        done({ id, error: (err as NodeJS.ErrnoException).code ?? 'ESPAWNER', message: `the spawner failed: ${err.message}` });
      this.pending.clear();
      this.log?.warn({ err: err.message }, 'spawner failed; the next command starts a new one');
    });
    child.stdin?.on('error', () => undefined);
    this.child = child;
    return child;
  }

  run(argv: string[], stdin: string, timeoutMs: number): Promise<SpawnerAnswer> {
    const child = this.ensure();
    const id = this.nextId++;
    if (this.pending.size === 0) this.stream(child, 'ref');
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      child.stdin?.write(`${JSON.stringify({ id, argv, stdin, timeoutMs, maxOutput: MAX_OUTPUT, env: { LC_ALL: 'C' } })}\n`);
    });
  }

  close(): void {
    this.child?.stdin?.end();
  }

  /** (Un)references the pipes, so a pending command keeps the event loop alive and an idle spawner does not. */
  private stream(child: ReturnType<typeof spawn>, how: 'ref' | 'unref'): void {
    for (const s of [child.stdout, child.stdin] as unknown as ({ ref?: () => void; unref?: () => void } | null)[]) s?.[how]?.();
  }
}

/** The spawner script next to this module once built (dist/netns/spawner-child.js); undefined when running from source. */
export function spawnerScript(): string | undefined {
  const path = fileURLToPath(new URL('./spawner-child.js', import.meta.url));
  return existsSync(path) ? path : undefined;
}
