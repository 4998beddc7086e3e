// A throwaway hypervisor for integration tests: a network namespace standing in for the host (the
// daemon runs in it with `nsenter --net`, never `ip netns exec`, see architecture.md decision 7),
// guest namespaces attached to imds's bridges, and cleanup by name and pid even when a test fails.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { createRunner, type RunResult } from '../../src/netns/run.ts';
import { DaemonProcess } from './daemon.ts';
import { SuccessorProcess } from './successor.ts';

export { DaemonProcess, SuccessorProcess };

export const ROOT = new URL('../..', import.meta.url).pathname;
export const MAIN = join(ROOT, 'dist', 'main.js');
/** The launcher operators run (it carries the daemon's Node flags). */
export const BIN = join(ROOT, 'bin', 'imds');
export const isRoot = process.getuid?.() === 0;
export const TEST_PREFIX = 'imdstest-';

/**
 * Everything a run creates is named `<prefix><owner>-<id>-…`, where `<owner>` is this process's pid
 * and start time (base 36): `scripts/sweep.sh` removes only what belongs to processes that are gone,
 * never a concurrent run's.
 */
export const RUN_OWNER = ((): string => {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const start = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
  return `${process.pid.toString(36)}-${start.toString(36)}`;
})();

const runner = createRunner({ defaultTimeoutMs: 60_000 });

export function sh(
  argv: readonly string[],
  options: { stdin?: string; allowFailure?: boolean; timeoutMs?: number } = {},
): Promise<RunResult> {
  return runner.run(argv, options);
}

export interface HttpResult {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

export class Guest {
  readonly name: string;
  readonly netns: string;
  readonly ip: string;
  readonly mac: string;

  constructor(name: string, netns: string, ip: string, mac: string) {
    this.name = name;
    this.netns = netns;
    this.ip = ip;
    this.mac = mac;
  }

  exec(argv: readonly string[], options: { stdin?: string; allowFailure?: boolean; timeoutMs?: number } = {}): Promise<RunResult> {
    return sh(['ip', 'netns', 'exec', this.netns, ...argv], options);
  }

  /** Runs Python (cloud-init's own readers) in the guest; its last stdout line is JSON, returned parsed. */
  async python<T>(lines: string[]): Promise<T> {
    const out = await this.exec(['/usr/bin/python3', '-c', lines.join('\n')], { timeoutMs: 120_000 });
    return JSON.parse(out.stdout.trim().split('\n').pop() as string) as T;
  }

  /** HTTP through the guest's own stack: bridge, DNAT, the daemon. */
  async http(
    path: string,
    options: { method?: string; host?: string; data?: string; headers?: string[]; maxTimeS?: number } = {},
  ): Promise<HttpResult> {
    const dir = mkdtempSync(join(tmpdir(), `${TEST_PREFIX}${RUN_OWNER}-http-`));
    try {
      const argv = [
        'curl',
        '-sS',
        '--max-time',
        String(options.maxTimeS ?? 10),
        '-D',
        join(dir, 'h'),
        '-o',
        join(dir, 'b'),
        '-w',
        '%{http_code}',
      ];
      if (options.method === 'HEAD') argv.push('-I');
      else if (options.method !== undefined) argv.push('-X', options.method);
      if (options.data !== undefined) argv.push('--data-binary', '@-');
      for (const h of options.headers ?? []) argv.push('-H', h);
      argv.push('--path-as-is', `http://${options.host ?? '169.254.169.254'}${path}`);
      const result = await this.exec(argv, options.data === undefined ? {} : { stdin: options.data });
      const headers: Record<string, string> = {};
      for (const line of readFileSync(join(dir, 'h'), 'utf8').split('\r\n').slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
      }
      const bodyFile = join(dir, 'b');
      return { status: Number(result.stdout.trim()), headers, body: existsSync(bodyFile) ? readFileSync(bodyFile) : Buffer.alloc(0) };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
}

export interface GuestOptions {
  /** Bridge in the hypervisor namespace to attach to. */
  bridge: string;
  /** Static address; omit for a guest that will ask DHCP (see test/helpers/dhcp-client.ts). */
  ip?: string;
  prefix?: number;
  mac: string;
  /** Add `169.254.169.254/32 via <route>` (the service address); omit for no metadata route. */
  metadataVia?: string;
  defaultVia?: string;
}

export class Sandbox {
  readonly id: string;
  readonly hv: string;
  readonly nsPrefix: string;
  readonly dir: string;
  private readonly daemons: DaemonProcess[] = [];
  /** Successors of `imds restart` watched here (successorOf). */
  private readonly successors: SuccessorProcess[] = [];
  /** Unexpected exits not yet reported by assertNoDeaths. */
  private readonly deaths: string[] = [];
  private guestCount = 0;
  /** Guests made here: their host end on the hypervisor's bridge. */
  private readonly guests: { guest: Guest; hostEnd: string }[] = [];

  readonly prefix: string;
  /** `<prefix><owner>-<id>-`: the start of every name this sandbox gives. */
  readonly base: string;

  /** `prefix` marks everything this sandbox creates: imdstest- (tests), imdsdemo-, imdsbench-. */
  constructor(prefix = TEST_PREFIX) {
    this.prefix = prefix;
    this.id = randomBytes(3).toString('hex');
    this.base = `${prefix}${RUN_OWNER}-${this.id}-`;
    this.hv = `${this.base}hv`;
    this.nsPrefix = `${this.base}n-`;
    this.dir = mkdtempSync(join(tmpdir(), this.base));
    // dnsmasq re-reads its files as user nobody: the path to dhcp_dir must be searchable.
    chmodSync(this.dir, 0o755);
  }

  /** Runs argv in the hypervisor namespace (network only). */
  hvRun(argv: readonly string[], options: { stdin?: string; allowFailure?: boolean } = {}): Promise<RunResult> {
    return sh(['nsenter', `--net=/run/netns/${this.hv}`, '--', ...argv], options);
  }

  async hvLinks(): Promise<
    Record<string, { ifindex: number; ifalias?: string; master?: string; flags: string[]; mtu: number; linkinfo?: { info_kind?: string } }>
  > {
    const rows = JSON.parse((await sh(['ip', '-n', this.hv, '-j', '-d', 'link', 'show'])).stdout) as {
      ifname: string;
      ifindex: number;
      flags: string[];
      mtu: number;
    }[];
    return Object.fromEntries(rows.map((r) => [r.ifname, r]));
  }

  namespaces(): Promise<string[]> {
    return Promise.resolve(existsSync('/run/netns') ? readdirSync('/run/netns').filter((n) => n.startsWith(this.base)) : []);
  }

  async addGuest(name: string, options: GuestOptions): Promise<Guest> {
    await this.refuseTwin(options.bridge, options.mac);
    const netns = `${this.base}g-${name}`;
    const hostEnd = `tg${this.id.slice(0, 4)}${++this.guestCount}`;
    await sh(['ip', 'netns', 'add', netns]);
    const lines = [
      `link add ${hostEnd} type veth peer name eth0 netns ${netns}`,
      `link set ${hostEnd} master ${options.bridge}`,
      `link set ${hostEnd} up`,
    ];
    await sh(['ip', '-n', this.hv, '-batch', '-'], { stdin: `${lines.join('\n')}\n` });
    const inside = [
      'link set lo up',
      `link set eth0 address ${options.mac}`,
      ...(options.ip === undefined ? [] : [`addr add ${options.ip}/${options.prefix ?? 24} dev eth0`]),
      'link set eth0 up',
      ...(options.metadataVia ? [`route add 169.254.169.254/32 via ${options.metadataVia}`] : []),
      ...(options.defaultVia ? [`route add default via ${options.defaultVia}`] : []),
    ];
    await sh(['ip', '-n', netns, '-batch', '-'], { stdin: `${inside.join('\n')}\n` });
    const guest = new Guest(name, netns, options.ip ?? '', options.mac);
    this.guests.push({ guest, hostEnd });
    return guest;
  }

  /** Deletes a guest (its namespace, and with it both ends of its veth): it leaves the bridge. */
  async removeGuest(guest: Guest): Promise<void> {
    await killInside(guest.netns);
    await sh(['ip', 'netns', 'del', guest.netns]);
    const at = this.guests.findIndex((g) => g.guest === guest);
    if (at >= 0) this.guests.splice(at, 1);
  }

  /**
   * Two guests with one MAC on one bridge make the bridge send one's frames to the other now and
   * then (it learns the MAC from whichever spoke last): a test left a guest behind that a later one
   * repeats. Networks outlive a stopped daemon, so a bridge of an earlier test can still be there.
   */
  private async refuseTwin(bridge: string, mac: string): Promise<void> {
    const same = this.guests.filter((g) => g.guest.mac.toLowerCase() === mac.toLowerCase());
    if (same.length === 0) return;
    const links = await this.hvLinks();
    const twin = same.find((g) => links[g.hostEnd]?.master === bridge);
    if (twin !== undefined)
      throw new Error(`sandbox: guest ${twin.guest.name} (${mac}) is still on ${bridge}: remove it first (removeGuest)`);
  }

  /**
   * Base configuration for one daemon of this sandbox; merge networks and vms in. Each `instance`
   * has its own state_dir (store) and admin socket.
   */
  config(extra: Record<string, unknown>, instance = 'main'): Record<string, unknown> {
    return {
      state_dir: join(this.dir, instance, 'state'),
      admin_socket: this.adminSocket(instance),
      dhcp_dir: join(this.dir, `${instance}-dhcp`),
      namespace_prefix: this.nsPrefix,
      log_level: 'debug',
      ...extra,
    };
  }

  /** The daemon's Prometheus text (admin socket). */
  metrics(instance = 'main'): string {
    return execFileSync('curl', ['-s', '--unix-socket', this.adminSocket(instance), 'http://imds/metrics']).toString();
  }

  /** Sum of the samples of `name` whose labels include every `key="value"` in `labels`. */
  metric(name: string, labels: Record<string, string> = {}, instance = 'main'): number {
    const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
    return this.metrics(instance)
      .split('\n')
      .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
      .filter((l) => want.every((w) => l.slice(0, l.lastIndexOf(' ')).includes(w)))
      .reduce((n, l) => n + Number(l.split(' ').pop()), 0);
  }

  adminSocket(instance = 'main'): string {
    return join(this.dir, instance, 'admin.sock');
  }

  /**
   * Writes a configuration file. The suite runs once per data plane (scripts/test.sh):
   * IMDS_TEST_DATA_PLANE (native | node) sets `data_plane` where the test does not.
   */
  writeConfig(config: Record<string, unknown>, file = 'imds.yaml'): string {
    const path = join(this.dir, file);
    const plane = process.env['IMDS_TEST_DATA_PLANE'];
    const full = plane === undefined || 'data_plane' in config ? config : { ...config, data_plane: plane };
    writeFileSync(path, stringify(full, { customTags: ['binary'] }));
    return path;
  }

  /** Runs the CLI in the hypervisor namespace. */
  cli(args: readonly string[], options: { allowFailure?: boolean; stdin?: string } = {}): Promise<RunResult> {
    return this.hvRun([process.execPath, MAIN, ...args], options);
  }

  /**
   * Starts `imds serve` in the hypervisor namespace and waits for its `ready` log line. Every exit
   * of it must be asked for (test/helpers/daemon.ts); `expectExit` for one that should refuse to start.
   */
  async startDaemon(
    configPath: string,
    options: { waitReady?: boolean; readyTimeoutMs?: number; env?: Record<string, string>; nodeArgs?: string[]; expectExit?: boolean } = {},
  ): Promise<DaemonProcess> {
    const launcher = options.nodeArgs === undefined ? [BIN] : [process.execPath, ...options.nodeArgs, MAIN];
    const daemon = new DaemonProcess({
      argv: ['nsenter', `--net=/run/netns/${this.hv}`, '--', ...launcher, 'serve', '--config', configPath],
      env: { ...process.env, ...(options.env ?? {}) },
      expectExit: options.expectExit ?? false,
      onUnexpectedExit: (d) => {
        this.deaths.push(d.unexpected as string);
        process.stdout.write(`# ${(d.unexpected as string).split('\n').join('\n# ')}\n`);
      },
    });
    this.daemons.push(daemon);
    if (options.waitReady ?? true) await daemon.waitFor((l) => l['msg'] === 'ready', options.readyTimeoutMs);
    return daemon;
  }

  /**
   * The daemon `imds restart` started in place of `predecessor` (the pid its `--json` answer names),
   * under the same rule as `startDaemon`'s: any exit not asked for (`stop()`, `kill()` on what this
   * returns) fails the test, and `stop()` fails unless it exits 0 with a clean stop in its log. Call
   * it as soon as the pid is known: an exit before the watch begins fails here.
   */
  async successorOf(predecessor: DaemonProcess, pid: number): Promise<SuccessorProcess> {
    const successor = await SuccessorProcess.watch(predecessor, pid, (s) => {
      this.deaths.push(s.unexpected as string);
      process.stdout.write(`# ${(s.unexpected as string).split('\n').join('\n# ')}\n`);
    });
    this.successors.push(successor);
    return successor;
  }

  /** Throws if any daemon of this sandbox exited in a way its test did not ask for (once per death). */
  assertNoDeaths(): void {
    const deaths = this.deaths.splice(0);
    if (deaths.length > 0) throw new Error(`a daemon died during the test:\n${deaths.join('\n')}`);
  }

  async setup(): Promise<void> {
    if (!isRoot) throw new Error('integration tests need root (network namespaces, bridges, nftables): run ./scripts/test.sh as root');
    await sh(['ip', 'netns', 'add', this.hv]);
    await sh(['ip', '-n', this.hv, 'link', 'set', 'lo', 'up']);
  }

  /**
   * Stops every daemon started here and every successor watched here (SIGTERM, then SIGKILL after
   * 10 s), all of them whatever happens to one; then throws an AggregateError naming each one that
   * did not stop cleanly (a non-zero exit, an exit nobody asked for), with its last output.
   */
  async cleanupDaemons(): Promise<void> {
    const failures: Error[] = [];
    for (const d of [...this.daemons, ...this.successors]) {
      try {
        await d.stop();
      } catch (err) {
        failures.push(err as Error);
      }
    }
    if (failures.length > 0) {
      const what = failures.map((e) => e.message).join('\n');
      throw new AggregateError(failures, `sandbox ${this.base}: ${failures.length} daemon(s) did not stop cleanly:\n${what}`);
    }
  }

  /** Kills every process started here and every process inside our namespaces, then deletes them. */
  async cleanup(): Promise<void> {
    for (const d of this.daemons) await d.kill();
    for (const s of this.successors) {
      if (s.alive) await s.kill().catch(() => undefined); // gone either way: SIGKILL was sent
      s.dispose();
    }
    for (const ns of await this.namespaces()) await killInside(ns);
    for (const ns of await this.namespaces()) await sh(['ip', 'netns', 'del', ns], { allowFailure: true });
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** SIGKILLs every process inside the named namespace. */
async function killInside(netns: string): Promise<void> {
  const pids = (await sh(['ip', 'netns', 'pids', netns], { allowFailure: true })).stdout.split(/\s+/).filter(Boolean);
  for (const pid of pids) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

type Hook = (fn: () => Promise<void> | void) => void;

/**
 * A sandbox for a describe() block: created in before(), cleaned up in after() whatever the outcome.
 * With `afterEach`, a daemon that died during a test fails that test; after() fails the suite for
 * one that died outside any test. Call at the top level of the describe body.
 */
export function useSandbox(hooks: { before: Hook; after: Hook; afterEach?: Hook }): () => Sandbox {
  let sb: Sandbox | undefined;
  hooks.before(async () => {
    sb = new Sandbox();
    await sb.setup();
  });
  hooks.afterEach?.(() => sb?.assertNoDeaths());
  hooks.after(async () => {
    try {
      sb?.assertNoDeaths();
    } finally {
      await sb?.cleanup();
    }
  });
  return () => {
    if (sb === undefined) throw new Error('sandbox not set up yet');
    return sb;
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
