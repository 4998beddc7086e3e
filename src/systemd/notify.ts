// sd_notify for Type=notify, sent by the daemon process itself through the addon (NotifyAccess=main
// suffices): READY=1 once every network serves, RELOADING=1 around a reload, STOPPING=1 on
// shutdown, STATUS= kept current, WATCHDOG=1 keep-alives from the event loop, and the
// file-descriptor store (FDSTORE=1 with one FDNAME= per network's listening socket) that lets the
// sockets outlive the process across a restart. Without $NOTIFY_SOCKET (not run by systemd) every
// call is a no-op.
import type { Logger } from '../log.ts';
import { requireAddon } from '../netns/addon.ts';

export interface Notifier {
  /** Whether systemd listens (NOTIFY_SOCKET is set). */
  readonly active: boolean;
  ready(status: string): void;
  reloading(): void;
  stopping(): void;
  status(text: string): void;
  /** Keeps `fd` in systemd's store under `name` (replacing what was there under that name). */
  storeFd(name: string, fd: number): void;
  /** Drops what systemd keeps under `name`. */
  removeFd(name: string): void;
  /** Starts WATCHDOG=1 keep-alives at half the interval systemd asks for; a stop function. */
  startWatchdog(): () => void;
}

/** CLOCK_MONOTONIC in µs, as RELOADING=1 wants it. */
function monotonicUsec(): string {
  return String(process.hrtime.bigint() / 1000n);
}

export function createNotifier(log: Logger, env: NodeJS.ProcessEnv = process.env): Notifier {
  const active = (env['NOTIFY_SOCKET'] ?? '') !== '';
  const send = (state: string, fds?: number[]): void => {
    if (!active) return;
    try {
      requireAddon().sdNotify(state, fds);
    } catch (err) {
      log.warn({ err: (err as Error).message, state: state.split('\n')[0] }, 'sd_notify failed');
    }
  };
  let lastStatus: string | undefined;
  return {
    active,
    ready: (status) => {
      lastStatus = status;
      send(`READY=1\nSTATUS=${status}`);
    },
    reloading: () => send(`RELOADING=1\nMONOTONIC_USEC=${monotonicUsec()}`),
    stopping: () => send('STOPPING=1'),
    status: (text) => {
      if (text === lastStatus) return;
      lastStatus = text;
      send(`STATUS=${text}`);
    },
    storeFd: (name, fd) => send(`FDSTORE=1\nFDNAME=${name}`, [fd]),
    removeFd: (name) => send(`FDSTOREREMOVE=1\nFDNAME=${name}`),
    startWatchdog: () => {
      const usec = Number(env['WATCHDOG_USEC'] ?? 0);
      const pid = env['WATCHDOG_PID'];
      if (!active || !(usec > 0) || (pid !== undefined && Number(pid) !== process.pid)) return () => undefined;
      // From the event loop: a loop that stalls stops the keep-alives, and systemd restarts us.
      const timer = setInterval(() => send('WATCHDOG=1'), Math.max(100, usec / 2000));
      timer.unref();
      send('WATCHDOG=1');
      return () => clearInterval(timer);
    },
  };
}
