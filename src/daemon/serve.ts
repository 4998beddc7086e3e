// `imds serve`: the composition root. It builds the parts and connects them through their
// constructors; what each part does lives in its own module (guest-side, kernel-side, admin-side,
// signals, reload, faults). Order matters and is the point of this file: the configuration is
// checked before any side effect; sockets of surviving namespaces serve guests before anything
// else is verified; systemd hears READY=1 once every network serves.
import { loadConfig, type Config } from '../config.ts';
import type { ReconcileSummary } from '../controller/reconciler.ts';
import { ImdsError } from '../errors.ts';
import { createLogger, setLogLevel, type Logger } from '../log.ts';
import { requireAddon } from '../netns/addon.ts';
import { requireNetlink } from '../netns/netlink.ts';
import { createRunner, spawnerScript, type Runner } from '../netns/run.ts';
import { acquirePidFile } from '../pidfile.ts';
import { Stats } from '../stats.ts';
import { Inventory } from '../store/inventory.ts';
import { SqliteStore } from '../store/sqlite-store.ts';
import { createNotifier } from '../systemd/notify.ts';
import { OwnProcesses } from '../controller/drift/own-processes.ts';
import { collectGarbage } from '../util/gc.ts';
import { buildAdminSide } from './admin-side.ts';
import { Cleanups } from './cleanups.ts';
import { faultsFromEnv } from './faults.ts';
import { buildGuestSide } from './guest-side.ts';
import { buildKernelSide } from './kernel-side.ts';
import { reload } from './reload.ts';
import { seed } from './seed.ts';
import { SignalGate } from './signals.ts';

export interface Daemon {
  /** Resolves when the daemon has stopped. */
  done: Promise<void>;
  reload(): Promise<ReconcileSummary | undefined>;
  stop(): Promise<void>;
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
  const config = { current: loadConfig(configPath) };
  const cfg: Config = config.current;
  const log = logger ?? createLogger({ level: cfg.log_level });
  requireAddon(); // required, not optional: a clear error now rather than a failure later
  requireNetlink();
  const signals = new SignalGate();
  const cleanups = new Cleanups();
  cleanups.add(() => signals.close());
  try {
    // Our own `nft` runs, known by pid: their nftables transactions are not drift.
    const ownProcesses = new OwnProcesses();
    const runner = createRunner({
      log: log.child({ component: 'runner' }),
      spawner: spawnerScript(),
      onStarted: (pid) => ownProcesses.started(pid),
    });
    cleanups.add(() => runner.close?.());
    const gid = await groupId(runner, cfg.admin_group);
    cleanups.add(acquirePidFile(cfg.state_dir));
    const faults = faultsFromEnv();
    const store = SqliteStore.open(cfg.state_dir, { midBatchHook: faults.midBatchHook });
    cleanups.add(() => store.close());
    const stats = new Stats();
    // The inventory reports VM changes to the kernel side, built next (a change reaches it only
    // once the configuration is seeded below).
    const inventory = Inventory.open(
      store,
      { dhcpDomain: cfg.dhcp_domain },
      { onVmsChanged: (networks) => kernel.services.vmsChanged(networks) },
    );
    const guests = buildGuestSide(cfg, inventory, stats, log);
    cleanups.add(() => guests.listeners.closeAll());
    const kernel = buildKernelSide({ config, runner, inventory, listeners: guests.listeners, stats, log, ownProcesses });
    cleanups.add(() => kernel.services.stopAll()); // before the listeners close (cleanups run in reverse)
    seed(inventory, cfg);
    kernel.spoofWatch.start();
    cleanups.add(() => kernel.spoofWatch.stop());

    // Serve first: every network whose namespace survived (a restart) answers guests from here on.
    const opened = await kernel.reconciler.listenExisting(inventory.networkList());
    if (opened > 0) log.info({ networks: opened, ms_since_start: Math.round(performance.now()) }, 'serving existing networks');
    const app = await guests.loadApp();
    cleanups.add(() => app.close());
    const admin = await buildAdminSide({ config, inventory, store, runner, kernel, guests, stats, log, startedAt: Date.now() });
    cleanups.add(() => admin.app.close());

    const summary = await kernel.converge();
    await admin.listen(gid);
    collectGarbage(); // the configuration's seed and the store's load leave their garbage behind
    kernel.drift.start();
    cleanups.add(() => kernel.drift.stop()); // runs first on shutdown: teardown is not drift
    await faults.beforeReady();
    const serving = summary.networks.filter((n) => n.state === 'serving').length;
    log.info(
      { networks: summary.networks.length, serving, vms: inventory.vmCount(), ms: summary.ms, admin_socket: cfg.admin_socket },
      'ready',
    );
    const notifier = createNotifier(runner, log);
    await notifier.ready(`serving ${serving}/${summary.networks.length} networks, ${inventory.vmCount()} VMs`);
    return running({ config, configPath, inventory, kernel, notifier, log, signals, cleanups });
  } catch (err) {
    await cleanups.run();
    throw err;
  }
}

/** The daemon once ready: reload and stop, wired to the signals. */
function running(parts: {
  config: { current: Config };
  configPath: string;
  inventory: Inventory;
  kernel: ReturnType<typeof buildKernelSide>;
  notifier: ReturnType<typeof createNotifier>;
  log: Logger;
  signals: SignalGate;
  cleanups: Cleanups;
}): Daemon {
  const { inventory, kernel, notifier, log } = parts;
  let resolveDone: () => void = () => undefined;
  const done = new Promise<void>((resolve) => (resolveDone = resolve));
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      log.info('stopping; namespaces stay in place');
      await notifier.stopping();
      await parts.cleanups.run();
      resolveDone();
    })());
  const reloadNow = (): Promise<ReconcileSummary | undefined> =>
    reload({
      configPath: parts.configPath,
      config: parts.config,
      inventory,
      log,
      notifier,
      converge: kernel.converge,
      status: () =>
        `serving ${kernel.reconciler.statuses().filter((s) => s.state === 'serving').length}/${inventory.networkList().length} networks, ${inventory.vmCount()} VMs`,
      setLogLevel: (level) => setLogLevel(log, level),
    });
  parts.signals.open(
    {
      reload: () => {
        if (stopping !== undefined) return; // a reload while stopping has nothing left to reload
        log.info('SIGHUP: reloading the configuration');
        reloadNow().catch((err: unknown) => log.error({ err: (err as Error).message }, 'reload failed'));
      },
      stop: () => void stop(),
    },
    log,
  );
  return { done, reload: reloadNow, stop };
}
