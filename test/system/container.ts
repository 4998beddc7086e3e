// A Debian 12 container with systemd as PID 1 (systemd-nspawn, --private-network: nothing done in
// it reaches the host's network), for the system test. Its root is a fresh copy of the cached root
// (rootfs.ts) in a directory named after the run (`imdstest-<owner>-<id>-sys-…` under TMPDIR, like
// the sandbox's), it runs in a cgroup of its own named the same way (cgroups.ts), commands run in it
// with `nsenter -t <its PID 1> -a`, and it is always cleaned up: `destroy()` powers it off (killing
// it by pid when it does not stop), then removes its root and its cgroup; an exit of this process
// (SIGINT, SIGTERM and SIGHUP included: they exit) kills it by pid and removes its root; a reaper (a
// detached shell) kills it and removes its root and cgroup within a second or two once this process
// is gone, whether or not it ran any handler (SIGKILL: nspawn dies with it through
// `setpriv --pdeathsig`, but the container's systemd would live on); and the next run's
// `sweepStaleContainers()` kills and removes whatever a run that died still left behind.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { RUN_OWNER, TEST_PREFIX } from '../helpers/sandbox.ts';
import { cgroupParents, cgroupPids, makeCgroups, removeCgroup, removeCgroupSync } from './cgroups.ts';
import { extractRoot } from './rootfs.ts';
import { outputOf, ownerAlive, ownerGone, removeTree, run, type Result, type RunOptions } from './proc.ts';

/** The environment of every command run inside: nothing of the host's leaks in. */
const ENV = [
  'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  'HOME=/root',
  'LANG=C.UTF-8',
  'TERM=dumb',
  'SYSTEMD_PAGER=',
  'SYSTEMD_COLORS=0',
  'DEBIAN_FRONTEND=noninteractive',
];

const SYS_MARK = '-sys-';
/** The container's cgroup: `<name>-sys` (no directory has that name: theirs go on with `-…`). */
const CGROUP_MARK = '-sys';

export interface Timings {
  extractMs: number;
  bootMs: number;
}

export class Container {
  /** The run's directory (the root is `root` inside it). */
  readonly dir: string;
  readonly root: string;
  /** nspawn's machine name, `imdstest-<owner>-<id>` (the host name inside comes from the root's /etc/hostname). */
  readonly name: string;
  readonly timings: Timings = { extractMs: 0, bootMs: 0 };
  private nspawn: ChildProcess | undefined;
  private pid1: number | undefined;
  private console: string[] = [];
  private exited: Promise<void> | undefined;
  /** [pid, start time] of nspawn and the container's PID 1. */
  private readonly pids: [number, number][] = [];
  /** [pid, start time] of the reaper: it outlives an exit of this process, to finish the cleanup. */
  private reaper: [number, number] | undefined;
  private cgroups: string[] = [];
  /**
   * The `nsenter` processes of commands entered into the container that still run. Each forks the
   * command into the container's PID namespace and waits for it; when the container's shutdown
   * stops everything in it (systemd-shutdown sends SIGSTOP first), nsenter stops itself too and then
   * never reaps its child: the container's PID 1 cannot finish exiting while that zombie is there.
   * So they are killed before the container is stopped.
   */
  private readonly entered = new Set<ChildProcess>();
  private readonly onExit = (): void => this.killSync();

  constructor() {
    const id = randomBytes(3).toString('hex');
    this.name = `${TEST_PREFIX}${RUN_OWNER}-${id}`;
    this.dir = mkdtempSync(join(tmpdir(), `${this.name}${SYS_MARK}`));
    this.root = join(this.dir, 'root');
    process.once('exit', this.onExit);
    exitOnSignals();
  }

  /** Extracts the cached root and boots it; resolves once systemd says the system is up. */
  async boot(tarball: string): Promise<void> {
    let t0 = Date.now();
    await extractRoot(tarball, this.root);
    this.timings.extractMs = Date.now() - t0;
    t0 = Date.now();
    this.cgroups = makeCgroups(`${this.name}${CGROUP_MARK}`);
    // nspawn starts in the container's cgroup (the shell moves itself there, then execs it).
    const argv = [
      'setpriv',
      '--pdeathsig',
      'SIGKILL',
      '--',
      'systemd-nspawn',
      '--quiet',
      '-D',
      this.root,
      `--machine=${this.name}`,
      '--boot',
      '--register=no',
      '--keep-unit',
      '--console=pipe',
      '--private-network',
      '--link-journal=no',
    ];
    const enter = 'for cg in $IMDSTEST_CGROUPS; do echo $$ > "$cg/cgroup.procs" || exit 97; done; exec "$@"';
    const child = spawn('sh', ['-c', enter, 'sh', ...argv], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, IMDSTEST_CGROUPS: this.cgroups.join(' ') },
    });
    this.nspawn = child;
    const keep = (d: Buffer): void => {
      this.console.push(...d.toString().split('\n').filter(Boolean));
      if (this.console.length > 400) this.console = this.console.slice(-200);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    this.remember(child.pid as number);
    this.pid1 = await this.findPid1(child);
    this.remember(this.pid1);
    this.startReaper();
    const state = await this.waitBooted();
    this.timings.bootMs = Date.now() - t0;
    if (state !== 'running') {
      const failed = await this.exec(['systemctl', '--failed', '--no-legend', '--plain'], { allowFailure: true });
      throw new Error(`the container booted ${state}, not running; failed units:\n${failed.stdout}\n${this.consoleTail()}`);
    }
  }

  get pid(): number {
    if (this.pid1 === undefined) throw new Error('the container is not booted');
    return this.pid1;
  }

  /** Runs argv inside the container (every namespace of its PID 1, a clean environment). */
  exec(argv: readonly string[], options: RunOptions = {}): Promise<Result> {
    return run(['nsenter', '-t', String(this.pid), '-a', '--', 'env', '-i', ...ENV, ...argv], {
      ...options,
      onChild: (child) => this.track(child),
    });
  }

  /** Runs a shell script inside (sh -c SCRIPT sh ARGS…). */
  sh(script: string, args: readonly string[] = [], options: RunOptions = {}): Promise<Result> {
    return this.exec(['sh', '-c', script, 'sh', ...args], options);
  }

  /** Starts a long-running command inside; its stdin is a pipe (the test's guest tools stop when it ends). */
  start(argv: readonly string[]): ChildProcess {
    const child = spawn('nsenter', ['-t', String(this.pid), '-a', '--', 'env', '-i', ...ENV, ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.track(child);
    return child;
  }

  private track(child: ChildProcess): void {
    this.entered.add(child);
    child.once('close', () => this.entered.delete(child));
  }

  /** Kills every entered command still running (what runs inside first, then its nsenter). */
  private killEntered(): void {
    for (const child of this.entered) {
      if (child.pid === undefined) continue;
      for (const pid of [...descendants(child.pid).reverse(), child.pid]) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
  }

  /**
   * Writes a file inside, through the container's own view of its paths (never through the root
   * directory from the host: a path inside may be a symlink that would resolve on the host).
   */
  async writeFile(path: string, data: string | Buffer, mode = '0644'): Promise<void> {
    await this.sh('mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"', [path, mode], { stdin: data, timeoutMs: 120_000 });
  }

  async readFile(path: string): Promise<string> {
    return (await this.exec(['cat', path])).stdout;
  }

  /** What the container says about a unit, for failure messages: its status and its journal's tail. */
  async explain(unit = 'imds', lines = 40): Promise<string> {
    const status = await this.exec(['systemctl', 'status', unit, '--no-pager', '-l', '-n', '0'], { allowFailure: true, timeoutMs: 20_000 });
    const journal = await this.exec(['journalctl', '-u', unit, '-n', String(lines), '--no-pager', '-o', 'short-precise'], {
      allowFailure: true,
      timeoutMs: 20_000,
    });
    return (
      `--- systemctl status ${unit}:\n${status.stdout}${status.stderr}\n--- journalctl -u ${unit} (last ${lines} ` +
      `lines):\n${journal.stdout}${journal.stderr}`
    );
  }

  consoleTail(lines = 30): string {
    return `--- container console (last ${lines} lines):\n${this.console.slice(-lines).join('\n')}`;
  }

  /**
   * Powers it off (systemctl poweroff; killed by pid after `graceMs`), then removes its root. Safe
   * to call more than once and on a container that never booted.
   */
  async destroy(graceMs = 30_000): Promise<void> {
    try {
      this.killEntered();
      if (this.nspawn !== undefined && this.nspawn.exitCode === null && this.nspawn.signalCode === null) {
        if (this.pid1 !== undefined)
          await this.exec(['systemctl', 'poweroff', '--no-block'], { allowFailure: true, timeoutMs: 10_000 }).catch(() => undefined);
        let timer: NodeJS.Timeout | undefined;
        const stopped = await Promise.race([
          this.exited?.then(() => true),
          new Promise<false>((r) => (timer = setTimeout(() => r(false), graceMs))),
        ]);
        clearTimeout(timer);
        if (!stopped) {
          this.killSync(false);
          await this.exited;
        }
      }
    } finally {
      this.killSync(false);
      try {
        for (const cg of this.cgroups) await removeCgroup(cg);
      } finally {
        await removeTree(this.dir);
        process.removeListener('exit', this.onExit);
      }
    }
  }

  /**
   * Kills the container by pid (PID 1 takes its whole PID namespace with it) and nspawn. With
   * `remove` (this process exits): its root too, and its cgroup when its processes are gone by then;
   * the reaper, left alive, removes the cgroup once they are. Without: the reaper too (destroy()
   * cleans up itself).
   */
  private killSync(remove = true): void {
    this.killEntered();
    // By pid and start time: a pid that was freed may belong to another process by now.
    for (const [pid, start] of remove || this.reaper === undefined ? this.pids : [...this.pids, this.reaper]) {
      if (!ownerAlive(pid, start)) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    if (remove) {
      spawnSync('rm', ['-rf', '--one-file-system', '--', this.dir]);
      for (const cg of this.cgroups) removeCgroupSync(cg);
    }
  }

  private remember(pid: number): void {
    const start = startTime(pid);
    if (start !== undefined) this.pids.push([pid, start]);
  }

  /** A detached watcher that cleans up if this process dies without cleaning up (see the header). */
  private startReaper(): void {
    const script = [
      'start() { s="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1; set -- ${s##*) }; echo "${20}"; }',
      'me="$(start "$1")"; init="$(start "$3")"',
      'while [ "$(start "$1")" = "$me" ]; do sleep 1; done',
      '[ "$(start "$3")" = "$init" ] && kill -9 "$3"',
      'sleep 1',
      'rm -rf --one-file-system -- "$2"',
      'shift 3',
      'for i in 1 2 3 4 5 6 7 8 9 10; do',
      '  left=0',
      '  for cg; do [ -d "$cg" ] && { find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null; [ -d "$cg" ] && left=1; }; done',
      '  [ "$left" = 0 ] && exit 0',
      '  sleep 1',
      'done',
    ].join('\n');
    const args = [String(process.pid), this.dir, String(this.pid1), ...this.cgroups];
    const reaper = spawn('sh', ['-c', script, 'imds-systest-reaper', ...args], {
      detached: true,
      stdio: 'ignore',
    });
    reaper.unref();
    const start = startTime(reaper.pid as number);
    if (start !== undefined) this.reaper = [reaper.pid as number, start];
  }

  /** nspawn's descendant that is PID 1 of its own PID namespace. */
  private async findPid1(child: ChildProcess): Promise<number> {
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(`systemd-nspawn exited (${child.exitCode ?? child.signalCode})\n${this.consoleTail()}`);
      for (const pid of descendants(child.pid as number)) {
        const status = readOr(`/proc/${pid}/status`);
        const nspid = /^NSpid:\s+(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/);
        if (nspid !== undefined && nspid.length > 1 && nspid[nspid.length - 1] === '1') return pid;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`no PID 1 appeared under systemd-nspawn within 30 s\n${this.consoleTail()}`);
  }

  /** Waits for `systemctl is-system-running` to settle; returns its last word. */
  private async waitBooted(timeoutMs = 120_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      const r = await this.exec(['systemctl', 'is-system-running', '--wait'], { allowFailure: true, timeoutMs });
      last = `${r.stdout.trim()} ${r.stderr.trim()}`.trim();
      if (['running', 'degraded', 'maintenance', 'stopping'].includes(r.stdout.trim())) return r.stdout.trim();
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error(`the container did not finish booting within ${timeoutMs} ms (last: ${last})\n${this.consoleTail()}`);
  }
}

/**
 * Kills and removes what system-test runs that are gone left behind: every process whose root is
 * such a run's container root or that is in such a run's cgroup (its container and anything entered
 * into it), then the directories and the cgroups. A concurrent run's container (its owner alive) is
 * left alone. Returns what it found (for `leftovers.ts`, which fails a run that left anything).
 */
export async function sweepStaleContainers(log: (line: string) => void): Promise<string[]> {
  const found: string[] = [];
  const tmp = tmpdir();
  const stale = readdirOr(tmp)
    .filter((f) => f.startsWith(TEST_PREFIX) && f.includes(SYS_MARK) && ownerGone(f.slice(TEST_PREFIX.length)))
    .map((f) => join(tmp, f));
  const staleCgroups = cgroupParents().flatMap((p) =>
    readdirOr(p)
      .filter((f) => f.startsWith(TEST_PREFIX) && f.endsWith(CGROUP_MARK) && ownerGone(f.slice(TEST_PREFIX.length)))
      .map((f) => join(p, f)),
  );
  const roots = stale.map((d) => statOr(join(d, 'root'))).filter((st) => st !== undefined);
  const victims = new Set<number>(staleCgroups.flatMap((cg) => cgroupPids(cg)));
  for (const pid of readdirOr('/proc').filter((p) => /^\d+$/.test(p))) {
    // A process inside a container has the container's root as its "/"; nspawn names it on its command line.
    const root = statOr(`/proc/${pid}/root`);
    const cmdline = readOr(`/proc/${pid}/cmdline`);
    if (roots.some((r) => root !== undefined && r.dev === root.dev && r.ino === root.ino) || stale.some((d) => cmdline.includes(`${d}/`)))
      victims.add(Number(pid));
  }
  for (const pid of victims) {
    if (pid === process.pid) continue;
    try {
      process.kill(pid, 'SIGKILL');
      found.push(`process ${pid} (${readOr(`/proc/${pid}/cmdline`).split('\0').join(' ').trim().slice(0, 120)})`);
      log(`killed pid ${pid} of a stale system-test container`);
    } catch {
      /* gone */
    }
  }
  for (const d of stale) {
    await removeTree(d);
    found.push(`directory ${d}`);
    log(`removed stale system-test directory ${d}`);
  }
  for (const cg of staleCgroups) {
    await removeCgroup(cg).catch((err: Error) => log(err.message));
    found.push(`cgroup ${cg}`);
    log(`removed stale system-test cgroup ${basename(cg)} (${cg})`);
  }
  return found;
}

export { outputOf };

let signalsHandled = false;
/** SIGINT, SIGTERM and SIGHUP exit this process (128 + the signal), so that the exit handlers run. */
function exitOnSignals(): void {
  if (signalsHandled) return;
  signalsHandled = true;
  for (const [signal, n] of [
    ['SIGINT', 2],
    ['SIGTERM', 15],
    ['SIGHUP', 1],
  ] as const) {
    process.once(signal, () => process.exit(128 + n));
  }
}

function descendants(pid: number): number[] {
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift() as number;
    for (const t of readdirOr(`/proc/${p}/task`)) {
      for (const c of readOr(`/proc/${p}/task/${t}/children`).split(/\s+/).filter(Boolean)) {
        out.push(Number(c));
        queue.push(Number(c));
      }
    }
  }
  return out;
}

function startTime(pid: number): number | undefined {
  const stat = readOr(`/proc/${pid}/stat`);
  return stat === '' ? undefined : Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
}

function readdirOr(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}

function statOr(path: string): { dev: number; ino: number } | undefined {
  try {
    const st = statSync(path);
    return { dev: st.dev, ino: st.ino };
  } catch {
    return undefined;
  }
}

function readOr(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
