// The one place that starts processes. argv arrays only (no shell), a timeout on every command,
// stdin for batch input, and typed errors that carry the command, exit code and stderr; and the
// long-running services (dnsmasq) the daemon supervises.
import { spawn } from 'node:child_process';
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
}

export interface RunnerOptions {
  log?: Logger;
  defaultTimeoutMs?: number;
}

const MAX_OUTPUT = 64 * 1024 * 1024;

export function createRunner(options: RunnerOptions = {}): Runner {
  const defaultTimeout = options.defaultTimeoutMs ?? 30_000;
  const log = options.log;
  return {
    run(argvIn, runOptions = {}) {
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
            reject(new ImdsError('COMMAND_NOT_FOUND', `${file}: not found; install it (see docs/install.md)`, { details: { argv }, cause: e }));
          } else {
            reject(new ImdsError('COMMAND_FAILED', `${file}: ${e.message}`, { details: { argv }, cause: e }));
          }
        });
        child.on('close', (code, signal) => {
          clearTimeout(timer);
          const ms = performance.now() - started;
          const result: RunResult = {
            argv,
            code: code ?? -1,
            stdout: Buffer.concat(out).toString('utf8'),
            stderr: Buffer.concat(err).toString('utf8'),
            ms,
          };
          log?.debug({ argv, code: result.code, ms: Math.round(ms * 10) / 10 }, 'command');
          if (timedOut) {
            reject(new ImdsError('COMMAND_TIMEOUT', `${argv.join(' ')}: no result after ${timeoutMs} ms`, { details: { argv } }));
          } else if (result.code !== 0 && !runOptions.allowFailure) {
            const stderr = result.stderr.trim().slice(0, 2000);
            reject(
              new ImdsError('COMMAND_FAILED', `${argv.join(' ')}: exit ${signal ?? result.code}${stderr ? `: ${stderr}` : ''}`, {
                details: { argv, code: result.code, stderr },
              }),
            );
          } else {
            resolve(result);
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

