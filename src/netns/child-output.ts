// What the runner (run.ts, the CLI's commands) and the spawner's helper process (spawner-child.ts,
// the daemon's) do alike with a command they started: feed it its stdin, collect its output up to a
// limit, kill it at its timeout, and report how it ended. Only Node types: the helper process
// imports this and must stay small.
import type { Readable, Writable } from 'node:stream';

/** The part of a started ChildProcess this needs. */
export interface StartedCommand {
  stdin: Writable | null;
  stdout: Readable | null;
  stderr: Readable | null;
  kill(signal: NodeJS.Signals): boolean;
  on(event: 'close', listener: (code: number | null, signal: NodeJS.Signals | null) => void): unknown;
}

export interface CommandOutcome {
  /** -1 when the command ended by a signal. */
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Killed at its timeout. */
  timedOut: boolean;
}

export interface CollectOptions {
  stdin: string;
  timeoutMs: number;
  /** Killed once stdout and stderr together pass this many bytes. */
  maxOutput: number;
}

/**
 * Collects a started command's output; `done` once it closed, with whether it wrote anything at
 * all. Returns what stops the timeout early (the command failed to start).
 */
export function collectOutput(
  child: StartedCommand,
  options: CollectOptions,
  done: (outcome: CommandOutcome, wroteAnything: boolean) => void,
): () => void {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let size = 0;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, options.timeoutMs);
  const collect = (sink: Buffer[]) => (chunk: Buffer) => {
    size += chunk.length;
    if (size > options.maxOutput) child.kill('SIGKILL');
    else sink.push(chunk);
  };
  child.stdout?.on('data', collect(out));
  child.stderr?.on('data', collect(err));
  child.stdin?.on('error', () => {
    /* EPIPE when the command exits before reading stdin; the exit code tells the story */
  });
  child.stdin?.end(options.stdin);
  child.on('close', (code, signal) => {
    clearTimeout(timer);
    const outcome = {
      code: code ?? -1,
      signal,
      stdout: Buffer.concat(out).toString('utf8'),
      stderr: Buffer.concat(err).toString('utf8'),
      timedOut,
    };
    done(outcome, out.length > 0 || err.length > 0);
  });
  return () => clearTimeout(timer);
}
