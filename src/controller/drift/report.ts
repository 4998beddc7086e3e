// The one place a repair of kernel drift is logged and counted, whoever did it: the drift watch's
// scheduler (plan steps of a targeted reconcile) or NetworkServices (guest sets rewritten). Tests
// and operators read these lines: `repaired kernel drift` with `noticed`, `wrong`, `done`, `kinds`.
import type { Logger } from '../../log.ts';
import type { Stats } from '../../stats.ts';
import type { StepTarget } from '../plan.ts';

/** What a repair fixed, for the log and the repairs metric: a plan step's target, or a guest set. */
export type RepairKind = StepTarget | 'guest_set';

export interface RepairReport {
  /** What was noticed (the causes). */
  noticed: string[];
  /** What was wrong (the plan steps' reasons, or the sets' differences). */
  wrong: string[];
  /** What was done. */
  done: string[];
  kinds: RepairKind[];
}

/** Where repairs are reported (RepairLog; a fake in tests). */
export interface RepairReporter {
  repaired(network: string, report: RepairReport, ms: number): void;
}

export interface RepairFailure {
  noticed: string[];
  /** What the plan found wrong (when it got that far). */
  wrong?: string[];
  err: string;
  retry_in_ms: number;
}

export class RepairLog implements RepairReporter {
  private readonly log: Logger;
  private readonly stats: Stats;

  constructor(deps: { log: Logger; stats: Stats }) {
    this.log = deps.log;
    this.stats = deps.stats;
  }

  /** A repair, logged once and counted once per kind. */
  repaired(network: string, report: RepairReport, ms: number): void {
    for (const kind of report.kinds) this.stats.repaired(network, kind);
    this.log.warn({ network, ...report, ms: Math.round(ms) }, 'repaired kernel drift');
  }

  /** The repair ran but the network is not serving (the plan failed or conflicts). */
  notRepaired(network: string, failure: RepairFailure): void {
    this.stats.repairFailed(network);
    this.log.error({ network, ...failure }, 'kernel drift not repaired');
  }

  /** The repair itself failed (an error before a result). */
  checkFailed(network: string, failure: RepairFailure): void {
    this.stats.repairFailed(network);
    this.log.error({ network, ...failure }, 'kernel drift check failed');
  }
}

/** The kinds of damage a repair fixed, from the targets of its steps, in order of first appearance. */
export function repairKinds(steps: readonly { target: StepTarget }[]): RepairKind[] {
  return [...new Set(steps.map((s) => s.target))];
}
