// The targeted repair the scheduler runs for one network: a reconcile of that network only
// (observe, plan, apply the difference), then the ports of a bridge it had to recreate put back.
// When every cause is about guest sets, only the sets are compared with the VMs (and rewritten,
// and reported, by NetworkServices).
import { messageOf } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import type { ReconcileSummary } from '../reconciler.ts';
import { describeCause, needsReconcile, type Cause, type GuestSetPlace } from './causes.ts';
import { repairKinds } from './report.ts';
import type { RepairOutcome } from './scheduler.ts';

/** The guest sets' keeper (NetworkServices): compares a place's sets with the VMs, rewrites and reports them when they differ. */
export interface GuestSetChecker {
  checkGuestSets(network: string, place: GuestSetPlace, noticed: string[]): Promise<unknown>;
}

export interface RepairDeps {
  /** A reconcile of this network only. */
  reconcile(network: string): Promise<ReconcileSummary>;
  guestSets: GuestSetChecker;
  /** The network's bridge, if it is declared. */
  bridgeOf(network: string): string | undefined;
  /** The ports last seen on a bridge. */
  portsOf(bridge: string): string[];
  /** Puts those of `ports` that exist and are on no bridge back on `bridge`; returns them. */
  reattach(bridge: string, ports: string[]): Promise<string[]>;
  log: Logger;
}

export function repairNetwork(deps: RepairDeps): (network: string, causes: readonly Cause[]) => Promise<RepairOutcome> {
  return async (network, causes) => {
    if (!causes.some(needsReconcile)) {
      const noticed = causes.map(describeCause);
      const places = new Set(causes.flatMap((c) => (c.kind === 'guest-set-changed' ? [c.place] : [])));
      for (const place of places) await deps.guestSets.checkGuestSets(network, place, noticed);
      return { state: 'serving', report: undefined };
    }
    const summary = await deps.reconcile(network);
    const steps = summary.applied.get(network) ?? [];
    const status = summary.networks.find((n) => n.network === network);
    if (status === undefined) return { state: 'gone' };
    const wrong = steps.map((s) => s.why);
    if (status.state !== 'serving') return { state: 'degraded', wrong, reason: status.reason ?? 'not serving' };
    if (steps.length === 0) return { state: 'serving', report: undefined };
    const done = steps.map((s) => `${s.kind} in ${s.where}`);
    const bridge = deps.bridgeOf(network);
    if (bridge !== undefined && steps.some((s) => s.createsBridge === true)) {
      const back = await deps.reattach(bridge, deps.portsOf(bridge)).catch((err: unknown) => {
        deps.log.error({ network, err: messageOf(err) }, 'cannot put the ports back on the recreated bridge');
        return [];
      });
      if (back.length > 0) done.push(`ports back on ${bridge}: ${back.join(' ')}`);
    }
    return { state: 'serving', report: { wrong, done, kinds: repairKinds(steps) } };
  };
}
