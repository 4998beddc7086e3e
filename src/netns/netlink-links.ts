// Reads host links by name over rtnetlink, in-process (the `netlink` package): a targeted reconcile
// learns about its bridge, veth and uplink in about a millisecond instead of spawning `ip`.
import { createRequire } from 'node:module';
import type { LinkState } from './iproute.ts';
import { tuneNetlinkSocket } from './listen-in-netns.ts';

interface LinkMessage {
  data: { index?: number; flags?: { up?: boolean } };
  attrs: { ifname?: string; mtu?: number; master?: number; ifalias?: string; linkinfo?: Buffer; address?: Buffer };
}
interface AddressMessage {
  data: { family?: number; prefixlen?: number; index?: number };
  attrs: { local?: Buffer; address?: Buffer };
}
interface RequestOptions {
  timeout?: number;
}
interface RtSocket {
  getLink(data: Record<string, unknown>, attrs: { ifname: string }, options?: RequestOptions): Promise<LinkMessage[]>;
  getLinks(data?: Record<string, unknown>, attrs?: Record<string, unknown>, options?: RequestOptions): Promise<LinkMessage[]>;
  getAddresses(data?: Record<string, unknown>, attrs?: Record<string, unknown>, options?: RequestOptions): Promise<AddressMessage[]>;
  socket: { close(): void; on(event: 'error', listener: (err: Error) => void): void; address(): { port: number } };
}
interface NetlinkModule {
  createRtNetlink(): RtSocket;
}
interface IflaModule {
  parseInfo(b: Buffer): { kind?: string };
}

let netlink: NetlinkModule | undefined;
let socket: RtSocket | undefined;
let ifla: IflaModule | undefined;
let unavailable = false;

function load(): NetlinkModule | undefined {
  if (netlink !== undefined || unavailable) return netlink;
  try {
    const require = createRequire(import.meta.url);
    netlink = require('netlink') as NetlinkModule;
    ifla = require('netlink/dist/rt/ifla') as IflaModule;
  } catch {
    unavailable = true;
  }
  return netlink;
}

/**
 * Every request has a deadline: a socket that failed (the library closes it on a poll error) would
 * otherwise leave its requests, and the reconcile waiting on them, pending for ever.
 */
const REQUEST = { timeout: 5000 };

/**
 * A request socket with an `error` listener: the library emits receive errors (ENOBUFS, a poll
 * error) as `error` events, and an EventEmitter with no listener for them throws, which would end
 * the daemon. `onError` runs after the socket is closed.
 */
function openSocket(mod: NetlinkModule, onError?: () => void): RtSocket {
  const sock = mod.createRtNetlink();
  tuneNetlinkSocket(sock.socket); // an overrun drops replies (the request times out) instead of aborting
  sock.socket.on('error', () => {
    try {
      sock.socket.close();
    } catch {
      /* closed already */
    }
    onError?.();
  });
  return sock;
}

/** The shared socket for single-link requests; replaced after an error or a timed-out request. */
function rtnetlink(): RtSocket | undefined {
  if (socket === undefined) {
    const mod = load();
    if (mod === undefined) return undefined;
    const opened = openSocket(mod, () => dropShared(opened));
    socket = opened;
  }
  return socket;
}

function dropShared(sock: RtSocket): void {
  if (socket !== sock) return;
  socket = undefined;
  try {
    sock.socket.close();
  } catch {
    /* closed already */
  }
}

function linkState(m: LinkMessage, byIndex: ReadonlyMap<number, string>): LinkState | undefined {
  if (m.attrs.ifname === undefined || m.data.index === undefined) return undefined;
  const master = m.attrs.master;
  return {
    name: m.attrs.ifname,
    index: m.data.index,
    kind: m.attrs.linkinfo === undefined || ifla === undefined ? undefined : ifla.parseInfo(m.attrs.linkinfo).kind,
    master: master === undefined ? undefined : (byIndex.get(master) ?? `#${master}`),
    up: m.data.flags?.up === true,
    mtu: m.attrs.mtu ?? 0,
    alias: m.attrs.ifalias === '' ? undefined : m.attrs.ifalias,
    mac: m.attrs.address === undefined ? undefined : [...m.attrs.address].map((b) => b.toString(16).padStart(2, '0')).join(':'),
    addresses: [],
  };
}

/**
 * Links and IPv4 addresses inside a namespace, over an rtnetlink socket opened in it (through the
 * addon); undefined when that is not possible (the caller runs `ip` instead).
 */
export async function namespaceLinks(
  enter: ((path: string) => number) | undefined,
  restore: ((fd: number) => void) | undefined,
  nsPath: string,
): Promise<Map<string, LinkState> | undefined> {
  const mod = load();
  if (mod === undefined || enter === undefined || restore === undefined) return undefined;
  const saved = enter(nsPath);
  let sock: RtSocket;
  try {
    sock = openSocket(mod);
  } finally {
    restore(saved);
  }
  try {
    // One dump at a time: the library cannot tell two multipart answers on one socket apart.
    const links = await sock.getLinks({}, {}, REQUEST);
    const addresses = await sock.getAddresses({}, {}, REQUEST);
    const byIndex = new Map<number, string>();
    for (const m of links) if (m.data.index !== undefined && m.attrs.ifname !== undefined) byIndex.set(m.data.index, m.attrs.ifname);
    const out = new Map<string, LinkState>();
    for (const m of links) {
      const state = linkState(m, byIndex);
      if (state !== undefined) out.set(state.name, state);
    }
    for (const a of addresses) {
      const local = a.attrs.local ?? a.attrs.address;
      if (a.data.family !== 2 || local === undefined || a.data.index === undefined) continue;
      const name = byIndex.get(a.data.index);
      if (name !== undefined) out.get(name)?.addresses.push(`${[...local].join('.')}/${a.data.prefixlen ?? 32}`);
    }
    return out;
  } finally {
    sock.socket.close();
  }
}

/** The named links that exist (absent names are left out); undefined when rtnetlink is not usable. */
export async function linksNamed(names: readonly string[]): Promise<Map<string, LinkState> | undefined> {
  const sock = rtnetlink();
  if (sock === undefined) return undefined;
  const messages = await Promise.all(
    names.map((ifname) =>
      sock.getLink({}, { ifname }, REQUEST).then(
        (m) => m[0],
        (err: NodeJS.ErrnoException) => {
          if (String(err.message).includes('ENODEV')) return undefined;
          dropShared(sock); // a timeout or a broken socket: the next call opens a new one
          throw err;
        },
      ),
    ),
  );
  const byIndex = new Map<number, string>();
  for (const m of messages) if (m?.data.index !== undefined && m.attrs.ifname !== undefined) byIndex.set(m.data.index, m.attrs.ifname);
  const out = new Map<string, LinkState>();
  for (const m of messages) {
    const state = m === undefined ? undefined : linkState(m, byIndex);
    if (state !== undefined) out.set(state.name, state);
  }
  return out;
}

/** Each named bridge that exists: its ifindex and ports, from one link dump; undefined when rtnetlink is not usable. */
export async function bridgePorts(bridges: readonly string[]): Promise<Map<string, { index: number; ports: string[] }> | undefined> {
  // A socket of its own: a dump's multipart answer must not meet the shared socket's other replies
  // (the library reports "Multipart message not terminated properly").
  const mod = load();
  if (mod === undefined) return undefined;
  const sock = openSocket(mod);
  let all: LinkMessage[];
  try {
    all = await sock.getLinks({}, {}, REQUEST);
  } finally {
    sock.socket.close();
  }
  const byIndex = new Map<number, string>();
  for (const m of all) if (m.data.index !== undefined && m.attrs.ifname !== undefined) byIndex.set(m.data.index, m.attrs.ifname);
  const out = new Map<string, { index: number; ports: string[] }>();
  for (const m of all) {
    if (m.attrs.ifname !== undefined && m.data.index !== undefined && bridges.includes(m.attrs.ifname))
      out.set(m.attrs.ifname, { index: m.data.index, ports: [] });
  }
  for (const m of all) {
    const master = m.attrs.master === undefined ? undefined : byIndex.get(m.attrs.master);
    if (master !== undefined && m.attrs.ifname !== undefined) out.get(master)?.ports.push(m.attrs.ifname);
  }
  return out;
}
