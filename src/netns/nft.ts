// nftables, pure: rendering a table imds owns whole as text (applied atomically: declare, delete,
// redefine in one transaction; recognised again by a content hash carried in every rule's
// comment), the namespace's `ip imds` table (DNAT to the listener, the anti-spoofing guard) and its
// guest sets, and parsing `nft -j` output. The bridge table of the hypervisor namespace is
// src/bridge/bridge-table.ts.
import { createHash } from 'node:crypto';
import { METADATA_IP, NFT_TABLE } from '../model/names.ts';

export type TableFamily = 'ip' | 'bridge';

export interface ChainSpec {
  name: string;
  /** The base chain declaration, e.g. `type nat hook prerouting priority dstnat; policy accept;`; '' for a regular chain. */
  hook: string;
  rules: string[];
}

export interface SetSpec {
  name: string;
  /** nft set type, e.g. `ether_addr . ipv4_addr`. */
  type: string;
}

export interface RenderedTable {
  family: TableFamily;
  name: string;
  /** Full `nft -f` script: replaces the table atomically. */
  script: string;
  /** Content hash carried in each rule comment (`imds:<hash>`). */
  hash: string;
  /** Number of rules the table holds when intact. */
  ruleCount: number;
  /** Names of the sets it declares. */
  sets: string[];
}

export function renderTable(
  family: TableFamily,
  name: string,
  chains: readonly ChainSpec[],
  sets: readonly SetSpec[] = [],
  counters: readonly string[] = [],
): RenderedTable {
  const hash = createHash('sha256')
    .update(
      JSON.stringify(
        sets.length === 0 && counters.length === 0 ? chains : counters.length === 0 ? { chains, sets } : { chains, sets, counters },
      ),
    )
    .digest('hex')
    .slice(0, 16);
  const body = [
    ...counters.map((c) => `  counter ${c} {\n  }`),
    ...sets.map((s) => `  set ${s.name} {\n    type ${s.type};\n  }`),
    ...chains.map((c) =>
      [
        `  chain ${c.name} {`,
        ...(c.hook === '' ? [] : [`    ${c.hook}`]),
        ...c.rules.map((r) => `    ${r} comment "imds:${hash}"`),
        '  }',
      ].join('\n'),
    ),
  ].join('\n');
  const script = `table ${family} ${name} {}\ndelete table ${family} ${name}\ntable ${family} ${name} {\n${body}\n}\n`;
  return { family, name, script, hash, ruleCount: chains.reduce((n, c) => n + c.rules.length, 0), sets: sets.map((s) => s.name) };
}

export interface NatTableInput {
  listenPort: number;
}

/** The inner table's sets: registered VMs' addresses, and their `MAC . IPv4` pairs. */
export const VM_IP_SET = 'vm_ips';
/** Named counter of packets dropped as spoofed (a registered VM's address from another MAC). */
export const SPOOF_COUNTER = 'spoofed';

/**
 * The namespace's table. `guard` (before the DNAT) drops metadata traffic that carries a
 * registered VM's address from a MAC that is not that VM's: a guest forging a neighbour's address
 * gets nothing, even if it poisoned the namespace's ARP cache. Addresses no VM holds pass: the
 * daemon answers them 404 and a VM being added is served before its pair reaches the set.
 */
export function renderNatTable(input: NatTableInput): RenderedTable {
  const port = input.listenPort;
  return renderTable(
    'ip',
    NFT_TABLE,
    [
      {
        name: 'guard',
        hook: 'type filter hook prerouting priority mangle; policy accept;',
        rules: [
          `ip daddr ${METADATA_IP} ip saddr @${VM_IP_SET} ether saddr . ip saddr != @${GUEST_SET} counter name "${SPOOF_COUNTER}" drop`,
        ],
      },
      {
        name: 'prerouting',
        hook: 'type nat hook prerouting priority dstnat; policy accept;',
        rules: [`ip daddr ${METADATA_IP} tcp dport 80 counter dnat to ${METADATA_IP}:${port}`],
      },
      {
        // The daemon's own probes (`imds vm get`) connect from inside the namespace.
        name: 'output',
        hook: 'type nat hook output priority -100; policy accept;',
        rules: [`ip daddr ${METADATA_IP} tcp dport 80 counter dnat to ${METADATA_IP}:${port}`],
      },
      {
        // The listener is reachable only through the DNAT: a guest cannot bypass port 80's rules.
        name: 'input',
        hook: 'type filter hook input priority filter; policy accept;',
        rules: [`tcp dport ${port} ct status dnat accept`, `tcp dport ${port} counter drop`],
      },
    ],
    [
      { name: VM_IP_SET, type: 'ipv4_addr' },
      { name: GUEST_SET, type: 'ether_addr . ipv4_addr' },
    ],
    [SPOOF_COUNTER],
  );
}

/** The set of the network's registered VMs as `MAC . IPv4` pairs in its namespace table (bridgeGuestSetName in the bridge table). */
export const GUEST_SET = 'guests';

export interface GuestAddress {
  mac: string;
  ip: string;
}

/** The key a guest pair has in observed sets: `mac . ip`. */
export function guestKey(g: GuestAddress): string {
  return `${g.mac.toLowerCase()} . ${g.ip}`;
}

export function replaceElements(lines: string[], family: TableFamily, table: string, set: string, elements: readonly string[]): void {
  lines.push(`flush set ${family} ${table} ${set}`);
  for (let i = 0; i < elements.length; i += 1000) {
    lines.push(`add element ${family} ${table} ${set} { ${elements.slice(i, i + 1000).join(', ')} }`);
  }
}

/** `nft -f` script that replaces the namespace table's address and pair sets in one transaction. */
export function renderInnerGuestElements(guests: readonly GuestAddress[]): string {
  const lines: string[] = [];
  replaceElements(lines, 'ip', NFT_TABLE, VM_IP_SET, [...new Set(guests.map((g) => g.ip))].sort());
  replaceElements(lines, 'ip', NFT_TABLE, GUEST_SET, [...new Set(guests.map(guestKey))].sort());
  return `${lines.join('\n')}\n`;
}

/** Packets of a named counter in `nft -j list counter` output; undefined when absent. */
export function parseCounterPackets(json: string): number | undefined {
  const doc = JSON.parse(json) as { nftables?: { counter?: { packets?: number } }[] };
  for (const item of doc.nftables ?? []) if (typeof item.counter?.packets === 'number') return item.counter.packets;
  return undefined;
}

export interface TableState {
  /** Rules whose comment carries `imds:<hash>`, by hash. */
  rulesByHash: Map<string, number>;
  ruleCount: number;
  /** Elements of the table's sets by set name; concatenations as `a . b`. */
  sets: Map<string, Set<string>>;
}

interface NftItem {
  table?: { family?: string; name?: string };
  rule?: { family?: string; table?: string; comment?: string };
  set?: { family?: string; table?: string; name?: string; elem?: unknown[] };
}

function elementText(e: unknown): string {
  if (typeof e === 'string' || typeof e === 'number') return String(e);
  if (e !== null && typeof e === 'object' && 'concat' in e && Array.isArray((e as { concat: unknown[] }).concat)) {
    return (e as { concat: unknown[] }).concat.map(elementText).join(' . ');
  }
  if (e !== null && typeof e === 'object' && 'elem' in e) return elementText((e as { elem: { val?: unknown } }).elem.val);
  return JSON.stringify(e);
}

/** Parses `nft -j list ruleset [FAMILY]` (or one table's listing): every table, by `family name`. */
export function parseRuleset(json: string): Map<string, TableState> {
  const doc = JSON.parse(json) as { nftables?: NftItem[] };
  const tables = new Map<string, TableState>();
  const of = (family: string | undefined, name: string | undefined): TableState => {
    const key = `${family ?? ''} ${name ?? ''}`;
    let t = tables.get(key);
    if (t === undefined) tables.set(key, (t = { rulesByHash: new Map(), ruleCount: 0, sets: new Map() }));
    return t;
  };
  for (const item of doc.nftables ?? []) {
    if (item.table !== undefined) of(item.table.family, item.table.name);
    if (item.set !== undefined) {
      of(item.set.family, item.set.table).sets.set(item.set.name ?? '', new Set((item.set.elem ?? []).map(elementText)));
    }
    if (item.rule === undefined) continue;
    const t = of(item.rule.family, item.rule.table);
    t.ruleCount++;
    const comment = item.rule.comment;
    if (comment?.startsWith('imds:')) {
      const hash = comment.slice(5);
      t.rulesByHash.set(hash, (t.rulesByHash.get(hash) ?? 0) + 1);
    }
  }
  return tables;
}

/** Parses `nft -j list table FAMILY NAME`. */
export function parseTable(json: string): TableState {
  const tables = parseRuleset(json);
  const first = tables.values().next();
  return first.done === true ? { rulesByHash: new Map(), ruleCount: 0, sets: new Map() } : first.value;
}

/** True when the observed table is exactly the rendered one. */
export function tableMatches(observed: TableState | undefined, desired: RenderedTable): boolean {
  return (
    observed !== undefined &&
    observed.ruleCount === desired.ruleCount &&
    observed.rulesByHash.get(desired.hash) === desired.ruleCount &&
    desired.sets.every((name) => observed.sets.has(name))
  );
}
