// The native addon (native/, npm package `imds-netns`), the only way TypeScript touches a namespace
// from inside the daemon's own thread. Required: `requireAddon()` runs once at start (the daemon,
// and the CLI commands that touch the kernel) and fails with ADDON_UNAVAILABLE; there is no
// fallback. A namespace is entered only through `withNetns`, which always restores the thread's
// own namespace (containernetworking/plugins' `ns.Do` is the model): what `fn` creates — a socket, a
// child process — keeps the namespace it was made in.
import { createRequire } from 'node:module';
import type * as NativeAddon from 'imds-netns';
import { ImdsError } from '../errors.ts';
import { netnsPath } from './paths.ts';

type Addon = typeof NativeAddon;

let addon: Addon | undefined;

/** The addon, loaded once; throws ADDON_UNAVAILABLE (with npm's hint) when it is not built. */
export function requireAddon(): Addon {
  if (addon !== undefined) return addon;
  try {
    addon = createRequire(import.meta.url)('imds-netns') as Addon;
    return addon;
  } catch (err) {
    throw new ImdsError(
      'ADDON_UNAVAILABLE',
      `the native addon imds-netns cannot be loaded (reinstall imds; from source: \`npm ci\` with make, g++ and python3): ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/**
 * Runs `fn` with the calling thread inside the named network namespace, and puts the thread back
 * in its own namespace before returning or throwing (the addon aborts the process if it cannot:
 * a thread left in the wrong namespace would serve the wrong network). `fn` must be synchronous:
 * the namespace belongs to the thread, and an `await` would let other code run inside it.
 *
 * A child spawned inside `fn` starts in the namespace (it inherits the thread's at fork): the CLI's
 * commands and dnsmasq start so. The daemon's commands do not: they start in the spawner's helper
 * process (no fork stall of the daemon's loop), another process without this addon, which no
 * `withNetns` here can move; they enter with `nsenter --net=` instead (`inNetns` in run.ts).
 */
export function withNetns<T>(netns: string, fn: () => T): T {
  const native = requireAddon();
  const saved = native.enterNetns(netnsPath(netns));
  let result: T;
  try {
    result = fn();
  } finally {
    native.restoreNetns(saved);
  }
  if (result !== null && typeof result === 'object' && typeof (result as { then?: unknown }).then === 'function') {
    throw new ImdsError('INTERNAL', 'withNetns: the function returned a promise; it must be synchronous');
  }
  return result;
}

export interface ListenOptions {
  port: number;
  host?: string;
  backlog?: number;
  reusePort?: boolean;
}

/** The fd of a TCP socket listening inside the namespace `netns`. */
export function listenInNetns(netns: string, options: ListenOptions): number {
  const native = requireAddon();
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

/** The fd of an unconnected TCP socket created inside the namespace `netns`. */
export function socketInNetns(netns: string): number {
  const native = requireAddon();
  try {
    return native.socketInNetns(netnsPath(netns));
  } catch (err) {
    throw new ImdsError('NETNS_LISTEN_FAILED', `cannot open a socket in namespace ${netns}: ${(err as Error).message}`, {
      details: { netns },
      cause: err,
    });
  }
}

/** Creates a network namespace pinned at /run/netns/<name>, as `ip netns add` does. */
export function createNetns(dir: string, name: string): void {
  requireAddon().createNetns(dir, name);
}

/** Sets the IP TTL of a connected socket's outgoing packets (the IMDSv2 hop limit); false without an fd. */
export function setSocketTtl(socket: { _handle?: { fd?: number } }, ttl: number): boolean {
  const fd = socket._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return false;
  requireAddon().setIpTtl(fd, ttl);
  return true;
}

/**
 * Makes a netlink socket of this process safe against overruns: NETLINK_NO_ENOBUFS and, when
 * rcvbuf > 0, a receive buffer of that many bytes (src/netns/netlink.ts says why). False when no
 * socket of ours has that port id.
 */
export function tuneNetlink(port: number, rcvbuf = 0): boolean {
  return requireAddon().tuneNetlink(port, rcvbuf);
}
