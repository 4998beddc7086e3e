// Waits with deadlines, for tests that must await events rather than sleep: an observed state
// (polled), a line from a child process, a child's exit; and a request armed in a guest that is
// fired at the moment the test chooses.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Readable } from 'node:stream';
import type { Guest } from './sandbox.ts';

/** Polls `probe` every `everyMs` until it returns a value other than undefined; fails naming `what` after `timeoutMs`. */
export async function until<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 10_000,
  everyMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Rejects after `ms` with `what` unless `p` settles first. */
export async function within<T>(what: string, p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Resolves with the first line of `stream` that matches; rejects after `timeoutMs`, or when the
 * stream ends first (with what it printed).
 */
export function lineOn(stream: Readable, what: string, match: (line: string) => boolean, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    let all = '';
    const finish = (err: Error | undefined, line?: string): void => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      if (err) reject(err);
      else resolve(line as string);
    };
    const onData = (d: Buffer): void => {
      const text = d.toString();
      all = (all + text).slice(-4000);
      buf += text;
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (match(line)) return finish(undefined, line);
      }
    };
    const onEnd = (): void => finish(new Error(`${what}: the stream ended first; it printed:\n${all}`));
    const timer = setTimeout(
      () => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; it printed:\n${all}`)),
      timeoutMs,
    );
    stream.on('data', onData);
    stream.once('end', onEnd);
  });
}

/** Waits for a child to exit (its code, or its signal's name); rejects after `timeoutMs`. */
export function exitOf(child: ChildProcess, what: string, timeoutMs: number): Promise<number | string> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode ?? (child.signalCode as string));
  return within(
    `${what} to exit`,
    new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal as string)))),
    timeoutMs,
  );
}

/** A guest's TCP counter from /proc/net/netstat or /proc/net/snmp (read inside its namespace), e.g. `TcpExt.TCPSynRetrans`. */
export async function guestCounter(guest: Guest, name: string): Promise<number> {
  const [group, key] = name.split('.') as [string, string];
  for (const file of ['/proc/net/netstat', '/proc/net/snmp']) {
    const lines = (await guest.exec(['cat', file])).stdout.split('\n').filter((l) => l.startsWith(`${group}:`));
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const keys = (lines[i] as string).split(/\s+/);
      const values = (lines[i + 1] as string).split(/\s+/);
      const at = keys.indexOf(key);
      if (at > 0) return Number(values[at]);
    }
  }
  throw new Error(`no counter ${name} in the guest's /proc/net/netstat or /proc/net/snmp`);
}

export interface ArmedResult {
  status?: number;
  body?: string;
  error?: string;
  connect_ms?: number;
  ms: number;
}

/**
 * A GET armed in a guest (test/helpers/guest/armed-get.mjs): started now, it sends its request only
 * when `fire()` is called, on a new connection, with no process start in between.
 */
export async function armGet(
  guest: Guest,
  path: string,
  timeoutMs = 10_000,
): Promise<{ fire(): Promise<ArmedResult>; child: ChildProcess }> {
  const script = new URL('./guest/armed-get.mjs', import.meta.url).pathname;
  readFileSync(script); // fail here, not in the guest, if it is missing
  const child = spawn('ip', ['netns', 'exec', guest.netns, process.execPath, script, path, String(timeoutMs)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => void (stderr += d.toString()));
  try {
    await lineOn(child.stdout, 'the armed GET to be ready', (l) => l === 'armed', 20_000);
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`${(err as Error).message}\n${stderr}`, { cause: err });
  }
  const result = lineOn(child.stdout, 'the armed GET to answer', (l) => l.startsWith('{'), timeoutMs + 10_000);
  return {
    child,
    async fire(): Promise<ArmedResult> {
      child.stdin?.write('go\n');
      try {
        return JSON.parse(await result) as ArmedResult;
      } finally {
        await exitOf(child, 'the armed GET', 5000).catch(() => child.kill('SIGKILL'));
      }
    },
  };
}
