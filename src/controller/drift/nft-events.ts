// nftables event messages (NFNLGRP_NFTABLES), read from their bytes: what kind of event, which
// table and set it is about, and for the message that closes a transaction (NFT_MSG_NEWGEN) the
// generation and the pid of the process that committed it. Pure; see linux/netfilter/nf_tables.h
// and nfnetlink.h. Every event of one transaction carries the generation's low 16 bits in its
// nfgenmsg `res_id` (network byte order); the NEWGEN message comes after all of them.
import type { RawMessage } from '../../netns/netlink.ts';

export const NFNL_SUBSYS_NFTABLES = 10;
export const NFT_MSG_NEWSETELEM = 12;
export const NFT_MSG_DELSETELEM = 14;
export const NFT_MSG_NEWGEN = 15;
/** enum nft_gen_attributes */
export const NFTA_GEN_ID = 1;
export const NFTA_GEN_PROC_PID = 2;
export const NFTA_GEN_PROC_NAME = 3;
/** Table name: attribute 1 of every table, chain, rule, set, element, object and flowtable message. */
export const NFTA_TABLE_NAME = 1;
/** Set name of an element message (NFTA_SET_ELEM_LIST_SET). */
export const NFTA_SET_ELEM_LIST_SET = 2;
/** nfgenmsg.nfgen_family */
export const NFPROTO_IPV4 = 2;
export const NFPROTO_BRIDGE = 7;

export type NftEvent =
  /** A table, chain, rule, set, object or flowtable event: the structure of a table changed. */
  | { kind: 'structural'; family: number; transaction: number; table: string | undefined }
  | { kind: 'set-element'; family: number; transaction: number; table: string | undefined; set: string | undefined }
  /** The end of a transaction: its generation and who committed it. */
  | { kind: 'generation'; transaction: number; id: number | undefined; pid: number | undefined; proc: string | undefined };

/** The attributes after the 4-byte nfgenmsg: type -> payload (the first of each type). */
function attributes(data: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  let off = 4;
  while (off + 4 <= data.length) {
    const len = data.readUInt16LE(off);
    const type = data.readUInt16LE(off + 2) & 0x3fff; // without NLA_F_NESTED and NLA_F_NET_BYTEORDER
    if (len < 4 || off + len > data.length) break;
    if (!out.has(type)) out.set(type, data.subarray(off + 4, off + len));
    off += (len + 3) & ~3;
  }
  return out;
}

function str(b: Buffer | undefined): string | undefined {
  if (b === undefined) return undefined;
  const nul = b.indexOf(0);
  return (nul === -1 ? b : b.subarray(0, nul)).toString();
}

function u32be(b: Buffer | undefined): number | undefined {
  return b !== undefined && b.length >= 4 ? b.readUInt32BE(0) : undefined;
}

/** The event an nftables message carries; undefined for messages of other subsystems. */
export function parseNftEvent(msg: RawMessage): NftEvent | undefined {
  if (msg.type >> 8 !== NFNL_SUBSYS_NFTABLES || msg.data.length < 4) return undefined;
  const type = msg.type & 0xff;
  const family = msg.data.readUInt8(0);
  const transaction = msg.data.readUInt16BE(2);
  const attrs = attributes(msg.data);
  if (type === NFT_MSG_NEWGEN) {
    const id = u32be(attrs.get(NFTA_GEN_ID));
    return { kind: 'generation', transaction, id, pid: u32be(attrs.get(NFTA_GEN_PROC_PID)), proc: str(attrs.get(NFTA_GEN_PROC_NAME)) };
  }
  const table = str(attrs.get(NFTA_TABLE_NAME));
  if (type === NFT_MSG_NEWSETELEM || type === NFT_MSG_DELSETELEM) {
    return { kind: 'set-element', family, transaction, table, set: str(attrs.get(NFTA_SET_ELEM_LIST_SET)) };
  }
  return { kind: 'structural', family, transaction, table };
}
