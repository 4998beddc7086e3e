// The nftables table imds owns inside each network namespace: rendered whole as text, applied
// atomically (declare, delete, redefine in one transaction), and recognised again by a content
// hash carried in every rule's comment.
import { createHash } from 'node:crypto';
import { METADATA_IP, NFT_TABLE } from '../model/names.ts';

export interface NatTableInput {
  listenPort: number;
}

export interface RenderedTable {
  /** Full `nft -f` script: replaces the table atomically. */
  script: string;
  /** Content hash carried in each rule comment (`imds:<hash>`). */
  hash: string;
  /** Number of rules the table holds when intact. */
  ruleCount: number;
}

export function renderNatTable(input: NatTableInput): RenderedTable {
  const port = input.listenPort;
  const chains: { name: string; hook: string; rules: string[] }[] = [
    {
      name: 'prerouting',
      hook: 'type nat hook prerouting priority dstnat; policy accept;',
      rules: [`ip daddr ${METADATA_IP} tcp dport 80 counter dnat to ${METADATA_IP}:${port}`],
    },
    {
      // The daemon's own probes (`imds vm get`) connect from inside the namespace.
      name: 'output',
      hook: 'type nat hook output priority -100; policy accept;',
      rules: [`ip daddr ${METADATA_IP} tcp dport 80 dnat to ${METADATA_IP}:${port}`],
    },
    {
      // The listener is reachable only through the DNAT: a guest cannot bypass port 80's rules.
      name: 'input',
      hook: 'type filter hook input priority filter; policy accept;',
      rules: [`tcp dport ${port} ct status dnat accept`, `tcp dport ${port} counter drop`],
    },
  ];
  const hash = createHash('sha256').update(JSON.stringify(chains)).digest('hex').slice(0, 16);
  const body = chains
    .map((c) => [`  chain ${c.name} {`, `    ${c.hook}`, ...c.rules.map((r) => `    ${r} comment "imds:${hash}"`), '  }'].join('\n'))
    .join('\n');
  const script = `table ip ${NFT_TABLE} {}\ndelete table ip ${NFT_TABLE}\ntable ip ${NFT_TABLE} {\n${body}\n}\n`;
  return { script, hash, ruleCount: chains.reduce((n, c) => n + c.rules.length, 0) };
}

export interface TableState {
  /** Rules whose comment carries `imds:<hash>`, by hash. */
  rulesByHash: Map<string, number>;
  ruleCount: number;
}

/** Parses `nft -j list table ip imds`. */
export function parseTable(json: string): TableState {
  const doc = JSON.parse(json) as { nftables?: { rule?: { comment?: string } }[] };
  const rulesByHash = new Map<string, number>();
  let ruleCount = 0;
  for (const item of doc.nftables ?? []) {
    if (item.rule === undefined) continue;
    ruleCount++;
    const comment = item.rule.comment;
    if (comment?.startsWith('imds:')) {
      const hash = comment.slice(5);
      rulesByHash.set(hash, (rulesByHash.get(hash) ?? 0) + 1);
    }
  }
  return { rulesByHash, ruleCount };
}

/** True when the observed table is exactly the rendered one. */
export function tableMatches(observed: TableState | undefined, desired: RenderedTable): boolean {
  return (
    observed !== undefined &&
    observed.ruleCount === desired.ruleCount &&
    observed.rulesByHash.get(desired.hash) === desired.ruleCount
  );
}
