// One dnsmasq per DHCP network, started inside the network's namespace and supervised by the
// daemon: restarted with backoff when it dies, told to re-read its hosts and options files
// (SIGHUP) when VMs or options change, restarted only when its command line changes, and stopped
// before its namespace goes. Its files live in dhcp_dir/<network>/ (readable by the unprivileged
// user dnsmasq drops to; nothing in them is secret).
import { chmodSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { writeFileAtomic } from '../util/atomic-write.ts';
import { dirname, resolve } from 'node:path';
import { ImdsError, messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Network } from '../model/schema.ts';
import { startService, type ServiceHandle } from '../netns/service.ts';
import { dhcpPaths, dnsmasqArgv, renderHosts, renderOptions, type DhcpHost, type DhcpPaths } from './dnsmasq-config.ts';

export type DhcpState = 'running' | 'restarting' | 'stopped';

export interface DhcpStatus {
  network: string;
  state: DhcpState;
  pid: number | undefined;
  restarts: number;
  /** Why it last exited, when it was not asked to. */
  last_error: string | undefined;
  /**
   * It serves: running, and either it never died or it has stayed up a while since it last did (a
   * dnsmasq that cannot bind dies within milliseconds of every restart).
   */
  healthy: boolean;
}

/** How long a restarted dnsmasq must stay up before it counts as serving again. */
export const UP_AGAIN_MS = 2000;

interface Server {
  network: string;
  netns: string;
  argv: string[];
  paths: DhcpPaths;
  hostsText: string;
  optionsText: string;
  handle: ServiceHandle | undefined;
  stopping: boolean;
  restarts: number;
  /** Consecutive quick deaths; sets the backoff. */
  failures: number;
  startedAt: number;
  timer: NodeJS.Timeout | undefined;
  lastError: string | undefined;
  recent: string[];
}

const BACKOFF_MS = [500, 1000, 2000, 5000, 10_000, 30_000];
/** A run this long counts as healthy: the backoff starts over. */
const HEALTHY_MS = 60_000;

export interface DhcpServersOptions {
  dir: string;
  log: Logger;
  /** Test hook: the backoff schedule. */
  backoffMs?: readonly number[];
}

export class DhcpServers {
  private readonly servers = new Map<string, Server>();
  private readonly dir: string;
  private readonly log: Logger;
  private readonly backoff: readonly number[];

  constructor(options: DhcpServersOptions) {
    this.dir = options.dir;
    this.log = options.log;
    this.backoff = options.backoffMs ?? BACKOFF_MS;
  }

  networks(): string[] {
    return [...this.servers.keys()];
  }

  statusOf(network: string): DhcpStatus | undefined {
    const s = this.servers.get(network);
    if (s === undefined) return undefined;
    return {
      network,
      state: s.handle !== undefined ? 'running' : s.timer !== undefined ? 'restarting' : 'stopped',
      pid: s.handle?.pid,
      restarts: s.restarts,
      last_error: s.lastError,
      healthy: s.handle !== undefined && (s.restarts === 0 || Date.now() - s.startedAt >= UP_AGAIN_MS),
    };
  }

  /**
   * Runs the network's dnsmasq as declared: starts it, or rewrites the files that changed and has
   * it re-read them, or restarts it when its command line or namespace changed.
   */
  async ensure(net: Network, netns: string, hosts: readonly DhcpHost[], domain: string): Promise<void> {
    const paths = dhcpPaths(this.dir, net.id);
    const argv = dnsmasqArgv(net, paths);
    const hostsText = renderHosts(hosts);
    const optionsText = renderOptions(net, domain);
    let s = this.servers.get(net.id);
    if (s !== undefined && (s.netns !== netns || s.argv.join('\0') !== argv.join('\0'))) {
      await this.stop(net.id, { removeFiles: false });
      s = undefined;
    }
    if (s === undefined) {
      makeReadableDir(paths.dir);
      assertSearchable(this.dir);
      await stopByPidFile(paths.pid, this.log);
      writeForDnsmasq(paths.hosts, hostsText);
      writeForDnsmasq(paths.options, optionsText);
      s = {
        network: net.id,
        netns,
        argv,
        paths,
        hostsText,
        optionsText,
        handle: undefined,
        stopping: false,
        restarts: 0,
        failures: 0,
        startedAt: 0,
        timer: undefined,
        lastError: undefined,
        recent: [],
      };
      this.servers.set(net.id, s);
      this.start(s);
      return;
    }
    let changed = false;
    if (s.hostsText !== hostsText) {
      writeForDnsmasq(paths.hosts, hostsText);
      s.hostsText = hostsText;
      changed = true;
    }
    if (s.optionsText !== optionsText) {
      writeForDnsmasq(paths.options, optionsText);
      s.optionsText = optionsText;
      changed = true;
    }
    if (changed) this.reread(s);
  }

  /** New static hosts for a running network: the file is rewritten and re-read (no restart). */
  updateHosts(network: string, hosts: readonly DhcpHost[]): void {
    const s = this.servers.get(network);
    if (s === undefined) return;
    const text = renderHosts(hosts);
    if (text === s.hostsText) return;
    writeForDnsmasq(s.paths.hosts, text);
    s.hostsText = text;
    this.reread(s);
  }

  /** Stops the network's dnsmasq (and waits for it); with removeFiles, its directory goes too. */
  async stop(network: string, options: { removeFiles: boolean }): Promise<void> {
    const s = this.servers.get(network);
    const paths = s?.paths ?? dhcpPaths(this.dir, network);
    if (s !== undefined) {
      s.stopping = true;
      if (s.timer !== undefined) clearTimeout(s.timer);
      s.timer = undefined;
      await s.handle?.stop();
      this.servers.delete(network);
    }
    if (options.removeFiles) {
      await stopByPidFile(paths.pid, this.log);
      rmSync(paths.dir, { recursive: true, force: true });
    }
  }

  /** The daemon stops: every dnsmasq stops; files (leases) stay for the next start. */
  async stopAll(): Promise<void> {
    await Promise.all(this.networks().map((n) => this.stop(n, { removeFiles: false })));
  }

  private reread(s: Server): void {
    if (s.handle?.signal('SIGHUP') === true) this.log.debug({ network: s.network }, 'dnsmasq re-reads its hosts and options');
  }

  private start(s: Server): void {
    s.timer = undefined;
    s.recent = [];
    s.startedAt = Date.now();
    const log = this.log.child({ network: s.network, component: 'dnsmasq' });
    const handle = startService(s.argv, {
      netns: s.netns,
      onLine: (line) => {
        s.recent.push(line);
        if (s.recent.length > 5) s.recent.shift();
        if (/fail|error|warning|cannot|illegal|bad |unknown/i.test(line)) log.warn({ line }, 'dnsmasq');
        else log.debug({ line }, 'dnsmasq');
      },
      onExit: (code, signal) => {
        if (s.handle === handle) s.handle = undefined;
        if (s.stopping) return;
        const ranMs = Date.now() - s.startedAt;
        s.failures = ranMs >= HEALTHY_MS ? 1 : s.failures + 1;
        s.lastError = `exited with ${signal ?? `code ${code}`} after ${ranMs} ms${s.recent.length > 0 ? `: ${s.recent.join(' | ')}` : ''}`;
        const delay = this.backoff[Math.min(s.failures, this.backoff.length) - 1] ?? 30_000;
        log.error({ err: s.lastError, retry_ms: delay }, 'dnsmasq died; restarting');
        s.timer = setTimeout(() => {
          s.restarts++;
          try {
            this.start(s);
          } catch (err) {
            s.lastError = messageOf(err);
            log.error({ err: s.lastError }, 'dnsmasq cannot start');
          }
        }, delay);
        s.timer.unref();
      },
    });
    s.handle = handle;
    log.info({ pid: handle.pid }, 'dnsmasq started');
  }
}

/**
 * dnsmasq reads its files as user nobody: the directories imds creates are 0755 and its files 0644
 * whatever the service's umask (the unit's UMask=0027 would make them 0750 and 0640, and dnsmasq
 * could not read its hosts file).
 */
function makeReadableDir(dir: string): void {
  const first = mkdirSync(dir, { recursive: true, mode: 0o755 });
  if (first === undefined) return;
  for (let d = resolve(dir); ; d = dirname(d)) {
    chmodSync(d, 0o755);
    if (d === resolve(first) || d === dirname(d)) return;
  }
}

function writeForDnsmasq(path: string, text: string): void {
  writeFileAtomic(path, text, 0o644, { exactMode: true });
}

/**
 * dnsmasq drops to user nobody and re-reads its files as that user: every directory on the way
 * to dhcp_dir must be searchable by others, or DHCP changes would silently stop applying.
 */
function assertSearchable(dir: string): void {
  for (let d = resolve(dir); ; d = dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0) {
      throw new ImdsError(
        'CONFIG_INVALID',
        `dhcp_dir: ${dir} is not reachable by user nobody (dnsmasq): ${d} lacks o+x; choose another dhcp_dir or chmod o+x ${d}`,
        {
          field: 'dhcp_dir',
        },
      );
    }
    if (d === dirname(d)) return;
  }
}

/**
 * Stops a dnsmasq left behind (a daemon killed without its cleanup, or `imds down`): the pid in
 * the file, and only if that process is a dnsmasq started with this very pid file.
 * Returns the pid it stopped.
 */
export async function stopByPidFile(pidPath: string, log?: Logger, graceMs = 3000): Promise<number | undefined> {
  let pid: number;
  try {
    pid = Number(readFileSync(pidPath, 'utf8').trim());
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 1) return undefined;
  const ours = (): boolean => {
    try {
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      return args.some((a) => a.endsWith('dnsmasq')) && args.includes(`--pid-file=${pidPath}`);
    } catch {
      return false;
    }
  };
  if (!ours()) return undefined;
  log?.warn({ pid, pid_file: pidPath }, 'stopping a dnsmasq left behind');
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return undefined;
  }
  const deadline = Date.now() + graceMs;
  while (ours() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  if (ours()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    while (ours()) await new Promise((r) => setTimeout(r, 20));
  }
  return pid;
}
