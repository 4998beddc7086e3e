// Reads the kernel state the planner needs: links in the hypervisor namespace, the namespaces that
// carry our prefix, and inside each of those the links, addresses and our nft table.
import { readdir } from 'node:fs/promises';
import { NFT_TABLE } from '../model/names.ts';
import { parseLinks, type LinkState } from '../netns/iproute.ts';
import { parseTable, type TableState } from '../netns/nft.ts';
import { inNetns, NETNS_RUN_DIR, type Runner } from '../netns/run.ts';
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

export async function observeNamespace(runner: Runner, netns: string): Promise<ObservedNamespace> {
  const [addr, nft] = await Promise.all([
    runner.run(['ip', '-n', netns, '-j', 'addr', 'show']),
    runner.run(inNetns(netns, ['nft', '-j', 'list', 'table', 'ip', NFT_TABLE]), { allowFailure: true }),
  ]);
  return { links: parseLinks(addr.stdout), table: nft.code === 0 ? parseTable(nft.stdout) : undefined };
}

export interface ObserveOptions {
  namespacePrefix: string;
  /** Namespaces to look into (those that exist); the others are only listed. */
  lookInto: Iterable<string>;
  concurrency?: number;
}

export async function observe(runner: Runner, options: ObserveOptions): Promise<ObservedState> {
  const [hostLinks, namespaces] = await Promise.all([observeHostLinks(runner), listNamespaces(options.namespacePrefix)]);
  const targets = [...new Set(options.lookInto)].filter((ns) => namespaces.has(ns));
  // A namespace that vanished between the listing and the look inside counts as absent.
  const contents = await mapLimit(targets, options.concurrency ?? 4, (ns) => observeNamespace(runner, ns).catch(() => undefined));
  const inside = new Map<string, ObservedNamespace>();
  targets.forEach((ns, i) => {
    const content = contents[i];
    if (content === undefined) namespaces.delete(ns);
    else inside.set(ns, content);
  });
  return { hostLinks, namespaces, inside };
}
