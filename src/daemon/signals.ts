// Signals of the daemon's life. From the moment the gate exists (early in start), SIGHUP, SIGTERM
// and SIGINT have a handler: without one Node's default action ends the process at once (a reload
// sent right after READY=1, or a stop during start, would kill the service). Until the daemon is
// ready they are held; `open` hands them to reload and stop, and acts on what was held. The
// handlers stay the same from start to end: removing a signal's last listener drops a signal
// that arrived and is not yet dispatched (seen: a SIGTERM sent right after `ready` was lost).
import type { Logger } from '../log.ts';

export interface SignalActions {
  reload(): void;
  stop(): void;
}

export class SignalGate {
  private readonly held = new Set<'stop' | 'reload'>();
  private actions: SignalActions | undefined;
  private readonly onStop = (): void => {
    if (this.actions === undefined) this.held.add('stop');
    else this.actions.stop();
  };
  private readonly onHup = (): void => {
    if (this.actions === undefined) this.held.add('reload');
    else this.actions.reload();
  };

  constructor() {
    process.on('SIGTERM', this.onStop);
    process.on('SIGINT', this.onStop);
    process.on('SIGHUP', this.onHup);
  }

  /** From now on signals act; what was held acts now (a stop wins over a reload). */
  open(actions: SignalActions, log: Logger): void {
    this.actions = actions;
    if (this.held.has('stop')) {
      log.info('a stop was requested while starting');
      actions.stop();
    } else if (this.held.has('reload')) {
      log.info('a reload was requested while starting');
      actions.reload();
    }
    this.held.clear();
  }

  /** No handler of ours any more (the daemon has stopped, or its start failed). */
  close(): void {
    this.actions = undefined;
    process.off('SIGTERM', this.onStop);
    process.off('SIGINT', this.onStop);
    process.off('SIGHUP', this.onHup);
  }
}
