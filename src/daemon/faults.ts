// Fault injection, for tests only (documented in docs/architecture.md): set by environment
// variables, off unless set.
//   IMDS_FAULT_PAUSE_MID_BATCH_MS    the store pauses half-way through a batch of two VMs or more
//                                    (the crash-consistency test kills the daemon there)
//   IMDS_FAULT_PAUSE_BEFORE_READY_MS the start pauses just before `ready` (the signal tests)
//   IMDS_FAULT_SUCCESSOR_FAILS=1     a daemon started by a hand-over (`imds restart`) fails before
//                                    it is ready (the failed hand-over test)
//   IMDS_FAULT_NO_DRIFT_REPAIR=1     drift repair is paused once ready: kernel damage stays (the
//                                    doctor test breaks hops the daemon would repair within ms)
import { writeSync } from 'node:fs';
import { ImdsError } from '../errors.ts';

export interface Faults {
  /** For SqliteStore: called half-way through a batch. */
  midBatchHook: ((written: number, total: number) => void) | undefined;
  /** Awaited just before the daemon says it is ready. */
  beforeReady(): Promise<void>;
  /** Drift repair is paused once the daemon is ready. */
  noDriftRepair: boolean;
}

export function faultsFromEnv(env: NodeJS.ProcessEnv = process.env): Faults {
  const batchPauseMs = Number(env['IMDS_FAULT_PAUSE_MID_BATCH_MS'] ?? 0);
  const readyPauseMs = Number(env['IMDS_FAULT_PAUSE_BEFORE_READY_MS'] ?? 0);
  return {
    noDriftRepair: env['IMDS_FAULT_NO_DRIFT_REPAIR'] === '1',
    midBatchHook:
      batchPauseMs > 0
        ? (written, total) => {
            writeSync(2, `imds-fault: batch half written (${written} of ${total} VMs), pausing\n`);
            Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, batchPauseMs);
          }
        : undefined,
    beforeReady: async () => {
      if (readyPauseMs <= 0) return;
      writeSync(2, 'imds-fault: pausing before ready\n');
      await new Promise((resolve) => setTimeout(resolve, readyPauseMs));
    },
  };
}

/** Throws when this daemon is a hand-over's successor and the fault says it must fail. */
export function failAsSuccessor(isSuccessor: boolean, env: NodeJS.ProcessEnv = process.env): void {
  if (isSuccessor && env['IMDS_FAULT_SUCCESSOR_FAILS'] === '1')
    throw new ImdsError('INTERNAL', 'imds-fault: this daemon was started by a hand-over and fails before it is ready');
}
