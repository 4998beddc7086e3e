// The one place that starts processes. argv arrays only (no shell), a timeout on every command,
// stdin for batch input, and typed errors that carry the command, exit code and stderr; and the
// long-running services (dnsmasq) the daemon supervises.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ImdsError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { addonIfAvailable } from './listen-in-netns.ts';
import { netnsPath } from './paths.ts';

export { NETNS_RUN_DIR, netnsPath } from './paths.ts';

export interface RunOptions {
  /** Text written to the command's stdin (for `ip -batch -` and `nft -f -`). */
  stdin?: string;
  timeoutMs?: number;
  /** Resolve with the result instead of throwing when the command exits non-zero. */
  allowFailure?: boolean;
  /** Run the command inside this named network namespace (network only; mounts are shared). */
  netns?: string;
}

export interface RunResult {
  argv: readonly string[];
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface Runner {
  run(argv: readonly string[], options?: RunOptions): Promise<RunResult>;
  /** Stops the helper process, if any. */
  close?(): void;
}

/** The outcome of a finished command as RunResult or the typed error (shared by both ways of running). */
function settle(
  argv: readonly string[],
  outcome: { code: number; signal: NodeJS.Signals | null; stdout: string; stderr: string; timedOut: boolean },
  started: number,
  timeoutMs: number,
  runOptions: RunOptions,
  log: Logger | undefined,
): RunResult {
  const ms = performance.now() - started;
  const result: RunResult = { argv, code: outcome.code, stdout: outcome.stdout, stderr: outcome.stderr, ms };
  log?.debug({ argv, code: result.code, ms: Math.round(ms * 10) / 10 }, 'command');
  if (outcome.timedOut) throw new ImdsError('COMMAND_TIMEOUT', `${argv.join(' ')}: no result after ${timeoutMs} ms`, { details: { argv } });
  if (result.code !== 0 && !runOptions.allowFailure) {
    const stderr = result.stderr.trim().slice(0, 2000);
    throw new ImdsError('COMMAND_FAILED', `${argv.join(' ')}: exit ${outcome.signal ?? result.code}${stderr ? `: ${stderr}` : ''}`, {
      details: { argv, code: result.code, stderr },
    });
  }
  return result;
}

async function runThroughSpawner(
  spawner: Spawner,
  argvIn: readonly string[],
  runOptions: RunOptions,
  defaultTimeout: number,
  log: Logger | undefined,
): Promise<RunResult> {
  const argv = runOptions.netns === undefined ? [...argvIn] : inNetns(runOptions.netns, argvIn);
  const file = argv[0];
  if (file === undefined) throw new ImdsError('INTERNAL', 'empty argv');
  const timeoutMs = runOptions.timeoutMs ?? defaultTimeout;
  const started = performance.now();
  const a = await spawner.run(argv, runOptions.stdin ?? '', timeoutMs);
  if (a.error !== undefined) {
    if (a.error === 'ENOENT')
      throw new ImdsError('COMMAND_NOT_FOUND', `${file}: not found; install it (see docs/install.md)`, { details: { argv } });
    throw new ImdsError('COMMAND_FAILED', `${file}: ${a.message ?? a.error}`, { details: { argv } });
  }
  return settle(
    argv,
    { code: a.code ?? -1, signal: a.signal ?? null, stdout: a.stdout ?? '', stderr: a.stderr ?? '', timedOut: a.timedOut === true },
    started,
    timeoutMs,
    runOptions,
    log,
  );
}

export interface RunnerOptions {
  log?: Logger;
  defaultTimeoutMs?: number;
  /** Start commands through this spawner script (spawnerScript()): no stall of the caller's loop. */
  spawner?: string | undefined;
}

const MAX_OUTPUT = 64 * 1024 * 1024;

interface SpawnerAnswer {
  id: number;
  code?: number;
  signal?: NodeJS.Signals | null;
  timedOut?: boolean;
  stdout?: string;
  stderr?: string;
  error?: string;
  message?: string;
}

/**
 * Commands started by a helper process (spawner-child.ts) instead of the daemon: the daemon's
 * event loop never stalls on fork. Commands inside a namespace go through nsenter there.
 */
class Spawner {
  private child: ReturnType<typeof spawn> | undefined;
  private readonly pending = new Map<number, (a: SpawnerAnswer) => void>();
  private nextId = 1;
  private readonly script: string;
  private readonly log: Logger | undefined;

  constructor(script: string, log: Logger | undefined) {
    this.script = script;
    this.log = log;
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

export function createRunner(options: RunnerOptions = {}): Runner {
  const defaultTimeout = options.defaultTimeoutMs ?? 30_000;
  const log = options.log;
  const spawner = options.spawner === undefined ? undefined : new Spawner(options.spawner, log);
  return {
    close: () => spawner?.close(),
    run(argvIn, runOptions = {}) {
      if (spawner !== undefined) return runThroughSpawner(spawner, argvIn, runOptions, defaultTimeout, log);
      let argv = argvIn;
      // Inside a namespace: start the child from within it through the addon (it inherits the
      // thread's namespace at fork), else through nsenter.
      const addon = runOptions.netns === undefined ? undefined : addonIfAvailable();
      if (runOptions.netns !== undefined && addon === undefined) argv = inNetns(runOptions.netns, argv);
      const [file, ...args] = argv;
      if (file === undefined) return Promise.reject(new ImdsError('INTERNAL', 'empty argv'));
      const timeoutMs = runOptions.timeoutMs ?? defaultTimeout;
      const started = performance.now();
      return new Promise<RunResult>((resolve, reject) => {
        let child: ReturnType<typeof spawn>;
        if (addon !== undefined && runOptions.netns !== undefined) {
          const saved = addon.enterNetns(netnsPath(runOptions.netns));
          try {
            child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
          } finally {
            addon.restoreNetns(saved);
          }
        } else {
          child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
        }
        const out: Buffer[] = [];
        const err: Buffer[] = [];
        let size = 0;
        let timedOut = false;
        const timer = setTimeout(() => {
          timedOut = true;
          child.kill('SIGKILL');
        }, timeoutMs);
        const collect = (sink: Buffer[]) => (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_OUTPUT) child.kill('SIGKILL');
          else sink.push(chunk);
        };
        child.stdout?.on('data', collect(out));
        child.stderr?.on('data', collect(err));
        child.stdin?.on('error', () => {
          /* EPIPE when the command exits before reading stdin; the exit code tells the story */
        });
        child.stdin?.end(runOptions.stdin ?? '');
        child.on('error', (e: NodeJS.ErrnoException) => {
          clearTimeout(timer);
          if (e.code === 'ENOENT') {
            reject(
              new ImdsError('COMMAND_NOT_FOUND', `${file}: not found; install it (see docs/install.md)`, { details: { argv }, cause: e }),
            );
          } else {
            reject(new ImdsError('COMMAND_FAILED', `${file}: ${e.message}`, { details: { argv }, cause: e }));
          }
        });
        child.on('close', (code, signal) => {
          clearTimeout(timer);
          const outcome = {
            code: code ?? -1,
            signal,
            stdout: Buffer.concat(out).toString('utf8'),
            stderr: Buffer.concat(err).toString('utf8'),
            timedOut,
          };
          try {
            resolve(settle(argv, outcome, started, timeoutMs, runOptions, log));
          } catch (e) {
            reject(e);
          }
        });
      });
    },
  };
}

export interface ServiceOptions {
  /** Start it inside this named network namespace. */
  netns?: string;
  /** Each line the service writes to stdout or stderr. */
  onLine?: (line: string) => void;
  /** Called once when it exits (code, or the signal that ended it). */
  onExit?: (code: number | null, signal: NodeJS.Signals | null) => void;
}

export interface ServiceHandle {
  readonly pid: number;
  readonly argv: readonly string[];
  /** Resolves when it has exited. */
  readonly exited: Promise<void>;
  /** Sends a signal; false when it has already exited. */
  signal(sig: NodeJS.Signals): boolean;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Starts a long-running process (dnsmasq) and keeps hold of it: stdin closed, its output handed
 * over line by line, its exit reported. The caller supervises it.
 */
export function startService(argv: readonly string[], options: ServiceOptions = {}): ServiceHandle {
  const addon = options.netns === undefined ? undefined : addonIfAvailable();
  const full = options.netns !== undefined && addon === undefined ? inNetns(options.netns, argv) : [...argv];
  const [file, ...args] = full;
  if (file === undefined) throw new ImdsError('INTERNAL', 'empty argv');
  let child: ReturnType<typeof spawn>;
  const spawnIt = () => spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
  if (addon !== undefined && options.netns !== undefined) {
    const saved = addon.enterNetns(netnsPath(options.netns));
    try {
      child = spawnIt();
    } finally {
      addon.restoreNetns(saved);
    }
  } else {
    child = spawnIt();
  }
  let done = false;
  let resolveExited: () => void = () => undefined;
  const exited = new Promise<void>((resolve) => (resolveExited = resolve));
  const finish = (code: number | null, signal: NodeJS.Signals | null) => {
    if (done) return;
    done = true;
    resolveExited();
    options.onExit?.(code, signal);
  };
  for (const stream of [child.stdout, child.stderr]) {
    let rest = '';
    stream?.setEncoding('utf8');
    stream?.on('data', (chunk: string) => {
      const lines = (rest + chunk).split('\n');
      rest = lines.pop() ?? '';
      if (rest.length > 64 * 1024) rest = '';
      for (const line of lines) if (line !== '') options.onLine?.(line);
    });
  }
  child.on('error', (e: NodeJS.ErrnoException) => {
    options.onLine?.(e.code === 'ENOENT' ? `${file}: not found; install it (see docs/install.md)` : `${file}: ${e.message}`);
    finish(e.code === 'ENOENT' ? 127 : 126, null);
  });
  child.on('exit', (code, signal) => finish(code, signal));
  const signal = (sig: NodeJS.Signals): boolean => !done && child.kill(sig);
  return {
    pid: child.pid ?? -1,
    argv: full,
    exited,
    signal,
    async stop(graceMs = 3000) {
      if (done) return;
      signal('SIGTERM');
      const timer = setTimeout(() => signal('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** argv that runs `argv` inside the named network namespace (network only; the mount namespace is shared). */
export function inNetns(netnsName: string, argv: readonly string[]): string[] {
  return ['nsenter', `--net=${netnsPath(netnsName)}`, '--', ...argv];
}
