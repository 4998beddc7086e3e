// `imds serve`: the composition root. Loads the configuration (failing before any side effect),
// opens the store and seeds it from the file, converges the kernel, serves guests and the admin
// API, tells systemd when every network serves, and reloads the file on SIGHUP.
import { buildConfigDrive } from './configdrive/image.ts';
import { configDriveFiles } from './configdrive/tree.ts';
import { RateLimiter } from './security/rate-limit.ts';
import { TokenKeys } from './security/tokens.ts';
import type { GuestGuard } from './server/guest-guard.ts';
import { writeSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { loadConfig, type Config } from './config.ts';
import { NftBatcher } from './netns/nft-batch.ts';
import { SpoofWatch } from './controller/spoof-watch.ts';
import { NetworkServices, type NetworkHooks } from './controller/network-services.ts';
import { DriftWatch } from './controller/drift-watch.ts';
import { bridgePorts, linksNamed } from './netns/netlink-links.ts';
import { desiredState, type DesiredNetwork } from './controller/desired.ts';
import type { Network } from './model/schema.ts';
import { Reconciler, type ReconcileSummary } from './controller/reconciler.ts';
import { DhcpServers } from './dhcp/dhcp-servers.ts';
import { ImdsError, isImdsError, messageOf } from './errors.ts';
import { createLogger, type Logger } from './log.ts';
import { Stats } from './stats.ts';
import { createRunner, spawnerScript, type Runner } from './netns/run.ts';
import { acquirePidFile } from './pidfile.ts';
import { createFastPath } from './server/fast-path.ts';
import { NetnsListeners, type RequestHandler } from './server/listeners.ts';
import { probe } from './server/probe.ts';
import { Inventory } from './store/inventory.ts';
import { SqliteStore } from './store/sqlite-store.ts';
import { createNotifier } from './systemd/notify.ts';
import { collectGarbage } from './util/gc.ts';

export const VERSION = '0.1.0';

/** Keys that only take effect at start; a reload that changes them is refused. */
const RESTART_ONLY = [
  'drift_check_interval_s',
  'spoof_check_interval_s',
  'rate_limit_per_second',
  'rate_limit_burst',
  'state_dir',
  'admin_socket',
  'admin_group',
  'dhcp_dir',
  'listen_port',
  'namespace_prefix',
  'request_timeout_ms',
  'headers_timeout_ms',
  'keep_alive_timeout_ms',
  'fast_path',
] as const;

export interface Daemon {
  /** Resolves when the daemon has stopped. */
  done: Promise<void>;
  reload(): Promise<ReconcileSummary | undefined>;
  stop(): Promise<void>;
}

/** Seeds the store from the file: adds or updates what it declares (and prunes, if authoritative). */
function seed(inventory: Inventory, cfg: Config): void {
  try {
    inventory.applyBatch(
      { networks: cfg.networks, vms: cfg.vms },
      { origin: 'config', ...(cfg.seed_mode === 'authoritative' ? { pruneOrigin: 'config' as const } : {}) },
    );
  } catch (err) {
    if (isImdsError(err, 'VALIDATION_FAILED')) {
      throw new ImdsError('CONFIG_INVALID', `${cfg.path}: the file does not fit the store's networks and VMs: ${err.message}`, {
        ...(err.field === undefined ? {} : { field: err.field }),
        ...(err.details === undefined ? {} : { details: err.details }),
      });
    }
    throw err;
  }
}

async function groupId(runner: Runner, name: string | undefined): Promise<number | undefined> {
  if (name === undefined) return undefined;
  const out = await runner.run(['getent', 'group', name], { allowFailure: true });
  const gid = Number(out.stdout.split(':')[2]);
  if (out.code !== 0 || !Number.isInteger(gid))
    throw new ImdsError('CONFIG_INVALID', `admin_group: no group "${name}" on this host`, { field: 'admin_group' });
  return gid;
}

export async function serve(configPath: string, logger?: Logger): Promise<Daemon> {
  const phases: Record<string, number> = { imports: Math.round(performance.now()) };
  const mark = (name: string): void => void (phases[name] = Math.round(performance.now()));
  let cfg = loadConfig(configPath);
  mark('config');
  const log = logger ?? createLogger({ level: cfg.log_level });
  // Signals that arrive while the daemon starts are held and acted on once it is ready: without a
  // handler, Node's default action for SIGHUP and SIGTERM ends the process at once (a reload sent
  // right after READY=1 would kill the service).
  const heldSignals = new Set<'stop' | 'reload'>();
  const holdStop = (): void => void heldSignals.add('stop');
  const holdReload = (): void => void heldSignals.add('reload');
  const releaseHeld = (): void => {
    process.off('SIGTERM', holdStop);
    process.off('SIGINT', holdStop);
    process.off('SIGHUP', holdReload);
  };
  const started = Date.now();
  // Commands start from a small helper process: a fork of the daemon itself would stall every
  // guest's answer for ~10 ms (docs/architecture.md).
  const runner = createRunner({ log: log.child({ component: 'runner' }), spawner: spawnerScript() });
  const gid = await groupId(runner, cfg.admin_group);
  const releasePid = acquirePidFile(cfg.state_dir);
  const cleanups: (() => void | Promise<void>)[] = [releaseHeld, releasePid, () => runner.close?.()];
  process.on('SIGTERM', holdStop);
  process.on('SIGINT', holdStop);
  process.on('SIGHUP', holdReload);
  const cleanup = async (): Promise<void> => {
    for (const fn of cleanups.reverse()) await Promise.resolve(fn()).catch(() => undefined);
  };

  try {
    const store = SqliteStore.open(cfg.state_dir);
    cleanups.push(() => store.close());
    // Fault injection for the crash-consistency test: pause half-way through a batch transaction.
    const pauseMs = Number(process.env['IMDS_FAULT_PAUSE_MID_BATCH_MS'] ?? 0);
    if (pauseMs > 0) {
      store.midBatchHook = (written, total) => {
        writeSync(2, `imds-fault: batch half written (${written} of ${total} VMs), pausing\n`);
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, pauseMs);
      };
    }
    mark('store');
    const inventory = Inventory.open(store, { dhcpDomain: cfg.dhcp_domain });
    mark('inventory');
    seed(inventory, cfg);
    mark('seed');

    let reconciler: Reconciler | undefined;
    const stats = new Stats();
    const guard: GuestGuard = {
      tokens: TokenKeys.load(cfg.state_dir),
      limiter:
        cfg.rate_limit_per_second > 0 ? new RateLimiter({ perSecond: cfg.rate_limit_per_second, burst: cfg.rate_limit_burst }) : undefined,
      stats,
    };
    // node:http hands requests the fast path does not answer to the Fastify app; that app (and its
    // framework) load only once the sockets are open, and the few requests that arrive before are
    // held until it is ready.
    let appHandler: RequestHandler | undefined;
    const held: [IncomingMessage, ServerResponse][] = [];
    const handler: RequestHandler = (req, res) => {
      if (appHandler === undefined) held.push([req, res]);
      else appHandler(req, res);
    };
    const front = cfg.fast_path
      ? createFastPath({
          index: () => inventory.index,
          password: (id) => inventory.password(id),
          log,
          stats,
          headersTimeoutMs: cfg.headers_timeout_ms,
          guard,
          keepAliveTimeoutMs: cfg.keep_alive_timeout_ms,
        })
      : undefined;
    const listeners = new NetnsListeners(
      handler,
      cfg.listen_port,
      { requestTimeoutMs: cfg.request_timeout_ms, headersTimeoutMs: cfg.headers_timeout_ms, keepAliveTimeoutMs: cfg.keep_alive_timeout_ms },
      log,
      front,
    );
    cleanups.push(() => listeners.closeAll());
    const dhcp = new DhcpServers({ dir: cfg.dhcp_dir, log: log.child({ component: 'dhcp' }) });
    const hostNft = new NftBatcher(runner);
    const services = new NetworkServices({
      runner,
      hostNft,
      dhcp,
      log: log.child({ component: 'services' }),
      network: (id) => inventory.getNetwork(id)?.network,
      hosts: (network) => inventory.vmList(network).map(({ vm }) => ({ mac: vm.mac, ip: vm.ip, hostname: vm.hostname })),
      defaultDomain: () => cfg.dhcp_domain,
    });
    inventory.onVmsChanged = (networks) => services.vmsChanged(networks);
    // Stops before the listeners close (cleanups run in reverse order).
    cleanups.push(() => services.stopAll());
    const spoofWatch = new SpoofWatch({
      runner,
      log: log.child({ component: 'spoofing' }),
      stats,
      serving: () => services.servingNetworks(),
      intervalMs: cfg.spoof_check_interval_s * 1000,
    });
    spoofWatch.start();
    cleanups.push(() => spoofWatch.stop());
    // Kernel drift: events and a periodic check lead to targeted repairs (reconcile of one network).
    let desiredMemo: { networks: Network[]; desired: DesiredNetwork[] } | undefined;
    const desiredNetworks = (): DesiredNetwork[] => {
      const networks = inventory.networkList();
      if (
        desiredMemo === undefined ||
        desiredMemo.networks.length !== networks.length ||
        desiredMemo.networks.some((n, i) => n !== networks[i])
      ) {
        desiredMemo = {
          networks,
          desired: [...desiredState({ namespacePrefix: cfg.namespace_prefix, listenPort: cfg.listen_port, networks }).networks.values()],
        };
      }
      return desiredMemo.desired;
    };
    const drift = new DriftWatch({
      log: log.child({ component: 'drift' }),
      stats,
      networks: desiredNetworks,
      repair: (id) => rec.reconcile(inventory.networkList(), [id]),
      intervalMs: cfg.drift_check_interval_s * 1000,
      guestSets: {
        own: (network, where) => services.ownSetWrite(network, where),
        check: (network, where) => services.checkGuestSets(network, where),
      },
      ports: (bridges) => bridgePorts(bridges),
      reattach: async (bridge, ports) => {
        const now = await linksNamed(ports);
        const loose = ports.filter((p) => now?.get(p) !== undefined && now.get(p)?.master === undefined);
        if (loose.length > 0)
          await runner.run(['ip', '-batch', '-'], { stdin: loose.map((p) => `link set ${p} master ${bridge}\n`).join('') });
        return loose;
      },
    });
    const hooks: NetworkHooks = {
      converged: async (d, sets) => {
        await services.converged(d, sets);
        drift.watch(d);
      },
      stopping: async (network, options) => {
        drift.unwatch(network);
        await services.stopping(network, options);
      },
    };
    const rec = new Reconciler({
      runner,
      hostNft,
      guestsOf: (network) => inventory.vmList(network).map(({ vm }) => ({ mac: vm.mac, ip: vm.ip })),
      listeners,
      hooks,
      log: log.child({ component: 'controller' }),
      namespacePrefix: cfg.namespace_prefix,
      listenPort: cfg.listen_port,
      onResult: (summary) => {
        stats.reconcileDuration.observe(summary.ms / 1000);
        for (const n of summary.networks) if (n.state !== 'serving') stats.reconcileFailed(n.network);
        for (const f of summary.removalFailures) stats.reconcileFailed(f.network);
      },
    });
    reconciler = rec;
    const converge = (): Promise<ReconcileSummary> => rec.reconcile(inventory.networkList());
    const notifier = createNotifier(runner, log);

    // Serve first: every network whose namespace survived (a restart) answers guests from here on,
    // before anything is verified or the admin API exists.
    const opened = await rec.listenExisting(inventory.networkList());
    mark('listening');
    if (opened > 0) log.info({ networks: opened, ms_since_start: Math.round(performance.now()), phases }, 'serving existing networks');
    const { buildMetadataApp } = await import('./server/metadata-app.ts');
    const { app, handler: fastifyHandler } = await buildMetadataApp({
      index: () => inventory.index,
      passwords: inventory,
      log,
      stats,
      guard,
    });
    cleanups.push(() => app.close());
    appHandler = fastifyHandler;
    for (const [req, res] of held.splice(0)) fastifyHandler(req, res);

    // The admin side loads only now: its modules are not needed to serve guests.
    const { API_VERSION, buildAdminApp, listenAdmin } = await import('./server/admin-app.ts');
    const { Metrics } = await import('./metrics.ts');
    const metrics = new Metrics({ stats, vmCount: () => inventory.vmCount(), networkStates: () => reconciler?.statuses() ?? [] });
    const admin = await buildAdminApp({
      inventory,
      log,
      metrics,
      converge,
      convergeNetwork: (id) => rec.reconcile(inventory.networkList(), [id]),
      statusOf: (network) => rec.statusOf(network),
      dhcpStatusOf: (network) => dhcp.statusOf(network),
      probe: async (network, vmId, path, method) => {
        const netns = listeners.netnsOf(network);
        if (netns === undefined) throw new ImdsError('NOT_FOUND', `network ${network} is not serving`);
        return probe(netns, vmId, path, method);
      },
      rotateTokenKey: () => guard.tokens.rotate(),
      configDrive: async (vmId, format) => {
        const stored = inventory.requireVm(vmId);
        const entry = inventory.index.lookupById(stored.vm.network, vmId);
        if (entry === undefined) throw new ImdsError('NOT_FOUND', `vm ${vmId} is not in the index`);
        return buildConfigDrive(runner, configDriveFiles(entry), format, 'imds 0.1.0');
      },
      vmChangesApplied: () => services.idle(),
      info: () => ({
        version: VERSION,
        api_version: API_VERSION,
        pid: process.pid,
        uptime_s: Math.round((Date.now() - started) / 1000),
        config: cfg.path,
        state_dir: cfg.state_dir,
        store: store.path,
        admin_socket: cfg.admin_socket,
        listen_port: cfg.listen_port,
        namespace_prefix: cfg.namespace_prefix,
        seed_mode: cfg.seed_mode,
        memory_kb: Object.fromEntries(Object.entries(process.memoryUsage()).map(([k, v]) => [k, Math.round(v / 1024)])),
      }),
    });
    cleanups.push(() => admin.close());

    const summary = await converge();
    await listenAdmin(admin, { path: cfg.admin_socket, ...(gid === undefined ? {} : { gid }) });
    const serving = summary.networks.filter((n) => n.state === 'serving').length;
    collectGarbage(); // the configuration's seed and the store's load leave their garbage behind
    drift.start();
    cleanups.push(() => drift.stop()); // runs first on shutdown: teardown is not drift
    // Fault injection for the signal tests: a start that takes a while.
    const startPauseMs = Number(process.env['IMDS_FAULT_PAUSE_BEFORE_READY_MS'] ?? 0);
    if (startPauseMs > 0) {
      writeSync(2, 'imds-fault: pausing before ready\n');
      await new Promise((resolve) => setTimeout(resolve, startPauseMs));
    }
    log.info(
      { networks: summary.networks.length, serving, vms: inventory.vmCount(), ms: summary.ms, admin_socket: cfg.admin_socket },
      'ready',
    );
    await notifier.ready(`serving ${serving}/${summary.networks.length} networks, ${inventory.vmCount()} VMs`);

    let stopping: Promise<void> | undefined;
    let resolveDone: () => void = () => undefined;
    const done = new Promise<void>((resolve) => (resolveDone = resolve));

    const reload = async (): Promise<ReconcileSummary | undefined> => {
      await notifier.reloading();
      try {
        let next: Config;
        try {
          next = loadConfig(configPath);
        } catch (err) {
          log.error({ err: messageOf(err) }, 'reload rejected: configuration invalid; keeping the running one');
          return undefined;
        }
        const changed = RESTART_ONLY.filter((k) => next[k] !== cfg[k]);
        if (changed.length > 0) {
          log.error({ keys: changed }, 'reload rejected: these keys take effect only at start; restart the daemon');
          return undefined;
        }
        try {
          seed(inventory, next);
        } catch (err) {
          log.error({ err: messageOf(err) }, 'reload rejected: configuration invalid; keeping the running one');
          return undefined;
        }
        if (next.dhcp_domain !== cfg.dhcp_domain) inventory.setDefaults({ dhcpDomain: next.dhcp_domain });
        cfg = next;
        log.level = cfg.log_level;
        const result = await converge();
        collectGarbage();
        log.info({ networks: result.networks.length, removed: result.removed, vms: inventory.vmCount(), ms: result.ms }, 'reloaded');
        return result;
      } finally {
        const ok = rec.statuses().filter((s) => s.state === 'serving').length;
        await notifier.ready(`serving ${ok}/${inventory.networkList().length} networks, ${inventory.vmCount()} VMs`);
      }
    };

    const stop = (): Promise<void> => {
      stopping ??= (async () => {
        log.info('stopping; namespaces stay in place');
        await notifier.stopping();
        process.off('SIGHUP', onHup);
        process.off('SIGTERM', onStop);
        process.off('SIGINT', onStop);
        await cleanup();
        resolveDone();
      })();
      return stopping;
    };

    const onHup = (): void => {
      log.info('SIGHUP: reloading the configuration');
      reload().catch((err: unknown) => log.error({ err: messageOf(err) }, 'reload failed'));
    };
    const onStop = (): void => void stop();
    process.on('SIGHUP', onHup);
    process.on('SIGTERM', onStop);
    process.on('SIGINT', onStop);
    releaseHeld();
    if (heldSignals.has('stop')) {
      log.info('a stop was requested while starting');
      void stop();
    } else if (heldSignals.has('reload')) {
      log.info('a reload was requested while starting');
      onHup();
    }
    return { done, reload, stop };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
