// Host commands for the system test: argv only, a deadline on every command, output captured for
// failure messages. (The integration tests' runner takes string input only; the system test feeds
// files and needs the exit status of commands that are allowed to fail.)
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';

export interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface RunOptions {
  stdin?: string | Buffer;
  /** Non-zero exits are returned instead of thrown. */
  allowFailure?: boolean;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  /** Called with the process once it is started (the container keeps every process it entered). */
  onChild?: (child: ChildProcess) => void;
}

const CAP = 4 * 1024 * 1024;

export function run(argv: readonly string[], options: RunOptions = {}): Promise<Result> {
  const [cmd, ...args] = argv;
  const timeoutMs = options.timeoutMs ?? 60_000;
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd as string, args, { stdio: ['pipe', 'pipe', 'pipe'], env: options.env ?? process.env });
    options.onChild?.(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d: Buffer) => {
      if (stdout.length < CAP) stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      if (stderr.length < CAP) stderr += d.toString();
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.stdin ?? '');
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${argv.join(' ')}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result: Result = { code, signal, stdout, stderr, ms: Date.now() - t0 };
      if (timedOut) reject(new Error(`${describe(argv)}: no exit within ${timeoutMs} ms\n${outputOf(result)}`));
      else if (code !== 0 && !options.allowFailure) reject(new Error(`${describe(argv)}: exit ${code ?? signal}\n${outputOf(result)}`));
      else resolve(result);
    });
  });
}

export function outputOf(r: Pick<Result, 'stdout' | 'stderr'>, lines = 40): string {
  const tail = (s: string): string => s.trimEnd().split('\n').slice(-lines).join('\n');
  return [r.stdout.trim() ? `stdout:\n${tail(r.stdout)}` : '', r.stderr.trim() ? `stderr:\n${tail(r.stderr)}` : '']
    .filter(Boolean)
    .join('\n');
}

function describe(argv: readonly string[]): string {
  const s = argv.join(' ');
  return s.length > 300 ? `${s.slice(0, 300)}…` : s;
}

/** True when pid and start time (field 22 of /proc/PID/stat) still name the same running process. */
export function ownerAlive(pid: number, start: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]) === start;
  } catch {
    return false;
  }
}

/** Parses `<pid36>-<start36>-…` (a RUN_OWNER prefix) and says whether that process is gone. */
export function ownerGone(rest: string): boolean {
  const m = /^([0-9a-z]+)-([0-9a-z]+)-/.exec(rest);
  if (m === null) return false;
  return !ownerAlive(parseInt(m[1] as string, 36), parseInt(m[2] as string, 36));
}

/**
 * Removes a directory tree that may hold mounts (debootstrap's /proc and /sys in a root it was
 * building when it was killed): whatever is mounted under it is detached first, and `rm` never
 * crosses into another file system.
 */
export async function removeTree(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  const mounts = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => (l.split(' ')[1] ?? '').replace(/\\040/g, ' '))
    .filter((m) => m.startsWith(`${dir}/`))
    .sort()
    .reverse();
  for (const m of mounts) await run(['umount', '-l', m], { allowFailure: true });
  await run(['rm', '-rf', '--one-file-system', '--', dir], { timeoutMs: 5 * 60_000 });
}
