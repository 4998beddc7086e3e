// Removes everything imds owns in this hypervisor namespace: namespaces with the prefix and links
// carrying the imds owner mark. Used by `imds down`; the daemon must not be running.
import { ImdsError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Runner } from '../netns/run.ts';
import { applyNetworkPlan } from './apply.ts';
import { desiredState } from './desired.ts';
import { observe } from './observe.ts';
import { planRemovals, type NetworkPlan } from './plan.ts';

export interface TeardownResult {
  removed: string[];
  failed: { network: string; error: string }[];
}

export async function plannedTeardown(runner: Runner, namespacePrefix: string): Promise<NetworkPlan[]> {
  const desired = desiredState({ namespacePrefix, listenPort: 1, networks: [] });
  const observed = await observe(runner, { namespacePrefix, lookInto: [] });
  return planRemovals(desired, observed);
}

export async function teardown(runner: Runner, namespacePrefix: string, log?: Logger): Promise<TeardownResult> {
  const removals = await plannedTeardown(runner, namespacePrefix);
  const result: TeardownResult = { removed: [], failed: [] };
  for (const removal of removals) {
    const r = await applyNetworkPlan(runner, removal, log);
    if (r.ok) result.removed.push(removal.network);
    else result.failed.push({ network: removal.network, error: r.error?.message ?? 'unknown' });
  }
  if (result.failed.length > 0) {
    throw new ImdsError('COMMAND_FAILED', `teardown incomplete: ${result.failed.map((f) => `${f.network}: ${f.error}`).join('; ')}`, {
      details: { ...result },
    });
  }
  return result;
}
