// Where every answered guest request ends, whichever side answered it: the JS fast path
// (fast-path.ts answerHead), the Fastify app (metadata-app.ts onResponse) and the native loop (its
// records, drained by native-plane.ts every 50 ms). From here: the debug line (`msg: request`), the
// access log (access-log.ts) and the info line about callers that are no VM (unknown-callers.ts).
import type { Logger } from '../log.ts';
import { METADATA_IP } from '../model/names.ts';
import type { AccessLog, RequestRecord } from './access-log.ts';
import type { UnknownCallerLog } from './unknown-callers.ts';

/** What the native loop records for us (native/dp.h DP_LOG_*). */
export const NATIVE_LOG = { off: 0, unknownCallers: 1, all: 2 } as const;

export class RequestLog {
  private readonly log: Logger;
  readonly access: AccessLog | undefined;
  private readonly unknown: UnknownCallerLog | undefined;

  constructor(log: Logger, access?: AccessLog, unknown?: UnknownCallerLog) {
    this.log = log.child({ component: 'metadata' });
    this.access = access;
    this.unknown = unknown;
  }

  /** True when every request is wanted (debug or the access log); else only those of callers that are no VM. */
  get all(): boolean {
    return this.access?.on === true || this.log.isLevelEnabled('debug');
  }

  /** What the native loop must record. */
  nativeMode(): 0 | 1 | 2 {
    if (this.all) return NATIVE_LOG.all;
    return this.unknown === undefined ? NATIVE_LOG.off : NATIVE_LOG.unknownCallers;
  }

  /** Whether the caller of a request (a VM or not) needs a record: callers that are no VM always do. */
  wants(isVm: boolean): boolean {
    return !isVm || this.all;
  }

  /** One answered request; `how` marks the side that answered in the debug line (`native`, `fast`). */
  completed(r: RequestRecord, how?: 'native' | 'fast'): void {
    if (this.log.isLevelEnabled('debug')) {
      const ms = Math.round(r.ms * 100) / 100;
      const line = { network: r.network, vm: r.vm, src: r.src, method: r.method, path: r.path, status: r.status, ms };
      this.log.debug(how === undefined ? line : { ...line, [how]: true }, 'request');
    }
    this.access?.write(r);
    // The daemon's own probes (169.254.169.254) and rate-limited callers are not reported.
    if (r.vm === undefined && r.src !== METADATA_IP && r.status !== 429) this.unknown?.seen(r.network, r.src, r.method, r.path, r.status);
  }
}
