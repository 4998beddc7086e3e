// A guest inside the system test's container: a network namespace attached to an imds bridge by a
// veth, its DHCP client (busybox udhcpc) and its HTTP tools (the guest/*.mjs scripts, run by a copy
// of the package's Node so that an upgrade replacing the package's files never touches them).
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { parseLease, udhcpcArgv, UDHCPC_SCRIPT, type Lease } from '../helpers/dhcp-client.ts';
import type { Container } from './container.ts';
import type { Result, RunOptions } from './proc.ts';

/** Inside the container: the test's own files (not the package's; the purge check leaves it alone). */
export const TOOLS = '/var/tmp/imds-systest';
const NODE = `${TOOLS}/node`;
const HERE = new URL('.', import.meta.url).pathname;

/** Copies the guest scripts into the container. */
export async function installGuestTools(c: Container): Promise<void> {
  for (const file of ['poller.mjs', 'fetch.mjs']) await c.writeFile(`${TOOLS}/${file}`, readFileSync(`${HERE}guest/${file}`), '0644');
  // The DHCP event script is the integration suite's own.
  await c.writeFile(`${TOOLS}/udhcpc.sh`, readFileSync(UDHCPC_SCRIPT), '0755');
}

/** The guest tools' Node: a copy of the package's (the container has no other). */
export async function copyNode(c: Container, from = '/usr/lib/imds/node/bin/node'): Promise<void> {
  await c.exec(['cp', from, NODE]);
}

export interface FetchResult {
  status?: number;
  body?: string;
  error?: string;
}

export interface PollCounts {
  sent: number;
  ok: number;
  failed: number;
  reasons: Record<string, number>;
  max_ms: number;
  first_ms: number;
  last_ms: number;
  failures: { at: string; ms: number; why: string }[];
}

export class ContainerGuest {
  readonly c: Container;
  readonly netns: string;
  readonly hostEnd: string;
  readonly mac: string;

  private constructor(c: Container, netns: string, hostEnd: string, mac: string) {
    this.c = c;
    this.netns = netns;
    this.hostEnd = hostEnd;
    this.mac = mac;
  }

  /** A namespace `netns` with eth0 (MAC `mac`), its peer `hostEnd` a port of `bridge`. */
  static async create(c: Container, o: { netns: string; hostEnd: string; bridge: string; mac: string }): Promise<ContainerGuest> {
    await c.exec(['ip', 'netns', 'add', o.netns]);
    await c.exec(['ip', '-batch', '-'], {
      stdin: [
        `link add ${o.hostEnd} type veth peer name eth0 netns ${o.netns}`,
        `link set ${o.hostEnd} master ${o.bridge}`,
        `link set ${o.hostEnd} up`,
        '',
      ].join('\n'),
    });
    await c.exec(['ip', '-n', o.netns, '-batch', '-'], {
      stdin: ['link set lo up', `link set eth0 address ${o.mac}`, 'link set eth0 up', ''].join('\n'),
    });
    return new ContainerGuest(c, o.netns, o.hostEnd, o.mac);
  }

  exec(argv: readonly string[], options: RunOptions = {}): Promise<Result> {
    return this.c.exec(['nsenter', `--net=/run/netns/${this.netns}`, '--', ...argv], options);
  }

  /** Removes its namespace (its eth0 goes with it, and so does the peer on the bridge). */
  async remove(): Promise<void> {
    await this.c.exec(['ip', 'netns', 'del', this.netns]);
  }

  /**
   * One DHCP exchange (get a lease, configure the namespace, exit); the options the server handed
   * out (`msstaticroutes`: option 249, Microsoft's classless static routes, decoded by busybox).
   */
  async udhcpc(): Promise<Lease> {
    const leaseFile = `${TOOLS}/lease-${this.netns}`;
    await this.c.exec(['rm', '-f', leaseFile]);
    await this.exec(udhcpcArgv(leaseFile, `${TOOLS}/udhcpc.sh`), { timeoutMs: 60_000 });
    return parseLease(await this.c.readFile(leaseFile));
  }

  async fetch(path = '/openstack/latest/meta_data.json'): Promise<FetchResult> {
    const r = await this.exec([NODE, `${TOOLS}/fetch.mjs`, path, '10000'], { timeoutMs: 30_000 });
    return JSON.parse(r.stdout.trim()) as FetchResult;
  }

  /** Starts the poller (guest/poller.mjs); resolves once it has had its first success. */
  async poll(expect: string, intervalMs = 20, timeoutMs = 10_000): Promise<Poller> {
    const argv = [NODE, `${TOOLS}/poller.mjs`, String(intervalMs), String(timeoutMs), expect];
    const poller = new Poller(this.c.start(['nsenter', `--net=/run/netns/${this.netns}`, '--', ...argv]));
    try {
      await poller.started();
    } catch (err) {
      poller.kill();
      throw err;
    }
    return poller;
  }
}

/** A running poller: `stop()` ends its stdin and returns its counts. */
export class Poller {
  private readonly child: ChildProcess;
  private stdout = '';
  private stderr = '';
  private readonly closed: Promise<number | null>;

  constructor(child: ChildProcess) {
    this.child = child;
    child.stdout?.on('data', (d: Buffer) => (this.stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.closed = new Promise((resolve) => child.once('close', (code) => resolve(code)));
  }

  /** Resolves once the poller had a success; rejects if it exits or after `timeoutMs`. */
  async started(timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.stderr.includes('polling')) {
      if (this.child.exitCode !== null || this.child.signalCode !== null)
        throw new Error(`the poller exited before its first success:\n${this.stderr}${this.stdout}`);
      if (Date.now() > deadline) throw new Error(`the poller had no success within ${timeoutMs} ms:\n${this.stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async stop(timeoutMs = 60_000): Promise<PollCounts> {
    this.child.stdin?.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const code = await this.closed;
    clearTimeout(timer);
    const line = this.stdout.trim().split('\n').pop() ?? '';
    if (code !== 0 || line === '') throw new Error(`the poller ended with ${code} and no counts:\n${this.stderr}${this.stdout}`);
    return JSON.parse(line) as PollCounts;
  }

  /** Ends it without waiting for counts (cleanup): its stdin ends, so the poller inside stops too. */
  kill(): void {
    this.child.stdin?.end();
    this.child.kill('SIGKILL');
  }
}
