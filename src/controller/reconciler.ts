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
import { bridgeTableName } from '../model/names.ts';
import { GUEST_SET, guestKey, renderInnerGuestElements, type GuestAddress } from '../netns/nft.ts';
import { listNamespaces, observe, type ObservedState } from './observe.ts';
import { plan, planBridgeTable, planNetwork, type NetworkPlan, type Plan, type Step, type StepTarget } from './plan.ts';

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

/** The plans as they are applied, guest sets seeded into the tables (re)built. */
interface Split {
  /** The shared bridge table's step, with every network's guest set (loaded beside the per-network plans). */
  host: Step[];
  /** The guest pairs loaded with the (re)built bridge table, by network. */
  bridgeSeeded: Map<string, Set<string>> | undefined;
  /** The guest pairs loaded with a (re)built namespace table, by network. */
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
    const p: Plan =
      only === undefined
        ? plan(desired, observed)
        : { removals: [], networks: targets.map((d) => planNetwork(d, observed)), host: planBridgeTable(desired, observed) };
    await this.stopBeforeRemoval(desired, p, only);
    const { removed, removalFailures } = await this.runRemovals(p.removals);
    for (const id of [...this.status.keys()]) if (!desired.networks.has(id)) this.status.delete(id);
    const split = this.splitHostTables(desired, p);
    const { results, hostFailed } = await this.applyPlans(p, split);
    if (hostFailed) split.bridgeSeeded = undefined;
    // Queued in each network's order now, before bringUp queues `converged`; not waited for (a
    // network busy with its dnsmasq does not hold this reconcile up).
    if (split.bridgeSeeded !== undefined) void this.deps.hooks?.bridgeSetsLoaded([...desired.networks.keys()]).catch(() => undefined);
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
            bridgeTables: [bridgeTableName(this.deps.namespacePrefix)],
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
   * A table being (re)built is loaded with its guest sets in the same nft run: the shared bridge
   * table with every declared network's, a namespace's table with its network's. The bridge table
   * loads beside the per-network plans (it names links without needing them); its script is made
   * here and handed to the host's nft batcher in the same tick, so a guest set written meanwhile by
   * NetworkServices lands after it, never under it.
   */
  private splitHostTables(desired: DesiredState, p: Plan): Split {
    const split: Split = { host: p.host, bridgeSeeded: undefined, seeded: new Map() };
    const guestsOf = this.deps.guestsOf;
    const build = p.host.find((s) => s.kind === 'nft' && !s.script.startsWith('delete'));
    if (build?.kind === 'nft') {
      const seeded = new Map<string, Set<string>>();
      let elements = '';
      for (const d of desired.networks.values()) {
        const guests = guestsOf?.(d.id) ?? [];
        seeded.set(d.id, new Set(guests.map(guestKey)));
        elements += renderBridgeGuestElements(d.bridgeTable, d.id, guests);
      }
      split.host = [{ ...build, script: build.script + elements }];
      split.bridgeSeeded = seeded;
    }
    for (const np of p.networks) {
      if (guestsOf === undefined || !desired.networks.has(np.network)) continue;
      np.steps = np.steps.map((s): Step => {
        if (s.kind !== 'nft' || s.script.startsWith('delete')) return s;
        const guests = guestsOf(np.network);
        split.seeded.set(np.network, new Set(guests.map(guestKey)));
        return { ...s, script: s.script + renderInnerGuestElements(guests) };
      });
    }
    return split;
  }

  /**
   * The plans, with the bridge table loaded beside them. When the bridge table fails, no network of
   * the run serves (a new one is rolled back whole): the kernel keeps the table it had.
   */
  private async applyPlans(p: Plan, split: Split): Promise<{ results: NetworkResult[]; hostFailed: boolean }> {
    const exec = this.exec;
    let hostFailed: ImdsError | undefined;
    const hostPhase = (async () => {
      for (const step of split.host) {
        try {
          await runStep(exec, step);
        } catch (err) {
          hostFailed = err instanceof ImdsError ? err : new ImdsError('INTERNAL', messageOf(err), { cause: err });
          return;
        }
      }
    })();
    const results = await mapLimit(p.networks, this.deps.concurrency ?? 4, (np) => applyNetworkPlan(exec, np, this.deps.log));
    await hostPhase;
    const failed = hostFailed;
    const final = await Promise.all(
      results.map(async (r, i) => {
        const np = p.networks[i] as NetworkPlan;
        if (failed === undefined) return { ...r, stepsRun: r.stepsRun + split.host.length };
        if (np.fresh && r.ok) for (const step of np.rollback) await runStep(exec, step).catch(() => undefined);
        return { ...r, ok: false, error: failed };
      }),
    );
    return { results: final, hostFailed: failed !== undefined };
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
      const bridgeWritten = split.bridgeSeeded?.get(d.id);
      await this.deps.hooks?.converged(d, {
        bridge:
          bridgeWritten !== undefined
            ? { elements: bridgeWritten, written: true }
            : seen(observed.bridgeTables.get(d.bridgeTable)?.sets.get(d.bridgeSet)),
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

/** The steps planned for each network that had any, the shared bridge table's first (it counts for every network of the run). */
function appliedSteps(p: Plan, split: Split): Map<string, AppliedStep[]> {
  const applied = new Map<string, AppliedStep[]>();
  for (const np of p.networks) {
    const host = split.host;
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
