// Time as the drift watch sees it: injected, so the scheduler and the sources are tested with a fake
// clock (no sleeping in unit tests).

export interface Clock {
  /** Milliseconds, monotonic. */
  now(): number;
  setTimeout(fn: () => void, ms: number): Timer;
  clearTimeout(timer: Timer): void;
}

/** An opaque timer handle. */
export interface Timer {
  readonly __timer?: never;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms) as Timer,
  clearTimeout: (timer) => clearTimeout(timer as NodeJS.Timeout),
};
