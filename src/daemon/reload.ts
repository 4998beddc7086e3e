// SIGHUP (or systemctl reload): the file is read again, checked whole, and applied only when
// nothing in it is wrong; keys that take effect only at start refuse the reload. The running
// configuration stays in place on any refusal. systemd hears RELOADING=1 first and READY=1 after.
import { isDeepStrictEqual } from 'node:util';
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
  'data_plane',
  'metrics_listen',
  'host_id',
  'registry',
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
  /** The access log follows `cfg` (its file reopened: logrotate); throws CONFIG_INVALID when the file cannot be opened. */
  accessLog?(cfg: Config): void;
}

/** The outcome of a reload: applied (with the converge's summary), or refused and why. */
export type ReloadResult = { applied: true; summary: ReconcileSummary } | { applied: false; reason: string };

/** Reloads the file; refused (nothing changed) when anything in it is wrong. */
export async function reload(deps: ReloadDeps): Promise<ReloadResult> {
  const { log } = deps;
  deps.notifier.reloading();
  const refuse = (reason: string, fields: Record<string, unknown>): ReloadResult => {
    log.error(fields, `reload rejected: ${reason}`);
    reopenAccessLog(deps, deps.config.current);
    return { applied: false, reason };
  };
  try {
    let next: Config;
    try {
      next = loadConfig(deps.configPath);
    } catch (err) {
      return refuse('configuration invalid; keeping the running one', { err: messageOf(err) });
    }
    const changed = RESTART_ONLY.filter((k) => !isDeepStrictEqual(next[k], deps.config.current[k]));
    if (changed.length > 0) {
      return refuse(`these keys take effect only at start; restart the daemon: ${changed.join(', ')}`, { keys: changed });
    }
    try {
      deps.accessLog?.(next);
    } catch (err) {
      return refuse(`configuration invalid; keeping the running one: ${messageOf(err)}`, { err: messageOf(err) });
    }
    try {
      seed(deps.inventory, next);
    } catch (err) {
      return refuse(`configuration invalid; keeping the running one: ${messageOf(err)}`, { err: messageOf(err) });
    }
    if (next.dhcp_domain !== deps.config.current.dhcp_domain) deps.inventory.setDefaults({ dhcpDomain: next.dhcp_domain });
    deps.config.current = next;
    deps.setLogLevel(next.log_level);
    const result = await deps.converge();
    collectGarbage();
    log.info({ networks: result.networks.length, removed: result.removed, vms: deps.inventory.vmCount(), ms: result.ms }, 'reloaded');
    return { applied: true, summary: result };
  } finally {
    deps.notifier.ready(deps.status());
  }
}

/** The running access log, reopened (a refused reload still reopens it: logrotate's postrotate reloads). */
function reopenAccessLog(deps: ReloadDeps, cfg: Config): void {
  try {
    deps.accessLog?.(cfg);
  } catch (err) {
    deps.log.error({ err: messageOf(err) }, 'access log: cannot reopen');
  }
}
