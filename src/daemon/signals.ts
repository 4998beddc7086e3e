// Signals of the daemon's life. From the moment the gate exists (early in start), SIGHUP, SIGTERM
// and SIGINT are held: without a handler Node's default action ends the process at once (a reload
// sent right after READY=1, or a stop during start, would kill the service). Once the daemon is
// ready, `open` hands them to reload and stop, and acts on what was held.
import type { Logger } from '../log.ts';

export interface SignalActions {
  reload(): void;
  stop(): void;
}

export class SignalGate {
  private readonly held = new Set<'stop' | 'reload'>();
  private readonly holdStop = (): void => void this.held.add('stop');
  private readonly holdReload = (): void => void this.held.add('reload');
  private actions: { hup: () => void; stop: () => void } | undefined;

  constructor() {
    process.on('SIGTERM', this.holdStop);
    process.on('SIGINT', this.holdStop);
    process.on('SIGHUP', this.holdReload);
  }

  /** From now on signals act; what was held acts now (a stop wins over a reload). */
  open(actions: SignalActions, log: Logger): void {
    this.release();
    const hup = (): void => actions.reload();
    const stop = (): void => actions.stop();
    this.actions = { hup, stop };
    process.on('SIGHUP', hup);
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    if (this.held.has('stop')) {
      log.info('a stop was requested while starting');
      actions.stop();
    } else if (this.held.has('reload')) {
      log.info('a reload was requested while starting');
      actions.reload();
    }
  }

  /** No handler of ours any more (on stop, or when start failed). */
  close(): void {
    this.release();
    if (this.actions === undefined) return;
    process.off('SIGHUP', this.actions.hup);
    process.off('SIGTERM', this.actions.stop);
    process.off('SIGINT', this.actions.stop);
    this.actions = undefined;
  }

  private release(): void {
    process.off('SIGTERM', this.holdStop);
    process.off('SIGINT', this.holdStop);
    process.off('SIGHUP', this.holdReload);
  }
}
