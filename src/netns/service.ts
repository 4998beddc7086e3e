// Long-running processes the daemon supervises (dnsmasq): started inside a network's namespace
// (the child inherits the namespace of the thread that forks it: withNetns), stdin closed, output
// handed over line by line, exit reported. The caller (src/dhcp/dhcp-servers.ts) supervises.
import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { ImdsError } from '../errors.ts';
import { withNetns } from './addon.ts';

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
  const full = [...argv];
  const [file, ...args] = full;
  if (file === undefined) throw new ImdsError('INTERNAL', 'empty argv');
  const spawnIt = (): ReturnType<typeof spawn> =>
    spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
  const child = options.netns === undefined ? spawnIt() : withNetns(options.netns, spawnIt);
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

export interface DetachedChild {
  pid: number;
  /** The pipe passed as the fd after `fds` (the child's first words come through it). */
  pipe: Readable;
  kill(): void;
}

/**
 * Starts a process in a session of its own that outlives this one (the daemon's successor in a
 * hand-over): `fds` become its fds 3.., followed by a pipe back to us; its output goes where ours
 * goes.
 */
export function startDetached(argv: readonly string[], options: { fds: number[]; env: NodeJS.ProcessEnv }): DetachedChild {
  const [file, ...args] = argv;
  if (file === undefined) throw new ImdsError('INTERNAL', 'empty argv');
  const child = spawn(file, args, { stdio: ['ignore', 'inherit', 'inherit', ...options.fds, 'pipe'], env: options.env, detached: true });
  const pipe = child.stdio[3 + options.fds.length];
  if (child.pid === undefined || pipe === null || pipe === undefined || !('on' in pipe))
    throw new ImdsError('COMMAND_FAILED', `${file}: cannot start`);
  child.unref();
  return { pid: child.pid, pipe: pipe as Readable, kill: () => void child.kill('SIGKILL') };
}
