// Removes everything imds owns in this hypervisor namespace: the DHCP servers it started (by pid
// file) and their files, namespaces and the bridge table with the prefix, and links carrying the imds
// owner mark. Used by `imds down`; the daemon must not be running.
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { dhcpPaths } from '../dhcp/dnsmasq-config.ts';
import { stopByPidFile } from '../dhcp/dhcp-servers.ts';
import { ImdsError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Runner } from '../netns/run.ts';
import { applyNetworkPlan } from './apply.ts';
import { desiredState } from './desired.ts';
import { observe } from './observe.ts';
import { planBridgeTable, planRemovals, type NetworkPlan } from './plan.ts';

export interface TeardownResult {
  /** Networks whose namespace, links or (an older imds's) bridge table were removed. */
  removed: string[];
  /** The bridge table all networks shared, when it was there. */
  tables: string[];
  /** pids of DHCP servers (dnsmasq) that were still running and were stopped. */
  stopped: number[];
  failed: { network: string; error: string }[];
}

export interface TeardownOptions {
  namespacePrefix: string;
  dhcpDir: string;
}

/** The removals of every network's objects, and the shared bridge table's removal (a plan named after the table). */
export async function plannedTeardown(runner: Runner, namespacePrefix: string): Promise<{ networks: NetworkPlan[]; table: NetworkPlan[] }> {
  const desired = desiredState({ namespacePrefix, listenPort: 1, networks: [] });
  const observed = await observe(runner, { namespacePrefix, lookInto: [] });
  const table = planBridgeTable(desired, observed).map((step): NetworkPlan => ({
    network: step.network,
    steps: [step],
    fresh: false,
    rollback: [],
    conflict: undefined,
  }));
  return { networks: planRemovals(desired, observed), table };
}

/** Stops the DHCP servers a daemon left running and removes dhcp_dir. */
export async function stopDhcpServers(dhcpDir: string, log?: Logger): Promise<number[]> {
  let networks: string[];
  try {
    networks = readdirSync(dhcpDir);
  } catch {
    return [];
  }
  const stopped: number[] = [];
  for (const network of networks) {
    const pid = await stopByPidFile(dhcpPaths(dhcpDir, network).pid, log);
    if (pid !== undefined) stopped.push(pid);
    rmSync(join(dhcpDir, network), { recursive: true, force: true });
  }
  rmSync(dhcpDir, { recursive: true, force: true });
  return stopped;
}

/** Any process still inside a namespace about to go (it would keep the namespace alive unseen). */
async function killInside(runner: Runner, netns: string, log?: Logger): Promise<void> {
  const out = await runner.run(['ip', 'netns', 'pids', netns], { allowFailure: true });
  for (const pid of out.stdout.split(/\s+/).filter(Boolean).map(Number)) {
    if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) continue;
    log?.warn({ pid, netns }, 'killing a process left inside the namespace');
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

export async function teardown(runner: Runner, options: TeardownOptions, log?: Logger): Promise<TeardownResult> {
  const stopped = await stopDhcpServers(options.dhcpDir, log);
  const { networks, table } = await plannedTeardown(runner, options.namespacePrefix);
  const result: TeardownResult = { removed: [], tables: [], stopped, failed: [] };
  for (const removal of [...table, ...networks]) {
    for (const step of removal.steps) if (step.kind === 'netns-del') await killInside(runner, step.netns, log);
    const r = await applyNetworkPlan(runner, removal, log);
    if (r.ok) (table.includes(removal) ? result.tables : result.removed).push(removal.network);
    else result.failed.push({ network: removal.network, error: r.error?.message ?? 'unknown' });
  }
  if (result.failed.length > 0) {
    throw new ImdsError('COMMAND_FAILED', `teardown incomplete: ${result.failed.map((f) => `${f.network}: ${f.error}`).join('; ')}`, {
      details: { ...result },
    });
  }
  return result;
}
