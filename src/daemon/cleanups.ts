// What start acquired, released in reverse order on stop or on a failed start; a failing step
// does not keep the others from running. Each step has a name, logged (debug) with its duration,
// so a stop that hangs says where.
import { messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';

export class Cleanups {
  private readonly steps: { name: string; step: () => void | Promise<void> }[] = [];
  private log: Logger | undefined;

  constructor(log?: Logger) {
    this.log = log;
  }

  add(name: string, step: () => void | Promise<void>): void {
    this.steps.push({ name, step });
  }

  async run(): Promise<void> {
    for (const { name, step } of this.steps.splice(0).reverse()) {
      const started = performance.now();
      this.log?.debug({ step: name }, 'stopping: releasing');
      await Promise.resolve()
        .then(step)
        .catch((err: unknown) => this.log?.warn({ step: name, err: messageOf(err) }, 'stopping: a step failed; going on'));
      this.log?.debug({ step: name, ms: Math.round(performance.now() - started) }, 'stopping: released');
    }
  }
}
