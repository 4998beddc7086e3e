// `<address>:<port>` as the configuration writes a TCP listening address (metrics_listen):
// `127.0.0.1:9178`, `[::1]:9178`. Pure; the configuration's schema and the listener share it.
import { isIPv4, isIPv6 } from 'node:net';

export interface ListenAddress {
  /** The address without brackets (`::1`), as node:net's listen takes it. */
  host: string;
  port: number;
}

export type ListenAddressParse = { ok: true; address: ListenAddress } | { ok: false; reason: string };

const FORM = 'must be <IPv4 address>:<port> or [<IPv6 address>]:<port>, e.g. 127.0.0.1:9178';

export function parseListenAddress(text: string): ListenAddressParse {
  const match = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  if (match === null) return { ok: false, reason: FORM };
  const [, v6, v4, portText = ''] = match;
  const port = Number(portText);
  if (v6 !== undefined && !isIPv6(v6)) return { ok: false, reason: `"${v6}" is not an IPv6 address (${FORM})` };
  if (v4 !== undefined && !isIPv4(v4)) return { ok: false, reason: `"${v4}" is not an IPv4 address (${FORM})` };
  if (port < 1 || port > 65535) return { ok: false, reason: `port ${portText} is not in 1..65535` };
  return { ok: true, address: { host: v6 ?? v4 ?? '', port } };
}

/** The address as the configuration writes it (`[::1]:9178` for IPv6). */
export function formatListenAddress(a: ListenAddress): string {
  return isIPv6(a.host) ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
