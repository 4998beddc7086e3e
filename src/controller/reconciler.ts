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
import { applyNetworkPlan, runStep } from './apply.ts';
import { desiredState } from './desired.ts';
import type { NetworkHooks } from './network-services.ts';
import { GUEST_SET, guestKey, renderGuestElements, renderInnerGuestElements, type GuestAddress } from '../netns/nft.ts';
import { listNamespaces, observe } from './observe.ts';
import { plan, planNetwork, type Plan, type Step } from './plan.ts';

export interface NetworkStatus {
  network: string;
  state: 'serving' | 'degraded';
  reason: string | undefined;
  /** Steps applied in the last reconcile. */
  changed: number;
}

/** A step as it was applied: what kind, where (`host` or the namespace), and why. */
export interface AppliedStep {
  kind: 'netns-add' | 'netns-del' | 'ip' | 'nft';
  where: string;
  why: string;
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
    const desired = desiredState({ namespacePrefix: this.deps.namespacePrefix, listenPort: this.deps.listenPort, networks });
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

  private async run(networks: readonly Network[], only: readonly string[] | undefined): Promise<ReconcileSummary> {
    const { runner, listeners, log } = this.deps;
    const exec = { runner, hostNft: this.deps.hostNft };
    const started = performance.now();
    const desired = desiredState({ namespacePrefix: this.deps.namespacePrefix, listenPort: this.deps.listenPort, networks });
    const targets = [...desired.networks.values()].filter((d) => only === undefined || only.includes(d.id));

    // Serve at once wherever the namespace is already there (restart, reload).
    await this.listenExisting(networks.filter((n) => only === undefined || only.includes(n.id)));

    const observed = await observe(runner, {
      namespacePrefix: this.deps.namespacePrefix,
      lookInto: targets.map((d) => d.netns),
      ...(only === undefined
        ? {}
        : {
            hostLinks: targets.flatMap((d) => [d.bridge, d.outer, ...(d.uplink === undefined ? [] : [d.uplink])]),
            bridgeTables: targets.map((d) => d.bridgeTable.name),
          }),
    });
    const p: Plan = only === undefined ? plan(desired, observed) : { removals: [], networks: targets.map((d) => planNetwork(d, observed)) };

    // A socket pins its namespace: close it before the namespace is removed or rebuilt. Services
    // running inside (dnsmasq) stop too.
    const hooks = this.deps.hooks;
    for (const network of listeners.networks()) {
      if (only !== undefined && !only.includes(network)) continue;
      const d = desired.networks.get(network);
      const rebuilt = p.networks.find((np) => np.network === network)?.steps.some((s) => s.kind === 'netns-add') ?? false;
      if (d === undefined || rebuilt || listeners.netnsOf(network) !== d.netns) await listeners.close(network);
    }
    for (const np of p.networks) {
      if (np.steps.some((s) => s.kind === 'netns-add')) await hooks?.stopping(np.network, { removed: false });
    }
    for (const removal of p.removals) await hooks?.stopping(removal.network, { removed: true });

    const removed: string[] = [];
    const removalFailures: { network: string; error: string }[] = [];
    // Removals are independent of each other: run them like builds, a few at a time (their
    // bridge-table deletes share nft runs).
    const removalResults = await mapLimit(p.removals, this.deps.concurrency ?? 4, (removal) => applyNetworkPlan(exec, removal, log));
    for (const [i, removal] of p.removals.entries()) {
      const result = removalResults[i] as Awaited<ReturnType<typeof applyNetworkPlan>>;
      if (result.ok) {
        removed.push(removal.network);
        this.status.delete(removal.network);
        log.info({ network: removal.network, steps: result.stepsRun, ms: round(result.ms) }, 'network removed');
      } else {
        removalFailures.push({ network: removal.network, error: result.error?.message ?? 'unknown' });
        log.error({ network: removal.network, err: result.error?.message }, 'network removal failed');
      }
    }
    for (const id of [...this.status.keys()]) if (!desired.networks.has(id)) this.status.delete(id);

    // A table being (re)built is loaded with its guest sets in the same nft run. The hypervisor
    // namespace's tables leave the per-network plans to load all in one go, beside them: every nft
    // run there costs time in proportion to the tables already present (nft reads them all), so a
    // start that builds N networks makes one run, not N/4. They name links without needing them.
    const seeded = new Map<string, Set<string>>();
    const hostTables = new Map<string, Step[]>();
    for (const np of p.networks) {
      const d = desired.networks.get(np.network);
      const guests = d === undefined ? undefined : this.deps.guestsOf?.(np.network);
      const steps = np.steps.map((s) => {
        if (d === undefined || guests === undefined || s.kind !== 'nft' || s.script.startsWith('delete')) return s;
        seeded.set(np.network, new Set(guests.map(guestKey)));
        return {
          ...s,
          script: s.script + (s.netns === undefined ? renderGuestElements(d.bridgeTable.name, guests) : renderInnerGuestElements(guests)),
        };
      });
      const host = steps.filter((s) => s.kind === 'nft' && s.netns === undefined);
      if (host.length > 0) hostTables.set(np.network, host);
      np.steps = steps.filter((s) => !host.includes(s));
    }
    const hostFailed = new Map<string, ImdsError>();
    const hostPhase = Promise.all(
      [...hostTables].map(async ([network, steps]) => {
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
    const applied0 = await mapLimit(p.networks, this.deps.concurrency ?? 4, (np) => applyNetworkPlan(exec, np, log));
    await hostPhase;
    // A network whose bridge table failed is not serving; a new one is rolled back whole.
    const results = await Promise.all(
      applied0.map(async (r, i) => {
        const np = p.networks[i] as (typeof p.networks)[number];
        const failed = hostFailed.get(r.network);
        if (failed === undefined) return { ...r, stepsRun: r.stepsRun + (hostTables.get(r.network)?.length ?? 0) };
        if (np.fresh && r.ok) for (const step of np.rollback) await runStep(exec, step).catch(() => undefined);
        return { ...r, ok: false, error: failed };
      }),
    );
    // Networks come up together: their guest-set writes share nft runs (see NftBatcher).
    const reasons = await Promise.all(
      results.map(async (result): Promise<string | undefined> => {
        const d = desired.networks.get(result.network);
        if (!result.ok || d === undefined) return result.error?.message;
        try {
          await listeners.listen(d.id, d.netns);
          const np = p.networks.find((n) => n.network === d.id);
          const replaced = (netns: string | undefined): boolean =>
            netns === undefined ? hostTables.has(d.id) : (np?.steps.some((s) => s.kind === 'nft' && s.netns === netns) ?? false);
          const rebuilt = np?.steps.some((s) => s.kind === 'netns-add') ?? false;
          const written = seeded.get(d.id) ?? new Set<string>();
          await hooks?.converged(d, {
            bridge: replaced(undefined) ? written : observed.bridgeTables.get(d.bridgeTable.name)?.sets.get(GUEST_SET),
            inner: replaced(d.netns) || rebuilt ? written : observed.inside.get(d.netns)?.table?.sets.get(GUEST_SET),
          });
          return undefined;
        } catch (err) {
          return messageOf(err);
        }
      }),
    );
    for (const [i, result] of results.entries()) {
      const reason = reasons[i];
      const status: NetworkStatus = {
        network: result.network,
        state: reason === undefined ? 'serving' : 'degraded',
        reason,
        changed: result.stepsRun,
      };
      this.status.set(result.network, status);
      if (reason !== undefined) log.error({ network: result.network, err: reason }, 'network not serving');
      else if (result.stepsRun > 0)
        log.info({ network: result.network, steps: result.stepsRun, ms: round(result.ms) }, 'network converged');
    }
    const applied = new Map<string, AppliedStep[]>();
    for (const np of p.networks) {
      if (np.steps.length === 0 && !hostTables.has(np.network)) continue;
      applied.set(
        np.network,
        [...(hostTables.get(np.network) ?? []), ...np.steps].map((s) => ({
          kind: s.kind,
          where: s.kind === 'netns-add' || s.kind === 'netns-del' ? s.netns : (s.netns ?? 'host'),
          why: s.why,
        })),
      );
    }
    const summary: ReconcileSummary = {
      networks: results.map((r) => this.status.get(r.network) as NetworkStatus),
      applied,
      removed,
      removalFailures,
      ms: round(performance.now() - started),
    };
    log.debug({ ms: summary.ms }, 'reconcile done');
    this.deps.onResult?.(summary);
    return summary;
  }
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
