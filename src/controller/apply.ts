// Executes plans through the Runner. Steps of one network run in order and stop at the first
// failure; a network that was new is rolled back so no half-built network stays behind.
import { ImdsError, messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Runner } from '../netns/run.ts';
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
      return { argv: ['nft', '-f', '-'], stdin: step.script, netns: step.netns };
  }
}

export async function runStep(runner: Runner, step: Step): Promise<void> {
  const { argv, stdin, netns } = commandOf(step);
  await runner.run(argv, { ...(stdin === undefined ? {} : { stdin }), ...(netns === undefined ? {} : { netns }) });
}

/**
 * The steps as they run: a namespace creation joins the host batch that follows it (`netns add` is
 * an `ip` command; it must run in the daemon's own mount namespace, which `ip -batch` without `-n`
 * does), and the namespace's own `ip` batch and its nft table, which need only the namespace, run
 * side by side. Each stage is a list of steps run concurrently.
 */
export function stagesOf(steps: readonly Step[]): Step[][] {
  const merged: Step[] = [];
  for (let i = 0; i < steps.length; i++) {
    const step = steps[i] as Step;
    const next = steps[i + 1];
    if (step.kind === 'netns-add' && next?.kind === 'ip' && next.netns === undefined) {
      merged.push({ ...next, lines: [`netns add ${step.netns}`, ...next.lines], why: `namespace missing, ${next.why}` });
      i++;
    } else {
      merged.push(step);
    }
  }
  const stages: Step[][] = [];
  for (const step of merged) {
    const last = stages[stages.length - 1];
    const inside = (s: Step): boolean => (s.kind === 'nft' || (s.kind === 'ip' && s.netns !== undefined));
    if (last !== undefined && inside(step) && last.every(inside) && last.every((s) => s.kind !== step.kind && 'netns' in s && s.netns === step.netns)) {
      last.push(step);
    } else {
      stages.push([step]);
    }
  }
  return stages;
}

export async function applyNetworkPlan(runner: Runner, np: NetworkPlan, log?: Logger): Promise<NetworkResult> {
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
      await Promise.all(stage.map((step) => runStep(runner, step)));
      stepsRun += stage.length;
    }
    return { network: np.network, ok: true, error: undefined, stepsRun, ms: performance.now() - started };
  } catch (err) {
    const error = err instanceof ImdsError ? err : new ImdsError('INTERNAL', messageOf(err), { cause: err });
    if (np.fresh) {
      for (const step of np.rollback) {
        await runStep(runner, step).catch((e: unknown) => log?.debug({ network: np.network, err: messageOf(e) }, 'rollback step failed'));
      }
      log?.warn({ network: np.network }, 'new network rolled back after a failure');
    }
    return { network: np.network, ok: false, error, stepsRun, ms: performance.now() - started };
  }
}
