// A real etcd cluster for integration tests: N members (default 3) as processes inside a network
// namespace (the sandbox's hypervisor namespace), member i on 127.0.0.i (client port 2379, peer port
// 2380), data in a temporary directory. Members can be stopped, killed, restarted; the cluster can be
// compacted. Optional TLS: an openssl-made CA, a server certificate (SAN 127.0.0.1..N) and a client
// certificate, client certificates required. cleanup() kills by pid and removes the directory.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RUN_OWNER, TEST_PREFIX, sh } from './sandbox.ts';
import { until } from './wait.ts';

export interface EtcdClusterOptions {
  /** The network namespace (a name under /run/netns). */
  netns: string;
  members?: number;
  tls?: boolean;
  /** The members' addresses (default 127.0.0.1..N); they must exist in the namespace. */
  ips?: readonly string[];
}

export interface EtcdTlsFiles {
  ca: string;
  cert: string;
  key: string;
  serverCert: string;
  serverKey: string;
}

export class EtcdCluster {
  readonly netns: string;
  readonly size: number;
  readonly dir: string;
  readonly tls: EtcdTlsFiles | undefined;
  private readonly procs = new Map<number, ChildProcess>();
  private readonly token: string;
  private readonly ips: readonly string[];

  private constructor(options: EtcdClusterOptions) {
    this.netns = options.netns;
    this.size = options.ips?.length ?? options.members ?? 3;
    this.ips = options.ips ?? Array.from({ length: this.size }, (_, k) => `127.0.0.${k + 1}`);
    // Named after this run like the sandbox's files, so that scripts/sweep.sh leaves a live run's alone.
    this.dir = mkdtempSync(join(tmpdir(), `${TEST_PREFIX}${RUN_OWNER}-etcd-`));
    this.token = `imdstest-${process.pid}-${Date.now()}`;
    this.tls = options.tls === true ? this.tlsFiles() : undefined;
  }

  /** Starts a new cluster and waits until every member is healthy; cleans up if it cannot. */
  static async start(options: EtcdClusterOptions): Promise<EtcdCluster> {
    const cluster = new EtcdCluster(options);
    try {
      if (cluster.tls !== undefined) await cluster.makeCertificates();
      for (let i = 1; i <= cluster.size; i++) cluster.startMember(i, 'new');
      await cluster.waitHealthy();
      return cluster;
    } catch (err) {
      await cluster.cleanup();
      throw err;
    }
  }

  get scheme(): string {
    return this.tls === undefined ? 'http' : 'https';
  }

  ip(i: number): string {
    return this.ips[i - 1] as string;
  }

  /** Client endpoints, `scheme://127.0.0.i:2379`. */
  get endpoints(): string[] {
    return Array.from({ length: this.size }, (_, k) => `${this.scheme}://${this.ip(k + 1)}:2379`);
  }

  isRunning(i: number): boolean {
    return this.procs.has(i);
  }

  /** Starts member i (again): `existing` once the cluster has been formed. */
  startMember(i: number, state: 'new' | 'existing' = 'existing'): void {
    if (this.procs.has(i)) throw new Error(`etcd member ${i} is running already`);
    const peers = Array.from({ length: this.size }, (_, k) => `m${k + 1}=${this.scheme}://${this.ip(k + 1)}:2380`).join(',');
    const url = (port: number): string => `${this.scheme}://${this.ip(i)}:${port}`;
    const argv = [
      'etcd',
      `--name=m${i}`,
      `--data-dir=${join(this.dir, `m${i}`)}`,
      `--listen-client-urls=${url(2379)}`,
      `--advertise-client-urls=${url(2379)}`,
      `--listen-peer-urls=${url(2380)}`,
      `--initial-advertise-peer-urls=${url(2380)}`,
      `--initial-cluster=${peers}`,
      `--initial-cluster-token=${this.token}`,
      `--initial-cluster-state=${state}`,
      '--logger=zap',
      `--log-outputs=${join(this.dir, `m${i}.log`)}`,
      ...(this.tls === undefined ? [] : this.tlsFlags()),
    ];
    const child = spawn('nsenter', [`--net=/run/netns/${this.netns}`, '--', ...argv], { stdio: 'ignore' });
    child.on('exit', () => {
      if (this.procs.get(i) === child) this.procs.delete(i);
    });
    this.procs.set(i, child);
  }

  /** Stops member i with `signal` and waits until it has exited. */
  async stopMember(i: number, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.procs.get(i);
    if (child === undefined) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
    this.procs.delete(i);
  }

  killMember(i: number): Promise<void> {
    return this.stopMember(i, 'SIGKILL');
  }

  /** SIGSTOP (hung: connections open, no answers) or SIGCONT member i. */
  pauseMember(i: number, paused: boolean): void {
    const child = this.procs.get(i);
    if (child === undefined) throw new Error(`etcd member ${i} is not running`);
    child.kill(paused ? 'SIGSTOP' : 'SIGCONT');
  }

  /** etcdctl inside the namespace, against the given members (default all). */
  async ctl(args: readonly string[], members?: readonly number[]): Promise<string> {
    const eps = (members ?? Array.from({ length: this.size }, (_, k) => k + 1)).map((i) => `${this.scheme}://${this.ip(i)}:2379`);
    const tls = this.tls === undefined ? [] : [`--cacert=${this.tls.ca}`, `--cert=${this.tls.cert}`, `--key=${this.tls.key}`];
    const res = await sh(['nsenter', `--net=/run/netns/${this.netns}`, '--', 'etcdctl', `--endpoints=${eps.join(',')}`, ...tls, ...args], {
      allowFailure: true,
    });
    if (res.code !== 0) throw new Error(`etcdctl ${args.join(' ')} failed (${res.code}): ${res.stderr.trim()}`);
    return res.stdout;
  }

  /** Waits (10 s) until every running member reports healthy. */
  async waitHealthy(timeoutMs = 10_000): Promise<void> {
    const running = [...this.procs.keys()];
    await until(
      `etcd members ${running.join(',')} healthy`,
      async () => {
        try {
          await this.ctl(['endpoint', 'health', '--command-timeout=1s'], running);
          return true;
        } catch {
          return undefined;
        }
      },
      timeoutMs,
      100,
    );
  }

  /** The member id of the leader, as a member number. */
  async leader(): Promise<number> {
    const status = JSON.parse(await this.ctl(['endpoint', 'status', '-w', 'json'], [...this.procs.keys()])) as {
      Endpoint: string;
      Status: { header: { member_id: number }; leader: number };
    }[];
    const lead = status.find((s) => s.Status.header.member_id === s.Status.leader);
    if (lead === undefined) throw new Error('no etcd member is the leader');
    return this.ips.findIndex((ip) => lead.Endpoint.includes(`//${ip}:`)) + 1;
  }

  /** Compacts the keyspace up to `revision` (default: the current one); returns it. */
  async compact(revision?: number): Promise<number> {
    const rev =
      revision ??
      (
        JSON.parse(await this.ctl(['endpoint', 'status', '-w', 'json'], [[...this.procs.keys()][0] as number])) as {
          Status: { header: { revision: number } };
        }[]
      )[0]?.Status.header.revision;
    if (rev === undefined) throw new Error('no revision to compact at');
    await this.ctl(['compact', String(rev)]);
    return rev;
  }

  /** Kills every member (by pid) and removes the data directory. */
  async cleanup(): Promise<void> {
    for (const i of [...this.procs.keys()]) await this.killMember(i);
    rmSync(this.dir, { recursive: true, force: true });
  }

  private tlsFiles(): EtcdTlsFiles {
    const f = (name: string): string => join(this.dir, 'tls', name);
    return {
      ca: f('ca.pem'),
      cert: f('client.pem'),
      key: f('client-key.pem'),
      serverCert: f('server.pem'),
      serverKey: f('server-key.pem'),
    };
  }

  private tlsFlags(): string[] {
    const t = this.tls as EtcdTlsFiles;
    const files = [`--cert-file=${t.serverCert}`, `--key-file=${t.serverKey}`, `--trusted-ca-file=${t.ca}`, '--client-cert-auth'];
    const peer = [
      `--peer-cert-file=${t.serverCert}`,
      `--peer-key-file=${t.serverKey}`,
      `--peer-trusted-ca-file=${t.ca}`,
      '--peer-client-cert-auth',
    ];
    return [...files, ...peer];
  }

  private async makeCertificates(): Promise<void> {
    const dir = join(this.dir, 'tls');
    const t = this.tls as EtcdTlsFiles;
    const san = Array.from({ length: this.size }, (_, k) => `IP:${this.ip(k + 1)}`).join(',');
    const ossl = (args: string[]): Promise<unknown> => sh(['openssl', ...args]);
    await sh(['mkdir', '-p', dir]);
    await ossl([
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=imdstest-etcd-ca',
      '-keyout',
      join(dir, 'ca-key.pem'),
      '-out',
      t.ca,
    ]);
    const sign = async (name: string, cert: string, key: string, ext: string): Promise<void> => {
      const csr = join(dir, `${name}.csr`);
      const extFile = join(dir, `${name}.ext`);
      await sh(['sh', '-c', `printf '%s\\n' "$1" > "$2"`, 'sh', ext, extFile]);
      await ossl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', key, '-out', csr]);
      await ossl([
        'x509',
        '-req',
        '-in',
        csr,
        '-CA',
        t.ca,
        '-CAkey',
        join(dir, 'ca-key.pem'),
        '-CAcreateserial',
        '-days',
        '2',
        '-extfile',
        extFile,
        '-out',
        cert,
      ]);
    };
    await sign('server', t.serverCert, t.serverKey, `subjectAltName=${san}\nextendedKeyUsage=serverAuth,clientAuth`);
    await sign('client', t.cert, t.key, 'extendedKeyUsage=clientAuth');
  }
}
