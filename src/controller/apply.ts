// Executes plans through the Runner. Steps of one network run in order and stop at the first
// failure; a network that was new is rolled back so no half-built network stays behind.
import { ImdsError, messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { inNetns, type Runner } from '../netns/run.ts';
import type { NetworkPlan, Step } from './plan.ts';

export interface NetworkResult {
  network: string;
  ok: boolean;
  error: ImdsError | undefined;
  stepsRun: number;
  ms: number;
}

export function commandOf(step: Step): { argv: string[]; stdin?: string } {
  switch (step.kind) {
    case 'netns-add':
      return { argv: ['ip', 'netns', 'add', step.netns] };
    case 'netns-del':
      return { argv: ['ip', 'netns', 'del', step.netns] };
    case 'ip':
      return {
        argv: step.netns === undefined ? ['ip', '-batch', '-'] : ['ip', '-n', step.netns, '-batch', '-'],
        stdin: `${step.lines.join('\n')}\n`,
      };
    case 'nft':
      return { argv: inNetns(step.netns, ['nft', '-f', '-']), stdin: step.script };
  }
}

export async function runStep(runner: Runner, step: Step): Promise<void> {
  const { argv, stdin } = commandOf(step);
  await runner.run(argv, stdin === undefined ? {} : { stdin });
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
    for (const step of np.steps) {
      await runStep(runner, step);
      stepsRun++;
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
