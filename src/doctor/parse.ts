// Pure readers of the kernel's JSON that only doctor needs: the bridge's forwarding table
// (`bridge -j fdb show br BR`), a namespace's neighbour table (`ip -j neigh show dev DEV`), the
// bridge's ageing time (`ip -j -d link show dev BR`) and the packet counters of an nft table
// (`nft -j list table …`; the table itself is read by src/netns/nft.ts parseTable).

export interface FdbEntry {
  mac: string;
  /** The port the MAC was learned on. */
  port: string;
  /** The bridge, when the entry is a port's (learned) entry. */
  master: string | undefined;
  /** `permanent`, `static`, or '' for a learned entry. */
  state: string;
}

export function parseFdb(json: string): FdbEntry[] {
  const text = json.trim();
  if (text === '') return [];
  const rows = JSON.parse(text) as { mac?: string; ifname?: string; master?: string; state?: string; flags?: string[] }[];
  const out: FdbEntry[] = [];
  for (const r of rows) {
    if (r.mac === undefined || r.ifname === undefined || (r.flags ?? []).includes('self')) continue;
    out.push({ mac: r.mac.toLowerCase(), port: r.ifname, master: r.master, state: r.state ?? '' });
  }
  return out;
}

export interface Neighbour {
  ip: string;
  /** Absent while unresolved (INCOMPLETE, FAILED). */
  mac: string | undefined;
  /** NUD states: REACHABLE, STALE, DELAY, PROBE, FAILED, INCOMPLETE, PERMANENT, … */
  state: string[];
}

export function parseNeighbours(json: string): Neighbour[] {
  const text = json.trim();
  if (text === '') return [];
  const rows = JSON.parse(text) as { dst?: string; lladdr?: string; state?: string[] }[];
  return rows
    .filter((r) => r.dst !== undefined && !r.dst.includes(':'))
    .map((r) => ({ ip: r.dst as string, mac: r.lladdr?.toLowerCase(), state: r.state ?? [] }));
}

/** The bridge's FDB ageing time in seconds (the kernel gives centiseconds); undefined when not a bridge. */
export function parseAgeingSeconds(json: string): number | undefined {
  const text = json.trim();
  if (text === '') return undefined;
  const rows = JSON.parse(text) as { linkinfo?: { info_kind?: string; info_data?: { ageing_time?: number } } }[];
  const data = rows[0]?.linkinfo;
  if (data?.info_kind !== 'bridge' || typeof data.info_data?.ageing_time !== 'number') return undefined;
  return data.info_data.ageing_time / 100;
}

export interface RuleCounter {
  chain: string;
  /** The rule's verdict or action: `dnat`, `drop`, `accept`, or '' (a counter only). */
  action: string;
  packets: number;
  /** The named set the rule looks up (`@NAME`), if any. */
  set?: string;
}

export interface TableCounters {
  /** Anonymous counters of the table's rules, in order. */
  rules: RuleCounter[];
  /** Named counters (`counter NAME`), by name: packets. */
  named: Map<string, number>;
}

type Expr = Record<string, unknown>;

/** The rule counters and named counters of one table's `nft -j` listing. */
export function parseCounters(json: string): TableCounters {
  const doc = JSON.parse(json) as { nftables?: Expr[] };
  const out: TableCounters = { rules: [], named: new Map() };
  for (const item of doc.nftables ?? []) {
    const named = item['counter'] as { name?: string; packets?: number } | undefined;
    if (named?.name !== undefined && typeof named.packets === 'number') out.named.set(named.name, named.packets);
    const rule = item['rule'] as { chain?: string; expr?: Expr[] } | undefined;
    if (rule?.expr === undefined) continue;
    const counter = rule.expr.find((e) => typeof (e['counter'] as { packets?: unknown } | undefined)?.packets === 'number');
    if (counter === undefined) continue;
    const action = rule.expr.map((e) => Object.keys(e)[0] ?? '').find((k) => ['dnat', 'drop', 'accept', 'mangle'].includes(k)) ?? '';
    const set = rule.expr
      .map((e) => (e['match'] as { right?: unknown } | undefined)?.right)
      .find((r): r is string => typeof r === 'string' && r.startsWith('@'));
    out.rules.push({
      chain: rule.chain ?? '',
      action,
      packets: (counter['counter'] as { packets: number }).packets,
      ...(set === undefined ? {} : { set: set.slice(1) }),
    });
  }
  return out;
}
