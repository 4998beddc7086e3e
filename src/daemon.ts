// `imds serve`: the composition root. Loads the configuration (failing before any side effect),
// builds the index and the metadata app, converges the kernel, serves, and reloads on SIGHUP.
import { loadConfig, type Config } from './config.ts';
import { Reconciler, type ReconcileSummary } from './controller/reconciler.ts';
import { messageOf } from './errors.ts';
import { createLogger, type Logger } from './log.ts';
import { createRunner } from './netns/run.ts';
import { acquirePidFile } from './pidfile.ts';
import { NetnsListeners } from './server/listeners.ts';
import { buildMetadataApp } from './server/metadata-app.ts';
import { MetadataIndex } from './store/metadata-index.ts';

/** Keys that only take effect at start; a reload that changes them is refused. */
const RESTART_ONLY = ['state_dir', 'admin_socket', 'listen_port', 'namespace_prefix', 'request_timeout_ms', 'headers_timeout_ms', 'keep_alive_timeout_ms'] as const;

function indexOf(cfg: Config): MetadataIndex {
  return MetadataIndex.build(cfg.networks, cfg.vms, { dhcpDomain: cfg.dhcp_domain });
}

export interface Daemon {
  /** Resolves when the daemon has stopped. */
  done: Promise<void>;
  reload(): Promise<ReconcileSummary | undefined>;
  stop(): Promise<void>;
}

export async function serve(configPath: string, logger?: Logger): Promise<Daemon> {
  let cfg = loadConfig(configPath);
  const log = logger ?? createLogger({ level: cfg.log_level });
  const releasePid = acquirePidFile(cfg.state_dir);
  let index = indexOf(cfg);
  const { app, handler } = await buildMetadataApp({ index: () => index, log });
  const listeners = new NetnsListeners(
    handler,
    cfg.listen_port,
    { requestTimeoutMs: cfg.request_timeout_ms, headersTimeoutMs: cfg.headers_timeout_ms, keepAliveTimeoutMs: cfg.keep_alive_timeout_ms },
    log,
  );
  const runner = createRunner({ log: log.child({ component: 'runner' }) });
  const reconciler = new Reconciler({ runner, listeners, log: log.child({ component: 'controller' }), namespacePrefix: cfg.namespace_prefix, listenPort: cfg.listen_port });

  let summary: ReconcileSummary;
  try {
    summary = await reconciler.reconcile(cfg.networks);
  } catch (err) {
    await listeners.closeAll();
    releasePid();
    throw err;
  }
  log.info(
    { networks: summary.networks.length, serving: summary.networks.filter((n) => n.state === 'serving').length, vms: index.vmCount, ms: summary.ms },
    'ready',
  );

  let stopping: Promise<void> | undefined;
  let resolveDone: () => void = () => undefined;
  const done = new Promise<void>((resolve) => (resolveDone = resolve));

  const reload = async (): Promise<ReconcileSummary | undefined> => {
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
    cfg = next;
    log.level = cfg.log_level;
    index = indexOf(cfg);
    const result = await reconciler.reconcile(cfg.networks);
    log.info({ networks: result.networks.length, removed: result.removed, vms: index.vmCount, ms: result.ms }, 'reloaded');
    return result;
  };

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      log.info('stopping; namespaces stay in place');
      await listeners.closeAll();
      await app.close();
      releasePid();
      process.off('SIGHUP', onHup);
      process.off('SIGTERM', onStop);
      process.off('SIGINT', onStop);
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

  return { done, reload, stop };
}
