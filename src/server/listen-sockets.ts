// Where each network's listening socket comes from, and where it is kept so that it outlives the
// process. A socket the daemon opens is handed to systemd's file-descriptor store (FDSTORE=1,
// FDNAME=net-<id>); on the next start (a restart, an upgrade) systemd passes the stored sockets
// back (LISTEN_FDS), and a socket is adopted when it is still a listening TCP socket on the right
// port inside the network's current namespace (same inode). Without systemd, the previous daemon
// passes its sockets the same way when it hands over (src/daemon/handover.ts). In between, the
// socket never closes: a guest that connects while the daemon restarts waits in the kernel's
// backlog and is answered by the new process.
import { closeSync, statSync } from 'node:fs';
import type { Logger } from '../log.ts';
import { listenInNetns, requireAddon } from '../netns/addon.ts';
import { netnsPath } from '../netns/paths.ts';
import type { Notifier } from '../systemd/notify.ts';

/** The name a network's socket has in the store (FDNAME: no ':' allowed; network ids are slugs). */
export function fdName(network: string): string {
  return `net-${network}`;
}

/**
 * The sockets passed to this process (sd_listen_fds(3): fds 3.. with LISTEN_FDS, their names in
 * LISTEN_FDNAMES, for LISTEN_PID), by name. They are made close-on-exec (children must not hold
 * them) and the variables removed from the environment (children must not take them for theirs).
 */
export function inheritedSockets(env: NodeJS.ProcessEnv = process.env): Map<string, number> {
  const out = new Map<string, number>();
  const count = Number(env['LISTEN_FDS'] ?? 0);
  const pid = env['LISTEN_PID'];
  const names = (env['LISTEN_FDNAMES'] ?? '').split(':');
  delete env['LISTEN_FDS'];
  delete env['LISTEN_PID'];
  delete env['LISTEN_FDNAMES'];
  if (!Number.isInteger(count) || count <= 0 || (pid !== undefined && Number(pid) !== process.pid)) return out;
  const addon = requireAddon();
  for (let i = 0; i < count; i++) {
    const fd = 3 + i;
    addon.setCloexec(fd);
    out.set(names[i] ?? `unknown-${i}`, fd);
  }
  return out;
}

export interface ListenSocketsDeps {
  port: number;
  notifier: Notifier;
  log: Logger;
  /** Sockets passed to this process, by name (inheritedSockets()). */
  inherited: Map<string, number>;
}

export class ListenSockets {
  private readonly deps: ListenSocketsDeps;
  private readonly inherited: Map<string, number>;
  /** How many were adopted, opened (since start), for the start log. */
  readonly counts = { adopted: 0, opened: 0 };

  constructor(deps: ListenSocketsDeps) {
    this.deps = deps;
    this.inherited = new Map(deps.inherited);
  }

  /** The network's listening socket: the one passed to us when it still fits, else a new one (stored). */
  acquire(network: string, netns: string): number {
    const name = fdName(network);
    const passed = this.inherited.get(name);
    if (passed !== undefined) {
      this.inherited.delete(name);
      if (this.fits(passed, netns)) {
        this.counts.adopted++;
        return passed;
      }
      this.deps.log.info({ network }, 'a stored socket belongs to an older namespace of the network; opening a new one');
      this.discard(name, passed);
    }
    const fd = listenInNetns(netns, { port: this.deps.port });
    this.counts.opened++;
    this.deps.notifier.removeFd(name); // what was stored under the name (an older namespace's socket)
    this.deps.notifier.storeFd(name, fd);
    return fd;
  }

  /**
   * The network's socket is closed for good (the network is removed, or its namespace rebuilt):
   * systemd drops its copy too. A daemon that stops keeps them stored (nothing to do here).
   */
  released(network: string): void {
    this.deps.notifier.removeFd(fdName(network));
  }

  /** Closes and unstores what was passed to us and not adopted (networks no longer declared). */
  dropUnadopted(): string[] {
    const names = [...this.inherited.keys()];
    for (const [name, fd] of this.inherited) this.discard(name, fd);
    this.inherited.clear();
    return names;
  }

  private fits(fd: number, netns: string): boolean {
    try {
      const info = requireAddon().socketInfo(fd);
      const ino = statSync(netnsPath(netns)).ino;
      return info.listening && info.tcp && info.port === this.deps.port && info.netnsInode === ino;
    } catch {
      return false;
    }
  }

  private discard(name: string, fd: number): void {
    try {
      closeSync(fd);
    } catch {
      /* closed already */
    }
    this.deps.notifier.removeFd(name);
  }
}
