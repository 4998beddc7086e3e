// Small, pure IPv4 helpers. Addresses are handled as unsigned 32-bit numbers.
import { isIPv4 } from 'node:net';

export interface Cidr {
  /** Network address as a number. */
  readonly network: number;
  readonly prefix: number;
  /** Canonical text, e.g. `198.51.100.0/24`. */
  readonly text: string;
}

export function parseIpv4(text: string): number | undefined {
  if (!isIPv4(text)) return undefined;
  const parts = text.split('.');
  let value = 0;
  for (const part of parts) value = value * 256 + Number(part);
  return value >>> 0;
}

export function formatIpv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join('.');
}

export function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export function netmaskText(prefix: number): string {
  return formatIpv4(maskOf(prefix));
}

export type CidrParse = { ok: true; cidr: Cidr } | { ok: false; reason: string };

export function parseCidr(text: string): CidrParse {
  const match = /^([0-9.]+)\/(\d{1,2})$/.exec(text);
  if (!match) return { ok: false, reason: 'must look like A.B.C.D/N' };
  const address = parseIpv4(match[1] ?? '');
  const prefix = Number(match[2]);
  if (address === undefined) return { ok: false, reason: `"${match[1]}" is not an IPv4 address` };
  if (prefix > 32) return { ok: false, reason: 'prefix length must be 0..32' };
  const network = (address & maskOf(prefix)) >>> 0;
  if (network !== address) {
    return { ok: false, reason: `host bits are set; did you mean ${formatIpv4(network)}/${prefix}?` };
  }
  return { ok: true, cidr: { network, prefix, text: `${formatIpv4(network)}/${prefix}` } };
}

export function cidrContains(cidr: Cidr, address: number): boolean {
  return (address & maskOf(cidr.prefix)) >>> 0 === cidr.network;
}

export function broadcastOf(cidr: Cidr): number {
  return (cidr.network | (~maskOf(cidr.prefix) >>> 0)) >>> 0;
}

/** True for the network and broadcast addresses of subnets that have them (prefix <= 30). */
export function isReservedInCidr(cidr: Cidr, address: number): boolean {
  if (cidr.prefix >= 31) return false;
  return address === cidr.network || address === broadcastOf(cidr);
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  const prefix = Math.min(a.prefix, b.prefix);
  return (a.network & maskOf(prefix)) >>> 0 === (b.network & maskOf(prefix)) >>> 0;
}
