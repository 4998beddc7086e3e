// `imds serve`: the composition root. It builds the parts and connects them through their
// constructors; what each part does lives in its own module (guest-side, kernel-side, admin-side,
// signals, reload, health, faults). Order matters and is the point of this file: the configuration
// is checked before any side effect; sockets passed from a previous run are taken before any child
// process starts; sockets of surviving namespaces serve guests before anything else is verified;
// systemd hears READY=1 once every network serves.
import type { Config } from '../config.ts';
import { loadConfig } from '../config.ts';
import { OwnProcesses } from '../controller/drift/own-processes.ts';
import { messageOf } from '../errors.ts';
import { createLogger, type Logger } from '../log.ts';
import { requireAddon } from '../netns/addon.ts';
import { requireNetlink } from '../netns/netlink.ts';
import { createRunner, spawnerScript } from '../netns/run.ts';
import { acquirePidFile } from '../pidfile.ts';
import { inheritedSockets, ListenSockets } from '../server/listen-sockets.ts';
import { Stats } from '../stats.ts';
import { Inventory } from '../store/inventory.ts';
import { InventoryChanges } from '../store/inventory-events.ts';
import { SqliteStore } from '../store/sqlite-store.ts';
import { createNotifier, type Notifier } from '../systemd/notify.ts';
import { collectGarbage } from '../util/gc.ts';
import { adminGroupId, buildAdminSide, type AdminSide } from './admin-side.ts';
import { Cleanups } from './cleanups.ts';
import { failAsSuccessor, faultsFromEnv } from './faults.ts';
import { exitOf, predecessor } from './handover.ts';
import { buildGuestSide, type GuestSide } from './guest-side.ts';
import { health } from './health.ts';
import { buildKernelSide, type KernelSide } from './kernel-side.ts';
import { Lifecycle, reloadOf, restartOf, type Daemon, type DaemonParts } from './lifecycle.ts';
import { buildRegistrySide, type RegistrySide } from './registry-side.ts';
import { seed } from './seed.ts';
import { SignalGate } from './signals.ts';

export type { Daemon } from './lifecycle.ts';

/** The parts, built and connected (nothing serves yet); what they hold is released by `cleanups`. */
async function build(cfg: Config, config: { current: Config }, log: Logger, notifier: Notifier, cleanups: Cleanups, handingOver: boolean) {
  // Sockets a previous run left in systemd's store (or handed over): taken, and made
  // close-on-exec, before any child process starts.
  const inherited = inheritedSockets();
  const ownProcesses = new OwnProcesses(); // our own `nft` runs: their transactions are not drift
  const runner = createRunner({
    log: log.child({ component: 'runner' }),
    spawner: spawnerScript(),
    onStarted: (pid) => ownProcesses.started(pid),
  });
  cleanups.add('process runner', () => runner.close?.());
  const gid = await adminGroupId(runner, cfg.admin_group);
  // A successor (a hand-over) takes the pid file once the daemon it replaces has exited.
  if (!handingOver) cleanups.add('pid file', acquirePidFile(cfg.state_dir));
  const faults = faultsFromEnv();
  const store = SqliteStore.open(cfg.state_dir, {
    midBatchHook: faults.midBatchHook,
    onMigrationBackup: (b) => log.info({ backup: b.path, from: b.from, to: b.to }, 'store copied before its schema migration'),
  });
  cleanups.add('store', () => store.close());
  const stats = new Stats();
  // The inventory's events go to each part below once it is built (nothing changes the inventory
  // before the configuration is seeded, after `build`).
  const changes = new InventoryChanges();
  const inventory = Inventory.open(store, { dhcpDomain: cfg.dhcp_domain }, changes);
  // Gone VMs' per-VM metric series and (when removed, not moved) their contact go with them.
  changes.follow({ onVmsGone: (gone) => stats.forgetVms(gone, (id) => inventory.getVm(id) !== undefined) });
  const sockets = new ListenSockets({ port: cfg.listen_port, notifier, log, inherited });
  const guests = buildGuestSide(cfg, inventory, sockets, stats, log);
  changes.follow({ onIndexChanged: (index, networks) => guests.indexChanged(index, networks) });
  cleanups.add('per-VM contact', () => guests.contacts.close()); // written last: after the listeners
  cleanups.add('access log', () => guests.accessLog.close()); // after the listeners (cleanups run in reverse)
  cleanups.add('guest listeners', async () => {
    await guests.listeners.stopAll();
    guests.native?.stop();
  });
  const kernel = buildKernelSide({ config, runner, inventory, listeners: guests.listeners, stats, log, ownProcesses });
  changes.follow({ onVmsChanged: (networks) => kernel.services.vmsChanged(networks) });
  cleanups.add('DHCP servers and guest sets', () => kernel.services.stopAll()); // before the listeners close (cleanups run in reverse)
  const registry = registrySideOf(cfg, inventory, kernel, guests, log);
  if (registry !== undefined) {
    // A guest's password goes to the registry too (create-only: it moves with the VM).
    changes.follow({ onPasswordPosted: (vmId, value) => registry.passwords.post(vmId, value) });
    cleanups.add('registry sync', () => registry.close());
  }
  return { runner, gid, faults, store, stats, inventory, sockets, guests, kernel, registry };
}

type Built = Awaited<ReturnType<typeof build>>;

/** With `registry` configured: the sync (placement into the inventory, networks converged) and the writer. */
function registrySideOf(cfg: Config, inventory: Inventory, kernel: KernelSide, guests: GuestSide, log: Logger) {
  const tokens = guests.guard.tokens;
  const side: RegistrySide | undefined = buildRegistrySide(cfg, {
    target: inventory,
    log,
    onApplied: (result) => {
      const nets = result.networks;
      if (nets.created.length + nets.updated.length + nets.deleted.length === 0) return;
      kernel.converge().catch((err: unknown) => log.error({ err: messageOf(err) }, 'converge after a registry change failed'));
    },
    onTokenKey: (key) => {
      if (key !== undefined) tokens.adopt(key);
      else
        side?.writer
          .publishTokenKey(tokens.current())
          .catch((err: unknown) => log.warn({ err: messageOf(err) }, 'token key not published'));
    },
  });
  return side;
}

/**
 * Guests first: the configuration seeded, and every network whose namespace survived served from
 * the local copy at once. The registry's first read runs meanwhile (at 10,000 VMs it takes ~1.5 s;
 * a hung etcd up to its call deadline): its placement reaches the guests when it is applied, and
 * `ready` waits for it (`firstRead`), not the guests.
 */
async function serveGuests(b: Built, cfg: Config, log: Logger, cleanups: Cleanups): Promise<{ firstRead: Promise<void> }> {
  seed(b.inventory, cfg);
  b.kernel.spoofWatch.start();
  cleanups.add('spoof watch', () => b.kernel.spoofWatch.stop());
  const opened = await b.kernel.reconciler.listenExisting(b.inventory.networkList());
  if (opened > 0)
    log.info({ networks: opened, sockets: b.sockets.counts, ms_since_start: Math.round(performance.now()) }, 'serving existing networks');
  // With etcd down the local copy serves and the sync retries; start() never rejects.
  const firstRead = b.registry?.sync.start() ?? Promise.resolve();
  const app = await b.guests.loadApp();
  cleanups.add('guest app', () => app.close());
  return { firstRead };
}

/** The admin side, with reload and (without systemd) restart; its socket is not bound yet. */
async function openAdmin(b: Built, parts: DaemonParts, life: Lifecycle): Promise<AdminSide> {
  const admin = await buildAdminSide({
    ...b,
    config: parts.config,
    log: parts.log,
    startedAt: Date.now(),
    health: parts.health,
    reload: reloadOf(parts),
    restart: restartOf(parts, () => life.stop()),
  });
  parts.cleanups.add('admin API', () => admin.close());
  return admin;
}

/** Everything verified and converged, the admin socket bound, the pid file taken: ready. */
async function finishStart(b: Built, parts: DaemonParts, admin: AdminSide, replacing: ReturnType<typeof predecessor>): Promise<void> {
  const { log, cleanups } = parts;
  const cfg = parts.config.current;
  const summary = await b.kernel.converge();
  const dropped = b.sockets.dropUnadopted();
  if (dropped.length > 0) log.info({ sockets: dropped }, 'closed stored sockets of networks no longer declared');
  await admin.listen(b.gid);
  if (replacing !== undefined) {
    replacing.tell('ready');
    await exitOf(replacing.pid);
    cleanups.add('pid file', acquirePidFile(cfg.state_dir));
  }
  collectGarbage(); // the configuration's seed and the store's load leave their garbage behind
  b.kernel.drift.start();
  cleanups.add('drift watch', () => b.kernel.drift.stop()); // runs first on shutdown: teardown is not drift
  if (b.faults.noDriftRepair) await b.kernel.drift.pause();
  await b.faults.beforeReady();
  const serving = summary.networks.filter((n) => n.state === 'serving').length;
  const vms = b.inventory.vmCount();
  log.info(
    { networks: summary.networks.length, serving, vms, ms: summary.ms, sockets: b.sockets.counts, admin_socket: cfg.admin_socket },
    'ready',
  );
  parts.notifier.ready(parts.health.line());
}

export async function serve(configPath: string, logger?: Logger): Promise<Daemon> {
  const config = { current: loadConfig(configPath) };
  const cfg = config.current;
  const log = logger ?? createLogger({ level: cfg.log_level });
  requireAddon(); // required, not optional: a clear error now rather than a failure later
  requireNetlink();
  const notifier = createNotifier(log);
  const replacing = predecessor();
  failAsSuccessor(replacing !== undefined);
  const signals = new SignalGate();
  const cleanups = new Cleanups(log);
  cleanups.add('signals', () => signals.close());
  try {
    const b = await build(cfg, config, log, notifier, cleanups, replacing !== undefined);
    // Serve first: every network whose namespace survived (a restart) answers guests from here on.
    const { firstRead } = await serveGuests(b, cfg, log, cleanups);
    const { inventory, kernel, guests } = b;
    const parts: DaemonParts = {
      config,
      configPath,
      log,
      notifier,
      inventory,
      kernel,
      guests,
      health: health(kernel, inventory, b.registry),
      signals,
      cleanups,
    };
    const life = new Lifecycle(parts);
    const admin = await openAdmin(b, parts, life);
    await firstRead; // the registry's placement applied (or its first attempt failed) before the first converge
    await finishStart(b, parts, admin, replacing);
    return life.begin();
  } catch (err) {
    await cleanups.run();
    throw err;
  }
}
