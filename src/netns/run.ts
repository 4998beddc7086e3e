// The process runner: argv arrays only (no shell), a timeout on every command, stdin for batch
// input, and typed errors that carry the command, exit code and stderr. With a spawner script
// (the daemon), commands start from a helper process (spawner.ts); otherwise (the CLI) here. The
// only modules that start processes are this one, spawner.ts, spawner-child.ts and service.ts
// (ESLint enforces it). Both ways feed, collect and time out a command with child-output.ts.
import { spawn } from 'node:child_process';
import { ImdsError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { withNetns } from './addon.ts';
import { collectOutput, type CommandOutcome } from './child-output.ts';
import { netnsPath } from './paths.ts';
import { MAX_OUTPUT, Spawner } from './spawner.ts';

export { NETNS_RUN_DIR, netnsPath } from './paths.ts';
export { spawnerScript } from './spawner.ts';

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
  outcome: CommandOutcome,
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
  /**
   * Called with the pid of each command as soon as it started (before it finishes): lets the drift
   * watch tell the nftables transactions of our own `nft` runs from anyone else's.
   */
  onStarted?: (pid: number) => void;
}

export function createRunner(options: RunnerOptions = {}): Runner {
  const defaultTimeout = options.defaultTimeoutMs ?? 30_000;
  const log = options.log;
  const spawner = options.spawner === undefined ? undefined : new Spawner(options.spawner, log, options.onStarted);
  return {
    close: () => spawner?.close(),
    run(argvIn, runOptions = {}) {
      if (spawner !== undefined) return runThroughSpawner(spawner, argvIn, runOptions, defaultTimeout, log);
      const argv = argvIn;
      const [file, ...args] = argv;
      if (file === undefined) return Promise.reject(new ImdsError('INTERNAL', 'empty argv'));
      const timeoutMs = runOptions.timeoutMs ?? defaultTimeout;
      const started = performance.now();
      return new Promise<RunResult>((resolve, reject) => {
        // Inside a namespace: started from within it (the child inherits the thread's namespace at fork).
        const spawnIt = (): ReturnType<typeof spawn> =>
          spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
        const child = runOptions.netns === undefined ? spawnIt() : withNetns(runOptions.netns, spawnIt);
        if (child.pid !== undefined) options.onStarted?.(child.pid);
        const stopTimer = collectOutput(child, { stdin: runOptions.stdin ?? '', timeoutMs, maxOutput: MAX_OUTPUT }, (outcome) => {
          try {
            resolve(settle(argv, outcome, started, timeoutMs, runOptions, log));
          } catch (e) {
            reject(e instanceof Error ? e : new Error(String(e)));
          }
        });
        child.on('error', (e: NodeJS.ErrnoException) => {
          stopTimer();
          if (e.code === 'ENOENT') {
            reject(
              new ImdsError('COMMAND_NOT_FOUND', `${file}: not found; install it (see docs/install.md)`, { details: { argv }, cause: e }),
            );
          } else {
            reject(new ImdsError('COMMAND_FAILED', `${file}: ${e.message}`, { details: { argv }, cause: e }));
          }
        });
      });
    },
  };
}

/**
 * argv that runs `argv` inside the named network namespace (network only; the mount namespace is
 * shared): how the daemon's commands enter a namespace. They start in the spawner's helper process,
 * not in the daemon, and `withNetns` cannot reach there: it switches only the calling thread of the
 * process that has the addon loaded, and the helper is another process, plain Node without the
 * addon (small and quick to start). Entering the namespace in the daemon around a request to the
 * helper would change nothing for the helper, and spawning from the daemon inside `withNetns` is the
 * fork stall the helper exists to avoid; so `nsenter` does the setns in the command's own process.
 */
export function inNetns(netnsName: string, argv: readonly string[]): string[] {
  return ['nsenter', `--net=${netnsPath(netnsName)}`, '--', ...argv];
}
