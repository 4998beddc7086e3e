// Fakes shared by the drift watch's unit tests (not a test file itself).
import type { Clock, Timer } from '../../src/controller/drift/clock.ts';

/** Time that moves only when told; due timers run in order, with promises settled between them. */
export class FakeClock implements Clock {
  t = 0;
  private seq = 0;
  private timers: { at: number; seq: number; fn: () => void }[] = [];

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): Timer {
    const timer = { at: this.t + Math.max(0, ms), seq: this.seq++, fn };
    this.timers.push(timer);
    return timer as Timer;
  }

  clearTimeout(timer: Timer): void {
    this.timers = this.timers.filter((t) => t !== (timer as unknown));
  }

  pending(): number {
    return this.timers.length;
  }

  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      await settle();
      const due = this.timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (due === undefined) break;
      this.timers = this.timers.filter((t) => t !== due);
      this.t = due.at;
      due.fn();
    }
    this.t = end;
    await settle();
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** A netlink attribute: length, type, payload, padding to 4 bytes. */
export function nla(type: number, body: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt16LE(4 + body.length, 0);
  head.writeUInt16LE(type, 2);
  return Buffer.concat([head, body, Buffer.alloc((4 - (body.length % 4)) % 4)]);
}

export const cstr = (s: string): Buffer => Buffer.from(`${s}\0`);

export function be32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

function le32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

/** An nfnetlink nftables message: nfgenmsg (family, version 0, res_id big-endian), then attributes. */
export function nftMessage(msgType: number, family: number, resId: number, attrs: Buffer[]): { type: number; data: Buffer } {
  const head = Buffer.from([family, 0, resId >> 8, resId & 0xff]);
  return { type: (10 << 8) | msgType, data: Buffer.concat([head, ...attrs]) };
}

/** NFT_MSG_NEWSETELEM (or DELSETELEM) for one element of `table`'s `set`. */
export function setElement(family: number, table: string, set: string, resId: number, del = false): { type: number; data: Buffer } {
  const element = nla(0x8000 | 3, nla(0x8000 | 1, nla(0x8000 | 1, nla(1, Buffer.from([52, 54, 0, 0, 0, 10])))));
  return nftMessage(del ? 14 : 12, family, resId, [nla(1, cstr(table)), nla(2, cstr(set)), element]);
}

/** NFT_MSG_NEWGEN: the generation and the process that committed it. */
export function newGen(resId: number, pid: number, proc = 'nft'): { type: number; data: Buffer } {
  return nftMessage(15, 0, resId, [nla(1, be32(resId)), nla(2, be32(pid)), nla(3, cstr(proc))]);
}

export interface LinkFields {
  family?: number;
  index: number;
  up?: boolean;
  name?: string;
  mtu?: number;
  master?: number;
  alias?: string;
}

/** An rtnetlink link message (RTM_NEWLINK 16, RTM_DELLINK 17): ifinfomsg, then IFLA_* attributes. */
export function linkMessage(type: number, f: LinkFields): { type: number; data: Buffer } {
  const ifi = Buffer.alloc(16);
  ifi.writeUInt8(f.family ?? 0, 0);
  ifi.writeInt32LE(f.index, 4);
  ifi.writeUInt32LE(f.up === true ? 1 : 0, 8);
  const attrs: Buffer[] = [];
  if (f.name !== undefined) attrs.push(nla(3, cstr(f.name)));
  if (f.mtu !== undefined) attrs.push(nla(4, le32(f.mtu)));
  if (f.master !== undefined) attrs.push(nla(10, le32(f.master)));
  if (f.alias !== undefined) attrs.push(nla(20, cstr(f.alias)));
  return { type, data: Buffer.concat([ifi, ...attrs]) };
}

/** An rtnetlink address message (RTM_NEWADDR 20, RTM_DELADDR 21): ifaddrmsg, then IFA_LOCAL. */
export function addressMessage(type: number, index: number, address: number[], prefixlen: number): { type: number; data: Buffer } {
  const ifa = Buffer.from([2, prefixlen, 0, 0, 0, 0, 0, 0]);
  ifa.writeUInt32LE(index, 4);
  return { type, data: Buffer.concat([ifa, nla(2, Buffer.from(address))]) };
}
