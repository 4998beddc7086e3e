// Reads the kernel state the planner needs: links in the hypervisor namespace, the namespaces that
// carry our prefix, and inside each of those the links, addresses and our nft table.
import { readdir } from 'node:fs/promises';
import { NFT_TABLE } from '../model/names.ts';
import { parseLinks, type LinkState } from '../netns/iproute.ts';
import { linksNamed, namespaceLinks } from '../netns/links.ts';
import { parseRuleset, parseTable, type TableState } from '../netns/nft.ts';
import { NETNS_RUN_DIR, type Runner } from '../netns/run.ts';
import { mapLimit } from '../util/concurrency.ts';

export interface ObservedNamespace {
  links: Map<string, LinkState>;
  /** undefined when the table does not exist. */
  table: TableState | undefined;
}

export interface ObservedState {
  hostLinks: Map<string, LinkState>;
  /** Every namespace under /run/netns whose name starts with the prefix. */
  namespaces: Set<string>;
  /** Contents of the namespaces that were looked into. */
  inside: Map<string, ObservedNamespace>;
  /** Bridge-family nft tables in the hypervisor namespace, by name (all of them, or those asked for). */
  bridgeTables: Map<string, TableState>;
}

export async function listNamespaces(prefix: string): Promise<Set<string>> {
  try {
    const names = await readdir(NETNS_RUN_DIR);
    return new Set(names.filter((n) => n.startsWith(prefix)));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Set();
    throw err;
  }
}

export async function observeHostLinks(runner: Runner): Promise<Map<string, LinkState>> {
  return parseLinks((await runner.run(['ip', '-j', '-d', 'link', 'show'])).stdout);
}

/** Only the named links (absent ones are simply missing): one `ip -batch`, whatever else the host has. */
export async function observeHostLinksNamed(runner: Runner, names: readonly string[]): Promise<Map<string, LinkState>> {
  const out = new Map<string, LinkState>();
  if (names.length === 0) return out;
  const viaNetlink = await linksNamed(names).catch(() => undefined); // then `ip`, below
  if (viaNetlink !== undefined) return viaNetlink;
  const result = await runner.run(['ip', '-j', '-d', '-force', '-batch', '-'], {
    stdin: `${names.map((n) => `link show dev ${n}`).join('\n')}\n`,
    allowFailure: true,
  });
  for (const line of result.stdout.split('\n')) {
    if (line.trim() === '') continue;
    for (const [name, link] of parseLinks(line)) out.set(name, link);
  }
  return out;
}

export async function observeNamespace(runner: Runner, netns: string): Promise<ObservedNamespace> {
  // A failed netlink read (a timeout, a socket the kernel flagged) falls back to `ip`.
  const [links, nft] = await Promise.all([
    namespaceLinks(netns).catch(async () => parseLinks((await runner.run(['ip', '-j', 'addr', 'show'], { netns })).stdout)),
    runner.run(['nft', '-j', 'list', 'table', 'ip', NFT_TABLE], { netns, allowFailure: true }),
  ]);
  return { links, table: nft.code === 0 ? parseTable(nft.stdout) : undefined };
}

export interface ObserveOptions {
  namespacePrefix: string;
  /** Namespaces to look into (those that exist); the others are only listed. */
  lookInto: Iterable<string>;
  /** Read only these host links (a targeted reconcile); all of them when undefined. */
  hostLinks?: readonly string[];
  /** Read only these bridge tables (a targeted reconcile); all of them when undefined. */
  bridgeTables?: readonly string[];
  concurrency?: number;
}

/** The hypervisor namespace's bridge tables: all of them, or only the named ones (absent ones missing). */
export async function observeBridgeTables(runner: Runner, names?: readonly string[]): Promise<Map<string, TableState>> {
  const out = new Map<string, TableState>();
  if (names === undefined) {
    const result = await runner.run(['nft', '-j', 'list', 'ruleset', 'bridge']);
    for (const [key, table] of parseRuleset(result.stdout)) out.set(key.slice('bridge '.length), table);
    return out;
  }
  await Promise.all(
    names.map(async (name) => {
      const result = await runner.run(['nft', '-j', 'list', 'table', 'bridge', name], { allowFailure: true });
      if (result.code === 0) out.set(name, parseTable(result.stdout));
    }),
  );
  return out;
}

export async function observe(runner: Runner, options: ObserveOptions): Promise<ObservedState> {
  const [hostLinks, namespaces, bridgeTables] = await Promise.all([
    options.hostLinks === undefined ? observeHostLinks(runner) : observeHostLinksNamed(runner, options.hostLinks),
    listNamespaces(options.namespacePrefix),
    observeBridgeTables(runner, options.bridgeTables),
  ]);
  const targets = [...new Set(options.lookInto)].filter((ns) => namespaces.has(ns));
  // A namespace that vanished between the listing and the look inside counts as absent.
  // Two at a time: starting a process blocks the event loop for a few ms, and guests are being served.
  const contents = await mapLimit(targets, options.concurrency ?? 2, (ns) => observeNamespace(runner, ns).catch(() => undefined));
  const inside = new Map<string, ObservedNamespace>();
  targets.forEach((ns, i) => {
    const content = contents[i];
    if (content === undefined) namespaces.delete(ns);
    else inside.set(ns, content);
  });
  return { hostLinks, namespaces, inside, bridgeTables };
}
