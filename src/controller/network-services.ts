// What each serving network needs beyond links and tables, kept in line with its VMs: the guest
// set of its bridge table (the `MAC . address` pairs whose metadata traffic is steered to the
// namespace), the namespace table's guard sets and, on DHCP networks, its dnsmasq. The reconciler
// calls in after a network converged and before its namespace goes; VM changes arrive from the
// inventory. Work for one network runs in order; VM changes are coalesced, so a batch of a thousand
// VMs is one write. A guest set that differs from what was last written there (someone changed
// it), however it is found, is rewritten and reported as a repair of kind `guest_set`.
import { messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Network } from '../model/schema.ts';
import type { DhcpHost } from '../dhcp/dnsmasq-config.ts';
import type { DhcpServers } from '../dhcp/dhcp-servers.ts';
import { NFT_TABLE } from '../model/names.ts';
import { renderBridgeGuestElements } from '../bridge/bridge-table.ts';
import { GUEST_SET, guestKey, parseRuleset, renderInnerGuestElements, VM_IP_SET } from '../netns/nft.ts';
import type { NftBatcher } from '../netns/nft-batch.ts';
import type { Runner } from '../netns/run.ts';
import type { DesiredNetwork } from './desired.ts';
import { placeName, type GuestSetPlace } from './drift/causes.ts';
import type { RepairReporter } from './drift/report.ts';

export type { GuestSetPlace } from './drift/causes.ts';

export interface NetworkHooks {
  /** The network serves. `sets` holds its guest sets as the reconciler saw or wrote them (undefined: unknown). */
  converged(d: DesiredNetwork, sets: ObservedGuestSets): Promise<void>;
  /** Its namespace is about to be removed (`removed`: the network is gone) or rebuilt. */
  stopping(network: string, options: { removed: boolean }): Promise<void>;
  /** The shared bridge table was (re)built with these networks' guest sets (as the store had them then). */
  bridgeSetsLoaded(networks: readonly string[]): Promise<void>;
}

/** A guest set's `MAC . address` pairs as the reconciler saw them, or wrote them with a table it (re)built. */
export interface GuestSetSeen {
  elements: ReadonlySet<string>;
  written: boolean;
}

export interface ObservedGuestSets {
  bridge: GuestSetSeen | undefined;
  inner: GuestSetSeen | undefined;
}

export interface NetworkServicesDeps {
  runner: Runner;
  /** nft in the hypervisor namespace, where the bridge tables are. */
  hostNft: NftBatcher;
  dhcp: DhcpServers;
  log: Logger;
  network(id: string): Network | undefined;
  /** The network's VMs as DHCP hosts (MAC, address, host name). */
  hosts(network: string): DhcpHost[];
  /** Domain announced by DHCP when the network declares none (config `dhcp_domain`). */
  defaultDomain(): string;
  /** Where guest sets rewritten after drift are logged and counted (drift/report.ts RepairLog). */
  repairs?: RepairReporter;
  /** Coalescing window for VM changes, ms (default SETTLE_MS). */
  settleMs?: number;
}

/**
 * How long VM changes are gathered before the kernel's sets and dnsmasq are written: a burst of
 * changes (an import, a boot wave) becomes one write per network, and the admin call and the
 * guest's new document come first.
 */
export const SETTLE_MS = 50;

const PLACES: readonly GuestSetPlace[] = ['bridge', 'inner'];

/** Sorted, distinct `MAC . address` pairs: the content of a guest set. */
function contentOf(pairs: Iterable<string>): string[] {
  return [...new Set(pairs)].sort();
}

export class NetworkServices implements NetworkHooks {
  private readonly deps: NetworkServicesDeps;
  /** Serving networks, as last converged. */
  private readonly serving = new Map<string, DesiredNetwork>();
  /** The guest pairs last written (or first seen) in each place, by `place|network`; absent: unknown. */
  private readonly known = new Map<string, string[]>();
  private readonly queues = new Map<string, Promise<void>>();
  private readonly pending = new Set<string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(deps: NetworkServicesDeps) {
    this.deps = deps;
  }

  converged(d: DesiredNetwork, sets: ObservedGuestSets): Promise<void> {
    return this.enqueue(d.id, async () => {
      this.serving.set(d.id, d);
      const changed: GuestSetPlace[] = [];
      for (const place of PLACES) {
        const seen = sets[place];
        const slot = `${place}|${d.id}`;
        if (seen === undefined) {
          this.known.delete(slot);
          continue;
        }
        const content = contentOf(seen.elements);
        const known = this.known.get(slot);
        // Not what we wrote there: looked at again (our own write may have landed after the reconciler looked).
        if (!seen.written && known !== undefined && known.join(',') !== content.join(',')) changed.push(place);
        else this.known.set(slot, content);
      }
      for (const place of changed) await this.mend(d, place, [`guest set in ${placeName(place)} changed, seen by a reconcile`]);
      await this.syncGuests(d);
      await this.syncDhcp(d);
    });
  }

  stopping(network: string, options: { removed: boolean }): Promise<void> {
    return this.enqueue(network, async () => {
      this.serving.delete(network);
      for (const place of PLACES) this.known.delete(`${place}|${network}`);
      await this.deps.dhcp.stop(network, { removeFiles: options.removed });
    });
  }

  /**
   * What was last written in the bridge table is no longer known: the table was rebuilt with the
   * sets as the store had them, which a change already queued here may differ from. Compared with
   * the VMs from then on (and written again on the next change).
   */
  bridgeSetsLoaded(networks: readonly string[]): Promise<void> {
    const forget = (n: string) => this.enqueue(n, () => Promise.resolve(this.known.delete(`bridge|${n}`)));
    return Promise.all(networks.map(forget)).then(() => undefined);
  }

  /**
   * Compares the network's guest sets in `place` (the bridge table's, or the namespace table's
   * pair and address sets) with what was last written there (the VMs when unknown) and rewrites
   * them when they differ, reporting the repair. Returns what was wrong, or undefined when they
   * were right (or the network does not serve, or its table is not there: the reconciler deals
   * with that).
   */
  checkGuestSets(
    network: string,
    place: GuestSetPlace,
    noticed: string[] = [`set elements changed in ${placeName(place)}`],
  ): Promise<string | undefined> {
    return this.enqueue(network, async () => {
      const d = this.serving.get(network);
      return d === undefined ? undefined : this.mend(d, place, noticed);
    });
  }

  /** Networks serving now, with their namespaces. */
  servingNetworks(): { id: string; netns: string }[] {
    return [...this.serving.values()].map((d) => ({ id: d.id, netns: d.netns }));
  }

  /** The inventory changed these networks' VMs. */
  vmsChanged(networks: ReadonlySet<string>): void {
    for (const n of networks) this.pending.add(n);
    this.timer ??= setTimeout(() => this.flush(), this.deps.settleMs ?? SETTLE_MS);
  }

  /** Resolves when every queued change has been written (tests, shutdown). */
  async idle(): Promise<void> {
    if (this.timer !== undefined) this.flush();
    await Promise.all(this.queues.values());
  }

  async stopAll(): Promise<void> {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.pending.clear();
    await Promise.all(this.queues.values());
    await this.deps.dhcp.stopAll();
  }

  private flush(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const networks = [...this.pending];
    this.pending.clear();
    for (const network of networks) {
      void this.enqueue(network, async () => {
        const d = this.serving.get(network);
        if (d === undefined) return; // not serving yet: converging will write everything
        await this.syncGuests(d);
        if (this.deps.network(network)?.dhcp === true) this.deps.dhcp.updateHosts(network, this.deps.hosts(network));
      }).catch((err: unknown) => this.deps.log.error({ network, err: messageOf(err) }, 'VM change not applied to the kernel'));
    }
  }

  private enqueue<T>(network: string, work: () => Promise<T>): Promise<T> {
    const run = (this.queues.get(network) ?? Promise.resolve()).then(work);
    const settled: Promise<void> = run.then(
      () => undefined,
      () => undefined,
    );
    this.queues.set(network, settled);
    void settled.then(() => {
      if (this.queues.get(network) === settled) this.queues.delete(network);
    });
    return run;
  }

  /** What is wrong with the sets in `place` now (one nft read), against what was last written there. */
  private async differences(d: DesiredNetwork, place: GuestSetPlace): Promise<string[] | undefined> {
    const pairs = this.known.get(`${place}|${d.id}`) ?? contentOf(this.deps.hosts(d.id).map(guestKey));
    const want = new Map<string, Set<string>>([[place === 'bridge' ? d.bridgeSet : GUEST_SET, new Set(pairs)]]);
    if (place === 'inner') want.set(VM_IP_SET, new Set(pairs.map((p) => p.slice(p.indexOf(' . ') + 3))));
    const read =
      place === 'bridge'
        ? await this.deps.runner.run(['nft', '-j', 'list', 'set', 'bridge', d.bridgeTable, d.bridgeSet], { allowFailure: true })
        : await this.deps.runner.run(['nft', '-j', 'list', 'table', 'ip', NFT_TABLE], { netns: d.netns, allowFailure: true });
    if (read.code !== 0) return undefined;
    const table = parseRuleset(read.stdout).get(place === 'bridge' ? `bridge ${d.bridgeTable}` : `ip ${NFT_TABLE}`);
    const wrong: string[] = [];
    for (const [name, wanted] of want) {
      const seen = table?.sets.get(name) ?? new Set<string>();
      const missing = [...wanted].filter((e) => !seen.has(e)).length;
      const extra = [...seen].filter((e) => !wanted.has(e)).length;
      if (missing + extra > 0) wrong.push(`set ${name}: ${missing} missing, ${extra} not ours`);
    }
    return wrong;
  }

  /** Rewrites the sets in `place` if they differ from what was written there, and reports it. Runs in the network's queue. */
  private async mend(d: DesiredNetwork, place: GuestSetPlace, noticed: string[]): Promise<string | undefined> {
    const started = performance.now();
    const wrong = await this.differences(d, place);
    if (wrong === undefined || wrong.length === 0) return undefined;
    this.known.delete(`${place}|${d.id}`);
    await this.syncGuests(d, [place]);
    const done = [`guest sets rewritten in ${placeName(place)}`];
    this.deps.repairs?.repaired(d.id, { noticed, wrong, done, kinds: ['guest_set'] }, performance.now() - started);
    return wrong.join('; ');
  }

  /** Both guest sets: the bridge table's (interception) and the namespace's (anti-spoofing). */
  private async syncGuests(d: DesiredNetwork, places: readonly GuestSetPlace[] = PLACES): Promise<void> {
    const guests = this.deps.hosts(d.id);
    const content = contentOf(guests.map(guestKey));
    const write = async (place: GuestSetPlace, load: () => Promise<unknown>): Promise<void> => {
      const slot = `${place}|${d.id}`;
      if (!places.includes(place) || this.known.get(slot)?.join(',') === content.join(',')) return;
      this.known.delete(slot); // unknown until the write succeeds
      await load();
      this.known.set(slot, content);
    };
    await Promise.all([
      write('bridge', () => this.deps.hostNft.apply(renderBridgeGuestElements(d.bridgeTable, d.id, guests))),
      write('inner', () => this.deps.runner.run(['nft', '-f', '-'], { netns: d.netns, stdin: renderInnerGuestElements(guests) })),
    ]);
  }

  private async syncDhcp(d: DesiredNetwork): Promise<void> {
    const net = this.deps.network(d.id);
    if (net?.dhcp === true) {
      await this.deps.dhcp.ensure(net, d.netns, this.deps.hosts(d.id), net.domain ?? this.deps.defaultDomain());
    } else {
      await this.deps.dhcp.stop(d.id, { removeFiles: true }); // no-op unless it ran (or left files)
    }
  }
}
