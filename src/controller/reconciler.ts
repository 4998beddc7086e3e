// Converges the kernel and the listeners to the declared networks: observe -> plan -> apply, one
// run at a time. Listening sockets are opened as soon as a network's namespace exists (a restart
// serves guests before anything else is checked) and are closed before their namespace goes.
import { ImdsError, messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Network } from '../model/schema.ts';
import type { NftBatcher } from '../netns/nft-batch.ts';
import type { Runner } from '../netns/run.ts';
import type { NetnsListeners } from '../server/listeners.ts';
import { mapLimit } from '../util/concurrency.ts';
import { applyNetworkPlan, runStep, type NetworkResult, type StepRunner } from './apply.ts';
import { desiredState, type DesiredNetwork, type DesiredState } from './desired.ts';
import type { GuestSetSeen, NetworkHooks } from './network-services.ts';
import { renderBridgeGuestElements } from '../bridge/bridge-table.ts';
import { GUEST_SET, guestKey, renderInnerGuestElements, type GuestAddress } from '../netns/nft.ts';
import { listNamespaces, observe, type ObservedState } from './observe.ts';
import { plan, planNetwork, type NetworkPlan, type Plan, type Step, type StepTarget } from './plan.ts';

export interface NetworkStatus {
  network: string;
  state: 'serving' | 'degraded';
  reason: string | undefined;
  /** Steps applied in the last reconcile. */
  changed: number;
}

/** A step as it was applied: what kind, what it repaired, where (`host` or the namespace), and why. */
export interface AppliedStep {
  kind: Step['kind'];
  target: StepTarget;
  where: string;
  why: string;
  /** It created the network's bridge (the ports that were on the old one are to be put back). */
  createsBridge?: boolean;
}

export interface ReconcileSummary {
  networks: NetworkStatus[];
  /** The steps planned for each network that had any (run, or attempted when it failed). */
  applied: Map<string, AppliedStep[]>;
  removed: string[];
  removalFailures: { network: string; error: string }[];
  ms: number;
}

export interface ReconcilerDeps {
  runner: Runner;
  /** nft in the hypervisor namespace (bridge tables), coalesced across networks. */
  hostNft?: NftBatcher;
  listeners: NetnsListeners;
  log: Logger;
  namespacePrefix: string;
  listenPort: number;
  concurrency?: number;
  /** Per-network services (guest set, DHCP) brought in line after a network converged. */
  hooks?: NetworkHooks;
  /** The network's VMs as `MAC . address` pairs: loaded with a table that is (re)built, saving an nft run. */
  guestsOf?: (network: string) => GuestAddress[];
  /** Counts failures and times runs (Prometheus). */
  onResult?: (summary: ReconcileSummary) => void;
}

/** The network plans as they are applied: the hypervisor namespace's tables apart, guest sets seeded. */
interface Split {
  /** Bridge-table steps by network (loaded beside the per-network plans). */
  hostTables: Map<string, Step[]>;
  /** The guest pairs loaded with a (re)built table, by network. */
  seeded: Map<string, Set<string>>;
}

export class Reconciler {
  private queue: Promise<unknown> = Promise.resolve();
  private readonly status = new Map<string, NetworkStatus>();

  private readonly deps: ReconcilerDeps;

  constructor(deps: ReconcilerDeps) {
    this.deps = deps;
  }

  statuses(): NetworkStatus[] {
    return [...this.status.values()];
  }

  statusOf(network: string): NetworkStatus | undefined {
    return this.status.get(network);
  }

  /**
   * Queues a reconcile towards `networks`; runs never overlap. With `only`, just those networks
   * are observed and converged (an admin call about one network: nothing else is looked at, and
   * nothing is removed); without it, everything, orphans included.
   */
  reconcile(networks: readonly Network[], only?: readonly string[]): Promise<ReconcileSummary> {
    const run = this.queue.then(() => this.run(networks, only));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Opens the sockets of every declared network whose namespace exists: a restart serves at once. */
  async listenExisting(networks: readonly Network[]): Promise<number> {
    const desired = this.desiredOf(networks);
    const present = await listNamespaces(this.deps.namespacePrefix);
    let opened = 0;
    for (const d of desired.networks.values()) {
      if (present.has(d.netns) && !this.deps.listeners.has(d.id)) {
        try {
          await this.deps.listeners.listen(d.id, d.netns);
          opened++;
        } catch (err) {
          this.deps.log.debug({ network: d.id, err: messageOf(err) }, 'early listen failed');
        }
      }
    }
    return opened;
  }

  private desiredOf(networks: readonly Network[]): DesiredState {
    return desiredState({ namespacePrefix: this.deps.namespacePrefix, listenPort: this.deps.listenPort, networks });
  }

  private get exec(): StepRunner {
    return { runner: this.deps.runner, hostNft: this.deps.hostNft };
  }

  private async run(networks: readonly Network[], only: readonly string[] | undefined): Promise<ReconcileSummary> {
    const started = performance.now();
    const desired = this.desiredOf(networks);
    const targets = [...desired.networks.values()].filter((d) => only === undefined || only.includes(d.id));
    // Serve at once wherever the namespace is already there (restart, reload).
    await this.listenExisting(networks.filter((n) => only === undefined || only.includes(n.id)));
    const observed = await this.observeTargets(targets, only !== undefined);
    const p: Plan = only === undefined ? plan(desired, observed) : { removals: [], networks: targets.map((d) => planNetwork(d, observed)) };
    await this.stopBeforeRemoval(desired, p, only);
    const { removed, removalFailures } = await this.runRemovals(p.removals);
    for (const id of [...this.status.keys()]) if (!desired.networks.has(id)) this.status.delete(id);
    const split = this.splitHostTables(desired, p);
    const results = await this.applyPlans(p, split);
    // Networks come up together: their guest-set writes share nft runs (see NftBatcher).
    const reasons = await Promise.all(results.map((r) => this.bringUp(desired, p, observed, split, r)));
    const summary: ReconcileSummary = {
      networks: results.map((r, i) => this.record(r, reasons[i])),
      applied: appliedSteps(p, split),
      removed,
      removalFailures,
      ms: round(performance.now() - started),
    };
    this.deps.log.debug({ ms: summary.ms }, 'reconcile done');
    this.deps.onResult?.(summary);
    return summary;
  }

  /** Everything (a full reconcile), or only the targets' links and bridge tables. */
  private observeTargets(targets: readonly DesiredNetwork[], targeted: boolean): Promise<ObservedState> {
    return observe(this.deps.runner, {
      namespacePrefix: this.deps.namespacePrefix,
      lookInto: targets.map((d) => d.netns),
      ...(targeted
        ? {
            hostLinks: targets.flatMap((d) => [d.bridge, d.outer, ...(d.uplink === undefined ? [] : [d.uplink])]),
            bridgeTables: targets.map((d) => d.bridgeTable.name),
          }
        : {}),
    });
  }

  /**
   * A socket pins its namespace: close it before the namespace is removed or rebuilt. Services
   * running inside (dnsmasq) stop too.
   */
  private async stopBeforeRemoval(desired: DesiredState, p: Plan, only: readonly string[] | undefined): Promise<void> {
    const { listeners, hooks } = this.deps;
    const rebuilds = (np: NetworkPlan | undefined) => np?.steps.some((s) => s.kind === 'netns-add') ?? false;
    for (const network of listeners.networks()) {
      if (only !== undefined && !only.includes(network)) continue;
      const d = desired.networks.get(network);
      const rebuilt = rebuilds(p.networks.find((np) => np.network === network));
      if (d === undefined || rebuilt || listeners.netnsOf(network) !== d.netns) await listeners.close(network);
    }
    for (const np of p.networks) if (rebuilds(np)) await hooks?.stopping(np.network, { removed: false });
    for (const removal of p.removals) await hooks?.stopping(removal.network, { removed: true });
  }

  /** Removals are independent of each other: run like builds, a few at a time (their bridge-table deletes share nft runs). */
  private async runRemovals(removals: NetworkPlan[]): Promise<Pick<ReconcileSummary, 'removed' | 'removalFailures'>> {
    const { log } = this.deps;
    const removed: string[] = [];
    const removalFailures: { network: string; error: string }[] = [];
    const results = await mapLimit(removals, this.deps.concurrency ?? 4, (removal) => applyNetworkPlan(this.exec, removal, log));
    for (const [i, removal] of removals.entries()) {
      const result = results[i] as NetworkResult;
      if (result.ok) {
        removed.push(removal.network);
        this.status.delete(removal.network);
        log.info({ network: removal.network, steps: result.stepsRun, ms: round(result.ms) }, 'network removed');
      } else {
        removalFailures.push({ network: removal.network, error: result.error?.message ?? 'unknown' });
        log.error({ network: removal.network, err: result.error?.message }, 'network removal failed');
      }
    }
    return { removed, removalFailures };
  }

  /**
   * A table being (re)built is loaded with its guest sets in the same nft run. The hypervisor
   * namespace's tables leave the per-network plans to load all in one go, beside them: every nft
   * run there costs time in proportion to the tables already present (nft reads them all), so a
   * start that builds N networks makes one run, not N/4. They name links without needing them.
   */
  private splitHostTables(desired: DesiredState, p: Plan): Split {
    const split: Split = { hostTables: new Map(), seeded: new Map() };
    for (const np of p.networks) {
      const d = desired.networks.get(np.network);
      const guests = d === undefined ? undefined : this.deps.guestsOf?.(np.network);
      const steps = np.steps.map((s): Step => {
        if (d === undefined || guests === undefined || s.kind !== 'nft' || s.script.startsWith('delete')) return s;
        split.seeded.set(np.network, new Set(guests.map(guestKey)));
        const elements = s.netns === undefined ? renderBridgeGuestElements(d.bridgeTable.name, guests) : renderInnerGuestElements(guests);
        return { ...s, script: s.script + elements };
      });
      const host = steps.filter((s) => s.kind === 'nft' && s.netns === undefined);
      if (host.length > 0) split.hostTables.set(np.network, host);
      np.steps = steps.filter((s) => !host.includes(s));
    }
    return split;
  }

  /** The plans, with the bridge tables loaded beside them; a network whose bridge table failed is not serving (a new one is rolled back whole). */
  private async applyPlans(p: Plan, split: Split): Promise<NetworkResult[]> {
    const exec = this.exec;
    const hostFailed = new Map<string, ImdsError>();
    const hostPhase = Promise.all(
      [...split.hostTables].map(async ([network, steps]) => {
        for (const step of steps) {
          try {
            await runStep(exec, step);
          } catch (err) {
            hostFailed.set(network, err instanceof ImdsError ? err : new ImdsError('INTERNAL', messageOf(err), { cause: err }));
            return;
          }
        }
      }),
    );
    const results = await mapLimit(p.networks, this.deps.concurrency ?? 4, (np) => applyNetworkPlan(exec, np, this.deps.log));
    await hostPhase;
    return Promise.all(
      results.map(async (r, i) => {
        const np = p.networks[i] as NetworkPlan;
        const failed = hostFailed.get(r.network);
        if (failed === undefined) return { ...r, stepsRun: r.stepsRun + (split.hostTables.get(r.network)?.length ?? 0) };
        if (np.fresh && r.ok) for (const step of np.rollback) await runStep(exec, step).catch(() => undefined);
        return { ...r, ok: false, error: failed };
      }),
    );
  }

  /** Listens and brings the network's services in line; returns why it does not serve, if it does not. */
  private async bringUp(
    desired: DesiredState,
    p: Plan,
    observed: ObservedState,
    split: Split,
    result: NetworkResult,
  ): Promise<string | undefined> {
    const d = desired.networks.get(result.network);
    if (!result.ok || d === undefined) return result.error?.message;
    try {
      await this.deps.listeners.listen(d.id, d.netns);
      const np = p.networks.find((n) => n.network === d.id);
      const rebuilt = np?.steps.some((s) => s.kind === 'netns-add') ?? false;
      const innerReplaced = rebuilt || (np?.steps.some((s) => s.kind === 'nft' && s.netns === d.netns) ?? false);
      const written: GuestSetSeen = { elements: split.seeded.get(d.id) ?? new Set<string>(), written: true };
      const seen = (elements: ReadonlySet<string> | undefined): GuestSetSeen | undefined =>
        elements === undefined ? undefined : { elements, written: false };
      await this.deps.hooks?.converged(d, {
        bridge: split.hostTables.has(d.id) ? written : seen(observed.bridgeTables.get(d.bridgeTable.name)?.sets.get(GUEST_SET)),
        inner: innerReplaced ? written : seen(observed.inside.get(d.netns)?.table?.sets.get(GUEST_SET)),
      });
      return undefined;
    } catch (err) {
      return messageOf(err);
    }
  }

  private record(result: NetworkResult, reason: string | undefined): NetworkStatus {
    const status: NetworkStatus = {
      network: result.network,
      state: reason === undefined ? 'serving' : 'degraded',
      reason,
      changed: result.stepsRun,
    };
    this.status.set(result.network, status);
    if (reason !== undefined) this.deps.log.error({ network: result.network, err: reason }, 'network not serving');
    else if (result.stepsRun > 0)
      this.deps.log.info({ network: result.network, steps: result.stepsRun, ms: round(result.ms) }, 'network converged');
    return status;
  }
}

/** The steps planned for each network that had any, bridge tables first. */
function appliedSteps(p: Plan, split: Split): Map<string, AppliedStep[]> {
  const applied = new Map<string, AppliedStep[]>();
  for (const np of p.networks) {
    const host = split.hostTables.get(np.network) ?? [];
    if (np.steps.length === 0 && host.length === 0) continue;
    applied.set(
      np.network,
      [...host, ...np.steps].map((s) => ({
        kind: s.kind,
        target: s.target,
        where: s.kind === 'netns-add' || s.kind === 'netns-del' ? s.netns : (s.netns ?? 'host'),
        why: s.why,
        ...(s.kind === 'ip' && s.createsBridge === true ? { createsBridge: true } : {}),
      })),
    );
  }
  return applied;
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
