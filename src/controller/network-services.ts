// What each serving network needs beyond links and tables, kept in line with its VMs: the guest
// set of its bridge table (the `MAC . address` pairs whose metadata traffic is steered to the
// namespace) and, on DHCP networks, its dnsmasq. The reconciler calls in after a network
// converged and before its namespace goes; VM changes arrive from the inventory. Work for one
// network runs in order; VM changes are coalesced, so a batch of a thousand VMs is one write.
import { messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Network } from '../model/schema.ts';
import type { DhcpHost } from '../dhcp/dnsmasq-config.ts';
import type { DhcpServers } from '../dhcp/dhcp-servers.ts';
import { NFT_TABLE } from '../model/names.ts';
import { GUEST_SET, guestKey, parseRuleset, renderGuestElements, renderInnerGuestElements, VM_IP_SET } from '../netns/nft.ts';
import type { NftBatcher } from '../netns/nft-batch.ts';
import type { Runner } from '../netns/run.ts';
import type { DesiredNetwork } from './desired.ts';

export interface NetworkHooks {
  /**
   * The network serves. `sets` holds the guest sets as observed: the bridge table's and the
   * namespace table's (empty when the table was just replaced; undefined when unknown).
   */
  converged(d: DesiredNetwork, sets: ObservedGuestSets): Promise<void>;
  /** Its namespace is about to be removed (`removed`: the network is gone) or rebuilt. */
  stopping(network: string, options: { removed: boolean }): Promise<void>;
}

export interface ObservedGuestSets {
  bridge: ReadonlySet<string> | undefined;
  inner: ReadonlySet<string> | undefined;
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
  /** Coalescing window for VM changes, ms (default SETTLE_MS). */
  settleMs?: number;
}

/**
 * How long VM changes are gathered before the kernel's sets and dnsmasq are written: a burst of
 * changes (an import, a boot wave) becomes one write per network, and the admin call and the
 * guest's new document come first.
 */
export const SETTLE_MS = 50;

/** How long after our own guest-set write its set-element events are taken for ours, ms. */
export const OWN_WRITE_GRACE_MS = 250;

export type GuestSetPlace = 'bridge' | 'inner';

export class NetworkServices implements NetworkHooks {
  private readonly deps: NetworkServicesDeps;
  /** Serving networks, as last converged. */
  private readonly serving = new Map<string, DesiredNetwork>();
  /** The guest sets' content as last written or observed, by `bridge|inner` and network. */
  private readonly guestSets = new Map<string, string>();
  private readonly queues = new Map<string, Promise<void>>();
  /** Until when (ms) set-element events of a network are taken for our own writes, by `where|network`. */
  private readonly writingUntil = new Map<string, number>();
  private readonly pending = new Set<string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(deps: NetworkServicesDeps) {
    this.deps = deps;
  }

  converged(d: DesiredNetwork, sets: ObservedGuestSets): Promise<void> {
    return this.enqueue(d.id, async () => {
      this.serving.set(d.id, d);
      for (const where of ['bridge', 'inner'] as const) {
        const seen = sets[where];
        if (seen !== undefined) this.guestSets.set(`${where}|${d.id}`, [...seen].sort().join(','));
        else this.guestSets.delete(`${where}|${d.id}`);
      }
      await this.syncGuests(d);
      await this.syncDhcp(d);
    });
  }

  stopping(network: string, options: { removed: boolean }): Promise<void> {
    return this.enqueue(network, async () => {
      this.serving.delete(network);
      this.guestSets.delete(`bridge|${network}`);
      this.guestSets.delete(`inner|${network}`);
      this.writingUntil.delete(`bridge|${network}`);
      this.writingUntil.delete(`inner|${network}`);
      await this.deps.dhcp.stop(network, { removeFiles: options.removed });
    });
  }

  /** Whether we are writing (or just wrote) the network's guest sets in `where`. */
  ownSetWrite(network: string, where: GuestSetPlace): boolean {
    const until = this.writingUntil.get(`${where}|${network}`);
    return until !== undefined && Date.now() <= until;
  }

  /**
   * Compares the network's guest sets in `where` (the bridge table's, or the namespace table's
   * pair and address sets) with its VMs and rewrites them when they differ (someone changed them
   * by hand). Returns what was wrong, or undefined when they were right (or the network does not
   * serve, or its table is not there: the reconciler deals with that).
   */
  checkGuestSets(network: string, where: GuestSetPlace): Promise<string | undefined> {
    return this.enqueue(network, async () => {
      const d = this.serving.get(network);
      if (d === undefined) return undefined;
      const guests = this.deps.hosts(network);
      const want = new Map<string, Set<string>>([[GUEST_SET, new Set(guests.map(guestKey))]]);
      if (where === 'inner') want.set(VM_IP_SET, new Set(guests.map((g) => g.ip)));
      const read =
        where === 'bridge'
          ? await this.deps.runner.run(['nft', '-j', 'list', 'set', 'bridge', d.bridgeTable.name, GUEST_SET], { allowFailure: true })
          : await this.deps.runner.run(['nft', '-j', 'list', 'table', 'ip', NFT_TABLE], { netns: d.netns, allowFailure: true });
      if (read.code !== 0) return undefined;
      const table = parseRuleset(read.stdout).get(where === 'bridge' ? `bridge ${d.bridgeTable.name}` : `ip ${NFT_TABLE}`);
      const wrong: string[] = [];
      for (const [name, wanted] of want) {
        const seen = table?.sets.get(name) ?? new Set<string>();
        const missing = [...wanted].filter((e) => !seen.has(e)).length;
        const extra = [...seen].filter((e) => !wanted.has(e)).length;
        if (missing + extra > 0) wrong.push(`set ${name}: ${missing} missing, ${extra} not ours`);
      }
      if (wrong.length === 0) return undefined;
      this.guestSets.delete(`${where}|${network}`);
      await this.syncGuests(d, [where]);
      return wrong.join('; ');
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

  /** Both guest sets: the bridge table's (interception) and the namespace's (anti-spoofing). */
  private async syncGuests(d: DesiredNetwork, places: readonly GuestSetPlace[] = ['bridge', 'inner']): Promise<void> {
    const guests = this.deps.hosts(d.id);
    const key = [...new Set(guests.map(guestKey))].sort().join(',');
    const write = async (where: GuestSetPlace, load: () => Promise<unknown>): Promise<void> => {
      const slot = `${where}|${d.id}`;
      if (!places.includes(where) || this.guestSets.get(slot) === key) return;
      this.guestSets.delete(slot); // unknown until the write succeeds
      this.writingUntil.set(slot, Infinity);
      try {
        await load();
      } finally {
        this.writingUntil.set(slot, Date.now() + OWN_WRITE_GRACE_MS);
      }
      this.guestSets.set(slot, key);
    };
    await Promise.all([
      write('bridge', () => this.deps.hostNft.apply(renderGuestElements(d.bridgeTable.name, guests))),
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
