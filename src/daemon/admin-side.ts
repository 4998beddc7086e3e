// The daemon's admin side: the admin API (Fastify on the Unix socket) and its metrics (there, and
// over TCP with metrics_listen), loaded only once guests are served (its modules are not needed for that).
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.ts';
import { buildConfigDrive } from '../configdrive/image.ts';
import { configDriveFiles } from '../configdrive/tree.ts';
import { ImdsError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import { parseListenAddress } from '../model/listen-address.ts';
import type { Runner } from '../netns/run.ts';
import type * as AdminApp from '../server/admin-app.ts'; // loaded when the side is built (below)
import type { MetricsListener } from '../server/metrics-listener.ts';
import { probe } from '../server/probe.ts';
import type { Stats } from '../stats.ts';
import type { Inventory } from '../store/inventory.ts';
import type { SqliteStore } from '../store/sqlite-store.ts';
import { VERSION } from '../version.ts';
import type { GuestSide } from './guest-side.ts';
import type { KernelSide } from './kernel-side.ts';
import type { Health } from './health.ts';
import type { RegistrySide } from './registry-side.ts';

export interface AdminSideDeps {
  config: { current: Config };
  inventory: Inventory;
  store: SqliteStore;
  runner: Runner;
  kernel: KernelSide;
  guests: GuestSide;
  stats: Stats;
  log: Logger;
  startedAt: number;
  health: Health;
  /** A reload of the configuration file: the reason when refused. */
  reload: () => Promise<string | undefined>;
  /**
   * `imds restart` without systemd: hands over to a successor; its pid. Called with this admin
   * side's own pause and resume: the hand-over closes the socket the request came in on.
   */
  restart: (admin: AdminControl) => Promise<number>;
  /** With `registry` configured: writes go to etcd, and its state is reported. */
  registry?: RegistrySide | undefined;
}

/** What a hand-over does with the admin side. */
export interface AdminControl {
  /** Stops taking connections (a hand-over; the request in flight is answered). */
  pause(): Promise<void>;
  /** Takes connections again (a hand-over that failed). */
  resume(): Promise<void>;
}

export interface AdminSide extends AdminControl {
  app: FastifyInstance;
  listen(gid: number | undefined): Promise<void>;
  /** Closes the admin API (on stop), paused or not. */
  close(): Promise<void>;
}

/** admin_group's gid (checked at start, before any side effect that needs undoing). */
export async function adminGroupId(runner: Runner, name: string | undefined): Promise<number | undefined> {
  if (name === undefined) return undefined;
  const out = await runner.run(['getent', 'group', name], { allowFailure: true });
  const gid = Number(out.stdout.split(':')[2]);
  if (out.code !== 0 || !Number.isInteger(gid))
    throw new ImdsError('CONFIG_INVALID', `admin_group: no group "${name}" on this host`, { field: 'admin_group' });
  return gid;
}

/** What `imds status` shows of the daemon itself. */
function info(deps: AdminSideDeps, apiVersion: string): Record<string, unknown> {
  const cfg = deps.config.current;
  return {
    version: VERSION,
    api_version: apiVersion,
    pid: process.pid,
    uptime_s: Math.round((Date.now() - deps.startedAt) / 1000),
    config: cfg.path,
    state_dir: cfg.state_dir,
    store: deps.store.path,
    admin_socket: cfg.admin_socket,
    listen_port: cfg.listen_port,
    namespace_prefix: cfg.namespace_prefix,
    seed_mode: cfg.seed_mode,
    ...(deps.registry === undefined ? {} : { registry: registryInfo(deps.registry) }),
    memory_kb: Object.fromEntries(Object.entries(process.memoryUsage()).map(([k, v]) => [k, Math.round(v / 1024)])),
  };
}

function registryInfo(registry: RegistrySide): Record<string, unknown> {
  const s = registry.status();
  return {
    host_id: s.host_id,
    connected: s.connected,
    revision: s.revision,
    since: s.since,
    ...(s.lastError === undefined ? {} : { last_error: s.lastError }),
    prefix: s.prefix,
    endpoints: s.endpoints.join(','),
    hosts: s.hosts, // imds host list
  };
}

async function buildMetrics(deps: AdminSideDeps): Promise<Metrics> {
  const { Metrics } = await import('../metrics.ts');
  const { inventory, kernel } = deps;
  return new Metrics({
    stats: deps.stats,
    vmCount: () => inventory.vmCount(),
    networkStates: () => inventory.networkList().map((n) => ({ network: n.id, state: deps.health.statusOf(n.id)?.state ?? 'pending' })),
    dhcpServers: () =>
      kernel.dhcp.networks().flatMap((network) => {
        const d = kernel.dhcp.statusOf(network);
        return d === undefined ? [] : [{ network, up: d.healthy, restarts: d.restarts }];
      }),
    build: { dataPlane: deps.config.current.data_plane },
    ...(deps.registry === undefined ? {} : { registry: () => (deps.registry as RegistrySide).status() }),
  });
}

/** GET /metrics over TCP when metrics_listen is set (not listening yet). */
async function metricsListener(deps: AdminSideDeps, metrics: Metrics) {
  const text = deps.config.current.metrics_listen;
  if (text === undefined) return undefined;
  const parsed = parseListenAddress(text);
  if (!parsed.ok) throw new ImdsError('CONFIG_INVALID', `metrics_listen: ${parsed.reason}`, { field: 'metrics_listen' });
  const { MetricsListener } = await import('../server/metrics-listener.ts');
  return new MetricsListener(parsed.address, { render: () => metrics.render(), contentType: metrics.registry.contentType }, deps.log);
}

export async function buildAdminSide(deps: AdminSideDeps): Promise<AdminSide> {
  const adminApp = await import('../server/admin-app.ts');
  const { API_VERSION, buildAdminApp } = adminApp;
  const { inventory, kernel, guests, runner } = deps;
  const metrics = await buildMetrics(deps);
  const tcp = await metricsListener(deps, metrics);
  const app = await buildAdminApp({
    inventory,
    log: deps.log,
    metrics,
    converge: kernel.converge,
    convergeNetwork: kernel.convergeNetwork,
    statusOf: (network) => deps.health.statusOf(network),
    dhcpStatusOf: (network) => kernel.dhcp.statusOf(network),
    probe: (network, vmId, path, method) => {
      const netns = guests.listeners.netnsOf(network);
      if (netns === undefined) return Promise.reject(new ImdsError('NOT_FOUND', `network ${network} is not serving`));
      return probe(netns, vmId, path, method);
    },
    rotateTokenKey: () => {
      guests.guard.tokens.rotate();
      // With a registry the new key is shared: every host adopts it from its watch (logged when etcd is unreachable).
      deps.registry?.writer
        .replaceTokenKey(guests.guard.tokens.current())
        .catch((err: unknown) => deps.log.warn({ err: (err as Error).message }, 'the rotated token key was not published to the registry'));
    },
    contactOf: (vmId) => deps.stats.collect().contacts.get(vmId),
    configDrive: (vmId, format) => {
      const stored = inventory.requireVm(vmId);
      const entry = inventory.index.lookupById(stored.vm.network, vmId);
      if (entry === undefined) return Promise.reject(new ImdsError('NOT_FOUND', `vm ${vmId} is not in the index`));
      return buildConfigDrive(runner, configDriveFiles(entry), format, `imds ${VERSION}`);
    },
    vmChangesApplied: () => kernel.services.idle(),
    doctor: {
      runner,
      config: () => deps.config.current,
      statusOf: (network) => deps.health.statusOf(network),
      dhcpStatusOf: (network) => kernel.dhcp.statusOf(network),
      listenerFd: (network) => guests.listeners.fds().get(network),
      contactOf: (vmId) => deps.stats.collect().contacts.get(vmId),
      rateLimitOf: (network, source) => guests.rateLimitOf(network, source),
      startedAt: deps.startedAt,
    },
    reload: deps.reload,
    // The one reference from the app back to the side that serves it: a restart closes this socket.
    restart: () => deps.restart(side),
    ...(deps.registry === undefined ? {} : { registry: deps.registry }),
    info: () => info(deps, API_VERSION),
  });
  const side = adminSocket(app, deps.config.current.admin_socket, tcp, adminApp);
  return side;
}

/** The admin socket (and metrics_listen) of the app: bound, paused for a hand-over, resumed, closed. */
function adminSocket(
  app: FastifyInstance,
  path: string,
  tcp: MetricsListener | undefined,
  { listenAdmin, secureAdminSocket }: Pick<typeof AdminApp, 'listenAdmin' | 'secureAdminSocket'>,
): AdminSide {
  let gidUsed: number | undefined;
  return {
    app,
    listen: async (gid) => {
      gidUsed = gid;
      await listenAdmin(app, { path, ...(gid === undefined ? {} : { gid }) });
      await tcp?.listen();
    },
    // A hand-over: the successor binds the admin socket and metrics_listen next.
    pause: async () => {
      app.server.close();
      await tcp?.close();
    },
    // Fastify's close waits for its server's 'close', which a paused server has already had.
    close: async () => {
      await tcp?.close();
      await (app.server.listening ? app.close() : Promise.resolve(app.server.closeAllConnections()));
    },
    resume: async () => {
      await new Promise<void>((resolve, reject) => app.server.once('error', reject).listen({ path }, () => resolve()));
      await secureAdminSocket(path, gidUsed);
      await tcp?.relisten();
    },
  };
}
