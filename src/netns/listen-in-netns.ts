// Opens the per-network listening socket inside its namespace through the setns addon.
import { createRequire } from 'node:module';
import { ImdsError } from '../errors.ts';
import { netnsPath } from './paths.ts';

interface Addon {
  listenInNetns(nsPath: string, ip: string, port: number, backlog: number, reusePort: boolean): number;
  socketInNetns(nsPath: string): number;
  enterNetns(nsPath: string): number;
  restoreNetns(savedFd: number): void;
  createNetns(dir: string, name: string): void;
  setIpTtl(fd: number, ttl: number): void;
  tuneNetlink(port: number, rcvbuf: number): boolean;
}

let addon: Addon | undefined;
let loadError: unknown;

export function loadAddon(): Addon {
  if (addon !== undefined) return addon;
  if (loadError === undefined) {
    try {
      addon = createRequire(import.meta.url)('imds-netns') as Addon;
      return addon;
    } catch (err) {
      loadError = err;
    }
  }
  throw new ImdsError(
    'ADDON_UNAVAILABLE',
    `the native addon imds-netns cannot be loaded (run \`npm ci\` with a C toolchain): ${(loadError as Error).message}`,
    {
      cause: loadError,
    },
  );
}

export interface ListenOptions {
  port: number;
  host?: string;
  backlog?: number;
  reusePort?: boolean;
}

/** Returns the fd of a TCP socket listening inside the namespace `netns`. */
export function listenInNetns(netns: string, options: ListenOptions): number {
  const native = loadAddon();
  try {
    return native.listenInNetns(
      netnsPath(netns),
      options.host ?? '0.0.0.0',
      options.port,
      options.backlog ?? 4096,
      options.reusePort ?? false,
    );
  } catch (err) {
    throw new ImdsError('NETNS_LISTEN_FAILED', `cannot listen on port ${options.port} in namespace ${netns}: ${(err as Error).message}`, {
      details: { netns, port: options.port },
      cause: err,
    });
  }
}

/** Returns the fd of an unconnected TCP socket created inside the namespace `netns`. */
export function socketInNetns(netns: string): number {
  const native = loadAddon();
  try {
    return native.socketInNetns(netnsPath(netns));
  } catch (err) {
    throw new ImdsError('NETNS_LISTEN_FAILED', `cannot open a socket in namespace ${netns}: ${(err as Error).message}`, {
      details: { netns },
      cause: err,
    });
  }
}

/** The addon, or undefined when it cannot be loaded (callers fall back to nsenter). */
export function addonIfAvailable(): Addon | undefined {
  try {
    return loadAddon();
  } catch {
    return undefined;
  }
}

/** Sets the IP TTL of a connected socket's outgoing packets (the IMDSv2 hop limit). */
export function setSocketTtl(socket: { _handle?: { fd?: number } }, ttl: number): boolean {
  const fd = socket._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return false;
  loadAddon().setIpTtl(fd, ttl);
  return true;
}

/**
 * Makes a `netlink` package socket safe against overruns: NETLINK_NO_ENOBUFS (the package aborts
 * the process when the kernel flags a socket with an error, which an overrun does) and, when
 * rcvbuf > 0, a receive buffer of that many bytes so a burst of events fits. False when the
 * addon or the socket cannot be found.
 */
export function tuneNetlinkSocket(socket: { address(): { port: number } }, rcvbuf = 0): boolean {
  const addon = addonIfAvailable();
  if (addon === undefined) return false;
  try {
    return addon.tuneNetlink(socket.address().port, rcvbuf);
  } catch {
    return false;
  }
}
