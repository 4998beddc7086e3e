// A running daemon's life once its parts are built: stop (cleanups in reverse), the watchdog and
// STATUS= while it runs, its signals once it is ready, and what reload and `imds restart` do with
// the parts. The composition root (serve.ts) builds the parts and hands them over here.
import type { Config } from '../config.ts';
import { setLogLevel, type Logger } from '../log.ts';
import type { Inventory } from '../store/inventory.ts';
import type { Notifier } from '../systemd/notify.ts';
import type { AdminControl } from './admin-side.ts';
import type { Cleanups } from './cleanups.ts';
import type { GuestSide } from './guest-side.ts';
import { handOver } from './handover.ts';
import type { Health } from './health.ts';
import type { KernelSide } from './kernel-side.ts';
import { reload } from './reload.ts';
import type { SignalGate } from './signals.ts';

export interface Daemon {
  /** Resolves when the daemon has stopped. */
  done: Promise<void>;
  /** Reloads the configuration file: the reason when refused (nothing changed), else undefined. */
  reload(): Promise<string | undefined>;
  stop(): Promise<void>;
}

/** What a running daemon is made of (built by `serve`, used by its lifecycle). */
export interface DaemonParts {
  config: { current: Config };
  configPath: string;
  log: Logger;
  notifier: Notifier;
  inventory: Inventory;
  kernel: KernelSide;
  guests: GuestSide;
  health: Health;
  signals: SignalGate;
  cleanups: Cleanups;
}

/**
 * `imds restart` without systemd: a successor takes over the sockets, then this daemon stops. The
 * admin side calls it with its own pause and resume (its socket closes before the successor binds it).
 */
export function restartOf(parts: DaemonParts, stop: () => Promise<void>): (admin: AdminControl) => Promise<number> {
  return (admin) =>
    handOver({
      log: parts.log,
      fds: () => parts.guests.listeners.fds(),
      quiesce: async () => {
        await admin.pause();
        await parts.kernel.drift.pause();
      },
      resume: async () => {
        await admin.resume();
        parts.kernel.drift.resume();
      },
      stop,
    });
}

/** A reload with what it needs; the reason when refused. */
export function reloadOf(parts: DaemonParts): () => Promise<string | undefined> {
  return async () => {
    const result = await reload({
      configPath: parts.configPath,
      config: parts.config,
      inventory: parts.inventory,
      log: parts.log,
      notifier: parts.notifier,
      converge: parts.kernel.converge,
      status: () => parts.health.line(),
      setLogLevel: (level) => setLogLevel(parts.log, level),
      accessLog: (c) => parts.guests.accessLog.configure(c.access_log, c.access_log_lines_per_second),
    });
    return result.applied ? undefined : result.reason;
  };
}

/** Stop, the watchdog and STATUS= of a daemon, and its signals once it is ready. */
export class Lifecycle {
  readonly done: Promise<void>;
  private resolveDone: () => void = () => undefined;
  private stopping: Promise<void> | undefined;
  private stopWatchdog: () => void = () => undefined;
  private statusTimer: NodeJS.Timeout | undefined;
  private readonly parts: DaemonParts;

  constructor(parts: DaemonParts) {
    this.parts = parts;
    this.done = new Promise<void>((resolve) => (this.resolveDone = resolve));
  }

  stop(): Promise<void> {
    const { log, notifier } = this.parts;
    return (this.stopping ??= (async () => {
      log.info('stopping; namespaces stay in place');
      clearInterval(this.statusTimer);
      notifier.stopping();
      this.stopWatchdog();
      await this.parts.cleanups.run();
      this.resolveDone();
    })());
  }

  /** Ready: the watchdog, STATUS= current within a second of any change, and the signals. */
  begin(): Daemon {
    const { log, notifier } = this.parts;
    this.stopWatchdog = notifier.startWatchdog();
    this.statusTimer = setInterval(() => notifier.status(this.parts.health.line()), 1000);
    this.statusTimer.unref();
    this.parts.signals.open(
      {
        reload: () => {
          if (this.stopping !== undefined) return; // a reload while stopping has nothing left to reload
          log.info('SIGHUP: reloading the configuration');
          reloadOf(this.parts)().catch((err: unknown) => log.error({ err: (err as Error).message }, 'reload failed'));
        },
        stop: () => void this.stop(),
      },
      log,
    );
    return { done: this.done, reload: reloadOf(this.parts), stop: () => this.stop() };
  }
}
