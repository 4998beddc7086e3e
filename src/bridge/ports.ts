// The ports of the bridges imds uses: read once when a network starts serving (drift tracking
// keeps them current from link events), and put back on a bridge imds had to recreate (a deleted
// bridge takes its ports off it; they were the guests' taps).
import { allLinks, linksNamed, namesByIndex } from '../netns/links.ts';
import type { Runner } from '../netns/run.ts';

export interface BridgePorts {
  index: number;
  ports: string[];
}

/** Each named bridge that exists: its ifindex and its ports, from one link dump. */
export async function bridgePorts(bridges: readonly string[]): Promise<Map<string, BridgePorts>> {
  const all = await allLinks();
  const byIndex = namesByIndex(all);
  const out = new Map<string, BridgePorts>();
  for (const m of all) {
    if (m.attrs.ifname !== undefined && m.data.index !== undefined && bridges.includes(m.attrs.ifname)) {
      out.set(m.attrs.ifname, { index: m.data.index, ports: [] });
    }
  }
  for (const m of all) {
    const master = m.attrs.master === undefined ? undefined : byIndex.get(m.attrs.master);
    if (master !== undefined && m.attrs.ifname !== undefined) out.get(master)?.ports.push(m.attrs.ifname);
  }
  return out;
}

/** Puts back on `bridge` those of `ports` that exist and are on no bridge; returns them. */
export async function reattachPorts(runner: Runner, bridge: string, ports: readonly string[]): Promise<string[]> {
  if (ports.length === 0) return [];
  const now = await linksNamed(ports);
  const loose = ports.filter((p) => now.get(p) !== undefined && now.get(p)?.master === undefined);
  if (loose.length > 0) await runner.run(['ip', '-batch', '-'], { stdin: loose.map((p) => `link set ${p} master ${bridge}\n`).join('') });
  return loose;
}
