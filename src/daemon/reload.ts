// SIGHUP (or systemctl reload): the file is read again, checked whole, and applied only when
// nothing in it is wrong; keys that take effect only at start refuse the reload. The running
// configuration stays in place on any refusal. systemd hears RELOADING=1 first and READY=1 after.
import { loadConfig, type Config } from '../config.ts';
import type { ReconcileSummary } from '../controller/reconciler.ts';
import { messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Inventory } from '../store/inventory.ts';
import type { Notifier } from '../systemd/notify.ts';
import { collectGarbage } from '../util/gc.ts';
import { seed } from './seed.ts';

/** Keys that only take effect at start; a reload that changes them is refused. */
export const RESTART_ONLY = [
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

export interface ReloadDeps {
  configPath: string;
  config: { current: Config };
  inventory: Inventory;
  log: Logger;
  notifier: Notifier;
  converge(): Promise<ReconcileSummary>;
  /** The status line for systemd (networks serving, VMs). */
  status(): string;
  /** The log level changed: applied to every logger of the daemon. */
  setLogLevel(level: Config['log_level']): void;
}

/** Reloads the file; the summary of the converge, or undefined when the reload was refused. */
export async function reload(deps: ReloadDeps): Promise<ReconcileSummary | undefined> {
  const { log } = deps;
  await deps.notifier.reloading();
  try {
    let next: Config;
    try {
      next = loadConfig(deps.configPath);
    } catch (err) {
      log.error({ err: messageOf(err) }, 'reload rejected: configuration invalid; keeping the running one');
      return undefined;
    }
    const changed = RESTART_ONLY.filter((k) => next[k] !== deps.config.current[k]);
    if (changed.length > 0) {
      log.error({ keys: changed }, 'reload rejected: these keys take effect only at start; restart the daemon');
      return undefined;
    }
    try {
      seed(deps.inventory, next);
    } catch (err) {
      log.error({ err: messageOf(err) }, 'reload rejected: configuration invalid; keeping the running one');
      return undefined;
    }
    if (next.dhcp_domain !== deps.config.current.dhcp_domain) deps.inventory.setDefaults({ dhcpDomain: next.dhcp_domain });
    deps.config.current = next;
    deps.setLogLevel(next.log_level);
    const result = await deps.converge();
    collectGarbage();
    log.info({ networks: result.networks.length, removed: result.removed, vms: deps.inventory.vmCount(), ms: result.ms }, 'reloaded');
    return result;
  } finally {
    await deps.notifier.ready(deps.status());
  }
}
