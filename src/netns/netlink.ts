// The one adapter for the `netlink` package (0.3.0): its loader, the types imds uses of it, and the
// two kinds of socket imds opens with it — request sockets (link and address dumps) and event
// sockets (rtnetlink groups, nftables events) — each made safe the same way, in the daemon's own
// namespace or inside a network's (through withNetns).
//
// Why "safe": the package aborts the whole process when the kernel flags one of its sockets with
// an error (libuv reports POLLERR; its native handler then throws a C++ exception while building the
// JS error: `terminate called after throwing an instance of 'Napi::Error'`). An event socket that
// overflows while the daemon is busy is flagged so (ENOBUFS). Every socket is therefore set, through
// the addon, with NETLINK_NO_ENOBUFS and a larger receive buffer (what still does not fit is dropped
// silently instead), gets an `error` listener (an EventEmitter without one throws), and every
// request a deadline (a socket the package closed would leave it pending for ever).
import { createRequire } from 'node:module';
import { ImdsError } from '../errors.ts';
import { tuneNetlink, withNetns } from './addon.ts';

export const NETLINK_ROUTE = 0;
export const NETLINK_NETFILTER = 12;
export const RTNLGRP_LINK = 1;
export const RTNLGRP_IPV4_IFADDR = 5;
export const NFNLGRP_NFTABLES = 7;
export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_DELADDR = 21;
/** Link messages of this family are the bridge's view of a port (a DELLINK means "left the bridge"). */
export const AF_BRIDGE = 7;
export const AF_INET = 2;

/** A message as the kernel sent it (type and payload after the netlink header). */
export interface RawMessage {
  type: number;
  data: Buffer;
}

/** A parsed rtnetlink link message (and, for events, the message type the rt socket drops). */
export interface LinkMessage {
  type?: number;
  data: { family?: number; index?: number; flags?: { up?: boolean } };
  attrs: { ifname?: string; mtu?: number; master?: number; ifalias?: string; linkinfo?: Buffer; address?: Buffer };
}

export interface AddressMessage {
  data: { family?: number; prefixlen?: number; index?: number };
  attrs: { local?: Buffer; address?: Buffer };
}

interface RequestOptions {
  timeout?: number;
}

interface RawSocket {
  addMembership(group: number): void;
  address(): { port: number };
  on(event: 'message', listener: (msgs: RawMessage | RawMessage[]) => void): void;
  on(event: 'error', listener: (err: Error) => void): void;
  close(): void;
}

interface RtSocket {
  getLink(data: Record<string, unknown>, attrs: { ifname: string }, options?: RequestOptions): Promise<LinkMessage[]>;
  getLinks(data?: Record<string, unknown>, attrs?: Record<string, unknown>, options?: RequestOptions): Promise<LinkMessage[]>;
  getAddresses(data?: Record<string, unknown>, attrs?: Record<string, unknown>, options?: RequestOptions): Promise<AddressMessage[]>;
  socket: RawSocket;
}

interface NetlinkModule {
  createNetlink(protocol: number): RawSocket;
  createRtNetlink(): RtSocket;
  rt: { parseMessage(type: number, data: Buffer): Omit<LinkMessage, 'type'> };
}

interface IflaModule {
  parseInfo(b: Buffer): { kind?: string };
}

let loaded: { netlink: NetlinkModule; ifla: IflaModule } | undefined;

/** The package, loaded once; throws INTERNAL when it is missing (it ships with imds). */
export function requireNetlink(): { netlink: NetlinkModule; ifla: IflaModule } {
  if (loaded !== undefined) return loaded;
  try {
    const require = createRequire(import.meta.url);
    loaded = { netlink: require('netlink') as NetlinkModule, ifla: require('netlink/dist/rt/ifla') as IflaModule };
    return loaded;
  } catch (err) {
    throw new ImdsError('INTERNAL', `the netlink package cannot be loaded (reinstall imds): ${(err as Error).message}`, { cause: err });
  }
}

/** The deadline of every request. */
export const REQUEST_TIMEOUT = { timeout: 5000 };

/** Receive buffers of event sockets: a burst (a host starting many VMs) must fit while the daemon is busy. */
export const HOST_EVENTS_RCVBUF = 4 * 1024 * 1024;
export const NAMESPACE_EVENTS_RCVBUF = 1024 * 1024;

export interface RequestSocket {
  getLink(ifname: string): Promise<LinkMessage | undefined>;
  getLinks(): Promise<LinkMessage[]>;
  getAddresses(): Promise<AddressMessage[]>;
  close(): void;
}

/**
 * A request socket, in this namespace or inside `netns`. `onError` runs after the socket is closed
 * by an error (its pending requests then time out). One dump at a time per socket: the package
 * cannot tell two multipart answers on one socket apart.
 */
export function openRequestSocket(options: { netns?: string; onError?: () => void } = {}): RequestSocket {
  const { netlink } = requireNetlink();
  const open = (): RtSocket => netlink.createRtNetlink();
  const sock = options.netns === undefined ? open() : withNetns(options.netns, open);
  tuneNetlink(sock.socket.address().port);
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    try {
      sock.socket.close();
    } catch {
      /* closed already */
    }
  };
  sock.socket.on('error', () => {
    close();
    options.onError?.();
  });
  return {
    getLink: (ifname) =>
      sock.getLink({}, { ifname }, REQUEST_TIMEOUT).then(
        (m) => m[0],
        (err: Error) => {
          if (err.message.includes('ENODEV')) return undefined;
          throw err;
        },
      ),
    getLinks: () => sock.getLinks({}, {}, REQUEST_TIMEOUT),
    getAddresses: () => sock.getAddresses({}, {}, REQUEST_TIMEOUT),
    close,
  };
}

export interface EventSocket {
  close(): void;
}

export interface EventSocketOptions {
  protocol: typeof NETLINK_ROUTE | typeof NETLINK_NETFILTER;
  groups: readonly number[];
  rcvbuf: number;
  /** Open it inside this namespace (its events are that namespace's). */
  netns?: string;
  onMessages(msgs: RawMessage[]): void;
  /** The socket failed: events may have been missed. */
  onError(err: Error): void;
}

/** A socket subscribed to netlink multicast groups, delivering raw messages in arrival batches. */
export function openEventSocket(options: EventSocketOptions): EventSocket {
  const { netlink } = requireNetlink();
  const open = (): RawSocket => netlink.createNetlink(options.protocol);
  const sock = options.netns === undefined ? open() : withNetns(options.netns, open);
  try {
    tuneNetlink(sock.address().port, options.rcvbuf);
    sock.on('error', (err) => options.onError(err));
    for (const g of options.groups) sock.addMembership(g);
    sock.on('message', (msgs) => options.onMessages(Array.isArray(msgs) ? msgs : [msgs]));
  } catch (err) {
    sock.close();
    throw err;
  }
  return { close: () => sock.close() };
}

/** Parses an rtnetlink event (keeping its type); a message the package cannot parse keeps only its type. */
export function parseRtMessage(m: RawMessage): LinkMessage {
  try {
    return { type: m.type, ...requireNetlink().netlink.rt.parseMessage(m.type, m.data) };
  } catch {
    return { type: m.type, data: {}, attrs: {} };
  }
}

/** The link kind (`bridge`, `veth`, …) from IFLA_LINKINFO. */
export function linkKind(linkinfo: Buffer | undefined): string | undefined {
  return linkinfo === undefined ? undefined : requireNetlink().ifla.parseInfo(linkinfo).kind;
}
