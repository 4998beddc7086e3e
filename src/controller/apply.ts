// Executes plans through the Runner. Steps of one network run in order and stop at the first
// failure; a network that was new is rolled back so no half-built network stays behind.
import { ImdsError, messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { createNetns } from '../netns/addon.ts';
import type { NftBatcher } from '../netns/nft-batch.ts';
import { NETNS_RUN_DIR, type Runner } from '../netns/run.ts';
import type { NetworkPlan, Step } from './plan.ts';

export interface NetworkResult {
  network: string;
  ok: boolean;
  error: ImdsError | undefined;
  stepsRun: number;
  ms: number;
}

export function commandOf(step: Step): { argv: string[]; stdin?: string; netns?: string } {
  switch (step.kind) {
    case 'netns-add':
      return { argv: ['ip', 'netns', 'add', step.netns] };
    case 'netns-del':
      return { argv: ['ip', 'netns', 'del', step.netns] };
    case 'ip':
      return step.netns === undefined
        ? { argv: ['ip', '-batch', '-'], stdin: `${step.lines.join('\n')}\n` }
        : { argv: ['ip', '-batch', '-'], stdin: `${step.lines.join('\n')}\n`, netns: step.netns };
    case 'nft':
      return step.netns === undefined
        ? { argv: ['nft', '-f', '-'], stdin: step.script }
        : { argv: ['nft', '-f', '-'], stdin: step.script, netns: step.netns };
  }
}

/** How steps run: the Runner, and optionally a batcher for nft in the hypervisor namespace. */
export interface StepRunner {
  runner: Runner;
  hostNft?: NftBatcher | undefined;
}

export async function runStep(exec: StepRunner | Runner, step: Step): Promise<void> {
  const { runner, hostNft } = 'runner' in exec ? exec : { runner: exec, hostNft: undefined };
  if (step.kind === 'nft' && step.netns === undefined && hostNft !== undefined) {
    await hostNft.apply(step.script);
    return;
  }
  // A namespace is created in-process by the addon (what `ip netns add` does, without a process).
  if (step.kind === 'netns-add') {
    try {
      createNetns(NETNS_RUN_DIR, step.netns);
      return;
    } catch (err) {
      throw new ImdsError('COMMAND_FAILED', `cannot create namespace ${step.netns}: ${messageOf(err)}`, {
        details: { netns: step.netns },
        cause: err,
      });
    }
  }
  const { argv, stdin, netns } = commandOf(step);
  const bestEffort = step.kind === 'ip' && step.bestEffort === true;
  await runner.run(argv, {
    ...(stdin === undefined ? {} : { stdin }),
    ...(netns === undefined ? {} : { netns }),
    ...(bestEffort ? { allowFailure: true } : {}),
  });
}

/**
 * The steps as they run, each stage a list run concurrently: an nft table needs only its namespace,
 * so it loads while the host batch builds the bridge and the veth; everything else keeps the plan's
 * order. (The reconciler loads the hypervisor namespace's bridge tables apart, all in one run.)
 */
export function stagesOf(steps: readonly Step[]): Step[][] {
  const stages: Step[][] = [];
  const hostAt = steps.findIndex((s) => s.kind === 'ip' && s.netns === undefined && s.bestEffort !== true);
  const alongside = hostAt === -1 ? [] : steps.filter((s, i) => s.kind === 'nft' && i > hostAt);
  for (const [i, step] of steps.entries()) {
    if (alongside.includes(step)) continue;
    stages.push(i === hostAt ? [step, ...alongside] : [step]);
  }
  return stages;
}

export async function applyNetworkPlan(exec: StepRunner | Runner, np: NetworkPlan, log?: Logger): Promise<NetworkResult> {
  const started = performance.now();
  if (np.conflict !== undefined) {
    return {
      network: np.network,
      ok: false,
      error: new ImdsError('KERNEL_CONFLICT', `network ${np.network}: ${np.conflict}`, { details: { network: np.network } }),
      stepsRun: 0,
      ms: 0,
    };
  }
  let stepsRun = 0;
  try {
    for (const stage of stagesOf(np.steps)) {
      await Promise.all(stage.map((step) => runStep(exec, step)));
      stepsRun += stage.length;
    }
    return { network: np.network, ok: true, error: undefined, stepsRun, ms: performance.now() - started };
  } catch (err) {
    const error = err instanceof ImdsError ? err : new ImdsError('INTERNAL', messageOf(err), { cause: err });
    if (np.fresh) {
      for (const step of np.rollback) {
        await runStep(exec, step).catch((e: unknown) => log?.debug({ network: np.network, err: messageOf(e) }, 'rollback step failed'));
      }
      log?.warn({ network: np.network }, 'new network rolled back after a failure');
    }
    return { network: np.network, ok: false, error, stepsRun, ms: performance.now() - started };
  }
}
