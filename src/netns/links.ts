// Link and address reads over rtnetlink, in-process (src/netns/netlink.ts): a targeted reconcile
// learns about its bridge, veth and uplink in about a millisecond instead of starting `ip`. A read
// that fails (a timeout, a socket the kernel flagged) rejects; callers fall back to `ip`.
import type { LinkState } from './iproute.ts';
import { AF_INET, linkKind, openRequestSocket, type LinkMessage, type RequestSocket } from './netlink.ts';

/** The shared socket for single-link requests; replaced after an error or a failed request. */
let shared: RequestSocket | undefined;

function sharedSocket(): RequestSocket {
  if (shared === undefined) {
    const opened: RequestSocket = openRequestSocket({ onError: () => dropShared(opened) });
    shared = opened;
  }
  return shared;
}

function dropShared(sock: RequestSocket): void {
  if (shared !== sock) return;
  shared = undefined;
  sock.close();
}

/** ifindex -> name of the links in `messages`. */
export function namesByIndex(messages: readonly (LinkMessage | undefined)[]): Map<number, string> {
  const out = new Map<number, string>();
  for (const m of messages) if (m?.data.index !== undefined && m.attrs.ifname !== undefined) out.set(m.data.index, m.attrs.ifname);
  return out;
}

export function linkState(m: LinkMessage, byIndex: ReadonlyMap<number, string>): LinkState | undefined {
  if (m.attrs.ifname === undefined || m.data.index === undefined) return undefined;
  const master = m.attrs.master;
  return {
    name: m.attrs.ifname,
    index: m.data.index,
    kind: linkKind(m.attrs.linkinfo),
    master: master === undefined ? undefined : (byIndex.get(master) ?? `#${master}`),
    up: m.data.flags?.up === true,
    mtu: m.attrs.mtu ?? 0,
    alias: m.attrs.ifalias === '' ? undefined : m.attrs.ifalias,
    mac: m.attrs.address === undefined ? undefined : [...m.attrs.address].map((b) => b.toString(16).padStart(2, '0')).join(':'),
    addresses: [],
  };
}

/** The named links of this namespace that exist (absent names are left out). */
export async function linksNamed(names: readonly string[]): Promise<Map<string, LinkState>> {
  const sock = sharedSocket();
  let messages: (LinkMessage | undefined)[];
  try {
    messages = await Promise.all(names.map((ifname) => sock.getLink(ifname)));
  } catch (err) {
    dropShared(sock); // a timeout or a broken socket: the next call opens a new one
    throw err;
  }
  const byIndex = namesByIndex(messages);
  const out = new Map<string, LinkState>();
  for (const m of messages) {
    const state = m === undefined ? undefined : linkState(m, byIndex);
    if (state !== undefined) out.set(state.name, state);
  }
  return out;
}

/** Every link of this namespace (one dump, on a socket of its own). */
export async function allLinks(): Promise<LinkMessage[]> {
  const sock = openRequestSocket();
  try {
    return await sock.getLinks();
  } finally {
    sock.close();
  }
}

/** Links and IPv4 addresses inside the namespace `netns`, over a socket opened in it. */
export async function namespaceLinks(netns: string): Promise<Map<string, LinkState>> {
  const sock = openRequestSocket({ netns });
  try {
    const links = await sock.getLinks();
    const addresses = await sock.getAddresses();
    const byIndex = namesByIndex(links);
    const out = new Map<string, LinkState>();
    for (const m of links) {
      const state = linkState(m, byIndex);
      if (state !== undefined) out.set(state.name, state);
    }
    for (const a of addresses) {
      const local = a.attrs.local ?? a.attrs.address;
      if (a.data.family !== AF_INET || local === undefined || a.data.index === undefined) continue;
      const name = byIndex.get(a.data.index);
      if (name !== undefined) out.get(name)?.addresses.push(`${[...local].join('.')}/${a.data.prefixlen ?? 32}`);
    }
    return out;
  } finally {
    sock.close();
  }
}
