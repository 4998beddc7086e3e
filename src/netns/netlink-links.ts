// Reads host links by name over rtnetlink, in-process (the `netlink` package): a targeted reconcile
// learns about its bridge, veth and uplink in about a millisecond instead of spawning `ip`.
import { createRequire } from 'node:module';
import type { LinkState } from './iproute.ts';

interface LinkMessage {
  data: { index?: number; flags?: { up?: boolean } };
  attrs: { ifname?: string; mtu?: number; master?: number; ifalias?: string; linkinfo?: Buffer; address?: Buffer };
}
interface RtSocket {
  getLink(data: Record<string, unknown>, attrs: { ifname: string }): Promise<LinkMessage[]>;
}
interface NetlinkModule {
  createRtNetlink(): RtSocket;
}
interface IflaModule {
  parseInfo(b: Buffer): { kind?: string };
}

let socket: RtSocket | undefined;
let ifla: IflaModule | undefined;
let unavailable = false;

function rtnetlink(): RtSocket | undefined {
  if (socket !== undefined || unavailable) return socket;
  try {
    const require = createRequire(import.meta.url);
    socket = (require('netlink') as NetlinkModule).createRtNetlink();
    ifla = require('netlink/dist/rt/ifla') as IflaModule;
  } catch {
    unavailable = true;
  }
  return socket;
}

/** The named links that exist (absent names are left out); undefined when rtnetlink is not usable. */
export async function linksNamed(names: readonly string[]): Promise<Map<string, LinkState> | undefined> {
  const sock = rtnetlink();
  if (sock === undefined || ifla === undefined) return undefined;
  const messages = await Promise.all(
    names.map((ifname) =>
      sock.getLink({}, { ifname }).then(
        (m) => m[0],
        (err: NodeJS.ErrnoException) => {
          if (String(err.message).includes('ENODEV')) return undefined;
          throw err;
        },
      ),
    ),
  );
  const byIndex = new Map<number, string>();
  for (const m of messages) if (m?.data.index !== undefined && m.attrs.ifname !== undefined) byIndex.set(m.data.index, m.attrs.ifname);
  const out = new Map<string, LinkState>();
  for (const m of messages) {
    if (m === undefined || m.attrs.ifname === undefined || m.data.index === undefined) continue;
    const master = m.attrs.master;
    out.set(m.attrs.ifname, {
      name: m.attrs.ifname,
      index: m.data.index,
      kind: m.attrs.linkinfo === undefined ? undefined : ifla.parseInfo(m.attrs.linkinfo).kind,
      master: master === undefined ? undefined : (byIndex.get(master) ?? `#${master}`),
      up: m.data.flags?.up === true,
      mtu: m.attrs.mtu ?? 0,
      alias: m.attrs.ifalias === '' ? undefined : m.attrs.ifalias,
      mac: m.attrs.address === undefined ? undefined : [...m.attrs.address].map((b) => b.toString(16).padStart(2, '0')).join(':'),
      addresses: [],
    });
  }
  return out;
}
