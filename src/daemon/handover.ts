// A restart or upgrade without systemd, with no gap for guests (`imds restart`): the running daemon
// starts its successor (the same command line: after a package upgrade, the new code) and passes
// it every network's listening socket (fds 3.., named in LISTEN_FDNAMES, as systemd does) and a
// pipe. Meanwhile the old daemon keeps answering guests, but takes no admin change (its admin
// socket is closed first, so nothing written to the store is missed by the successor) and repairs
// no drift (the successor's converge is not damage). The successor starts as usual — adopting the
// sockets, so connections queue for it in the kernel's backlog — binds the admin socket, says
// `ready` on the pipe, and waits for the old daemon to exit before it takes the pid file. The old
// daemon then stops (requests in flight are answered) and exits. If the successor does not get
// ready, it is killed and the old daemon takes its admin socket back and repairs drift again.
import { Socket } from 'node:net';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { ImdsError, messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { startDetached } from '../netns/service.ts';
import { fdName } from '../server/listen-sockets.ts';

/** Set in the successor's environment: the pid of the daemon it replaces. */
export const HANDOVER_FROM = 'IMDS_HANDOVER_FROM';
/** Set in the successor's environment: the fd of the pipe to say `ready` on. */
export const HANDOVER_PIPE = 'IMDS_HANDOVER_PIPE';

export interface HandoverDeps {
  log: Logger;
  /** Each serving network's listening fd. */
  fds(): Map<string, number>;
  /** Stop taking admin changes (close the admin socket) and pause drift repair. */
  quiesce(): Promise<void>;
  /** The hand-over failed: take the admin socket back and repair drift again. */
  resume(): Promise<void>;
  /** Stop this daemon (the successor serves). */
  stop(): Promise<void>;
  /** How long the successor may take to get ready. */
  timeoutMs?: number;
}

/** Starts the successor and hands over; resolves once the successor is ready (this daemon then stops). */
export async function handOver(deps: HandoverDeps): Promise<number> {
  const { log } = deps;
  if ((process.env['NOTIFY_SOCKET'] ?? '') !== '') {
    throw new ImdsError(
      'DAEMON_RUNNING',
      'run by systemd: use `systemctl restart imds` (its file-descriptor store keeps the sockets open)',
    );
  }
  const fds = deps.fds();
  const names = [...fds.keys()].map(fdName);
  await deps.quiesce();
  const child = startDetached([process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    fds: [...fds.values()],
    env: {
      ...process.env,
      LISTEN_FDS: String(fds.size),
      LISTEN_FDNAMES: names.join(':'),
      [HANDOVER_FROM]: String(process.pid),
      [HANDOVER_PIPE]: String(3 + fds.size),
    },
  });
  log.info({ successor: child.pid, sockets: fds.size }, 'handing over to a new daemon');
  try {
    await waitForReady(child.pipe, deps.timeoutMs ?? 120_000);
  } catch (err) {
    child.kill();
    log.error({ successor: child.pid, err: messageOf(err) }, 'hand-over failed: the new daemon did not get ready; serving on');
    await deps.resume();
    throw new ImdsError('COMMAND_FAILED', `hand-over failed: ${messageOf(err)}`);
  }
  child.pipe.destroy(); // nothing more comes through it, and an open pipe would keep this process alive
  log.info({ successor: child.pid }, 'the new daemon is ready; stopping');
  void deps.stop();
  return child.pid;
}

function waitForReady(pipe: Readable, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no word from it within ${timeoutMs} ms`)), timeoutMs);
    const lines = createInterface({ input: pipe });
    lines.on('line', (line) => {
      if (line.trim() !== 'ready') return;
      clearTimeout(timer);
      lines.close();
      resolve();
    });
    pipe.once('close', () => {
      clearTimeout(timer);
      reject(new Error('it exited before it was ready'));
    });
  });
}

/** The successor's side: the daemon it replaces (and the pipe to tell it), when it is one. */
export function predecessor(env: NodeJS.ProcessEnv = process.env): { pid: number; tell(line: 'ready'): void } | undefined {
  const pid = Number(env[HANDOVER_FROM] ?? 0);
  const pipeFd = Number(env[HANDOVER_PIPE] ?? -1);
  delete env[HANDOVER_FROM];
  delete env[HANDOVER_PIPE];
  if (!(pid > 0) || !(pipeFd > 2)) return undefined;
  return {
    pid,
    // The only word said: the pipe is closed after it (an open one would keep this process alive).
    tell: (line) => {
      const out: Writable = new Socket({ fd: pipeFd, readable: false, writable: true });
      out.end(`${line}\n`);
    },
  };
}

/** Waits until `pid` has exited (the predecessor, before the pid file can be taken). */
export async function exitOf(pid: number, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    if (Date.now() > deadline)
      throw new ImdsError('DAEMON_RUNNING', `the daemon being replaced (pid ${pid}) did not exit within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
