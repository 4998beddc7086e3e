// sd_notify for Type=notify: READY=1 once every network serves, RELOADING=1 around SIGHUP,
// STOPPING=1 on shutdown. Node has no Unix datagram sockets, so the message goes through
// `systemd-notify` (the unit sets NotifyAccess=all, since the sender is a child process).
import type { Logger } from '../log.ts';
import type { Runner } from '../netns/run.ts';

export interface Notifier {
  ready(status: string): Promise<void>;
  reloading(): Promise<void>;
  stopping(): Promise<void>;
  status(text: string): Promise<void>;
}

export function createNotifier(runner: Runner, log: Logger, env: NodeJS.ProcessEnv = process.env): Notifier {
  const socket = env['NOTIFY_SOCKET'];
  const send = async (args: string[]): Promise<void> => {
    if (socket === undefined || socket === '') return;
    try {
      await runner.run(['systemd-notify', `--pid=${process.pid}`, ...args], { timeoutMs: 5000 });
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'sd_notify failed');
    }
  };
  const monotonicUsec = (): string =>
    String(BigInt(Math.round(performance.timeOrigin * 1000)) + BigInt(Math.round(performance.now() * 1000)));
  return {
    ready: (status) => send(['--ready', `--status=${status}`]),
    reloading: () => send(['RELOADING=1', `MONOTONIC_USEC=${monotonicUsec()}`]),
    stopping: () => send(['STOPPING=1']),
    status: (text) => send([`--status=${text}`]),
  };
}
