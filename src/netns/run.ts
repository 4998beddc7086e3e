// The one place that starts processes. argv arrays only (no shell), a timeout on every command,
// stdin for batch input, and typed errors that carry the command, exit code and stderr.
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

/** argv that runs `argv` inside the named network namespace (network only; the mount namespace is shared). */
export function inNetns(netnsName: string, argv: readonly string[]): string[] {
  return ['nsenter', `--net=${netnsPath(netnsName)}`, '--', ...argv];
}

