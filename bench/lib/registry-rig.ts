// The registry bench's rig: N hypervisor sandboxes (`imdsbench-…`, each with its own daemon, host_id
// hv1…hvN) and a 3-member etcd cluster in its own namespace on TEST-NET-1 addresses 192.0.2.9-11,
// routed over one veth per hypervisor (etcd side 192.0.2.17+4k/30, hypervisor side .18+4k/30): the
// wiring of test/integration/registry.test.ts, with the links moved up so that a third one does not
// overlap the members. The agent (registry-agent.ts) runs in the etcd namespace. Nothing is made in
// the root namespace except the namespaces themselves; cleanup kills by pid and deletes by name.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { EtcdCluster } from '../../test/helpers/etcd-cluster.ts';
import { ROOT, Sandbox, sh, type DaemonProcess } from '../../test/helpers/sandbox.ts';

export const ETCD_IPS = ['192.0.2.9', '192.0.2.10', '192.0.2.11'];
export const PREFIX = '/imds/';

export interface Host {
  name: string;
  sb: Sandbox;
  daemon?: DaemonProcess;
}

/** The agent inside the etcd namespace, spoken to over its stdin and stdout (one JSON line each way). */
export class Agent {
  readonly child: ChildProcess;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  constructor(netns: string, endpoints: readonly string[]) {
    const script = join(ROOT, 'bench', 'lib', 'registry-agent.ts');
    this.child = spawn(
      'nsenter',
      [`--net=/run/netns/${netns}`, '--', process.execPath, '--import', 'tsx', script, endpoints.join(','), PREFIX],
      { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] },
    );
    createInterface({ input: this.child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      const r = JSON.parse(line) as { id: number; ok: boolean; result?: unknown; error?: string };
      const p = this.pending.get(r.id);
      this.pending.delete(r.id);
      if (r.ok) p?.resolve(r.result);
      else p?.reject(new Error(`agent: ${r.error}`));
    });
    this.child.once('exit', (code, signal) => {
      for (const p of this.pending.values()) p.reject(new Error(`agent exited (code ${code}, signal ${signal})`));
      this.pending.clear();
    });
  }

  call<T>(op: string, args: unknown): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: (v) => resolve(v as T), reject });
      this.child.stdin?.write(`${JSON.stringify({ id, op, args })}\n`);
    });
  }

  /** Ends it: stdin closed, SIGKILL after 5 s. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin?.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

export class Rig {
  readonly hosts: Host[];
  readonly etcdNs: string;
  cluster: EtcdCluster | undefined;
  agent: Agent | undefined;
  /** Sandboxes for daemons without a registry (the memory baseline). */
  readonly extra: Sandbox[] = [];

  constructor(count: number) {
    this.hosts = Array.from({ length: count }, (_, k) => ({ name: `hv${k + 1}`, sb: new Sandbox('imdsbench-') }));
    this.etcdNs = `${(this.hosts[0] as Host).sb.base}etcd`;
  }

  get endpoints(): string[] {
    if (this.cluster === undefined) throw new Error('no etcd cluster');
    return this.cluster.endpoints;
  }

  /** The hypervisor namespaces, the etcd namespace and its links, the cluster, the agent. */
  async setup(): Promise<void> {
    for (const h of this.hosts) await h.sb.setup();
    await sh(['ip', 'netns', 'add', this.etcdNs]);
    await sh(['ip', '-n', this.etcdNs, 'link', 'set', 'lo', 'up']);
    for (const ip of ETCD_IPS) await sh(['ip', '-n', this.etcdNs, 'addr', 'add', `${ip}/32`, 'dev', 'lo']);
    for (const [k, h] of this.hosts.entries()) await this.linkToEtcd(h, k);
    this.cluster = await EtcdCluster.start({ netns: this.etcdNs, ips: ETCD_IPS });
    this.agent = new Agent(this.etcdNs, this.cluster.endpoints);
  }

  private async linkToEtcd(h: Host, k: number): Promise<void> {
    const outer = `xe${h.sb.id}${k}`;
    const etcdSide = `192.0.2.${17 + 4 * k}`;
    await sh(['ip', '-n', this.etcdNs, 'link', 'add', outer, 'type', 'veth', 'peer', 'name', 'etcd0', 'netns', h.sb.hv]);
    await sh(['ip', '-n', this.etcdNs, 'addr', 'add', `${etcdSide}/30`, 'dev', outer]);
    await sh(['ip', '-n', this.etcdNs, 'link', 'set', outer, 'up']);
    await sh(['ip', '-n', h.sb.hv, 'addr', 'add', `192.0.2.${18 + 4 * k}/30`, 'dev', 'etcd0']);
    await sh(['ip', '-n', h.sb.hv, 'link', 'set', 'etcd0', 'up']);
    await sh(['ip', '-n', h.sb.hv, 'route', 'add', '192.0.2.8/29', 'via', etcdSide]);
  }

  /** The daemon's configuration: the registry, no per-guest rate limit (the pollers ask ~1,000 times a second). */
  configPath(h: Host): string {
    const cfg = h.sb.config({
      host_id: h.name,
      log_level: 'info',
      rate_limit_per_second: 0,
      registry: { etcd: { endpoints: this.endpoints, prefix: PREFIX } },
    });
    return h.sb.writeConfig(cfg);
  }

  /** Starts a host's daemon; `waitReady` false returns at once (the caller times it). */
  async start(h: Host, waitReady = true): Promise<DaemonProcess> {
    h.daemon = await h.sb.startDaemon(this.configPath(h), { waitReady, readyTimeoutMs: 900_000 });
    return h.daemon;
  }

  admins(): string[] {
    return this.hosts.map((h) => h.sb.adminSocket());
  }

  async cleanup(): Promise<void> {
    await this.agent?.stop().catch(() => undefined);
    for (const h of this.hosts) await h.sb.cleanupDaemons().catch(() => undefined);
    for (const sb of this.extra) await sb.cleanupDaemons().catch(() => undefined);
    await this.cluster?.cleanup().catch(() => undefined);
    // The etcd namespace is named after the first sandbox: its cleanup kills what is left in it and deletes it.
    for (const h of this.hosts) await h.sb.cleanup().catch(() => undefined);
    for (const sb of this.extra) await sb.cleanup().catch(() => undefined);
  }
}
