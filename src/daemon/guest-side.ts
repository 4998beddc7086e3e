// The daemon's guest side: the guards (tokens, rate limit), the listeners of every network's
// namespace, what answers first (the native data plane's loop, or with `data_plane: node` the JS
// fast path), and the Fastify app behind. The app and its framework
// load only once the sockets are open (a restart serves guests first): requests node:http receives
// before are held and answered when it is ready.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import { callerLimiter, RateLimiter, type BucketState } from '../security/rate-limit.ts';
import { TokenKeys } from '../security/tokens.ts';
import { createFastPath } from '../server/fast-path.ts';
import type { GuestGuard } from '../server/guest-guard.ts';
import type { ListenSockets } from '../server/listen-sockets.ts';
import { NetnsListeners, type RequestHandler } from '../server/listeners.ts';
import { NativePlane } from '../server/native-plane.ts';
import { namespaceName } from '../model/names.ts';
import { neighbourMac } from '../netns/neighbours.ts';
import { AccessLog } from '../server/access-log.ts';
import { RequestLog } from '../server/request-log.ts';
import { UnknownCallerLog } from '../server/unknown-callers.ts';
import type { Stats } from '../stats.ts';
import type { Inventory } from '../store/inventory.ts';
import type { MetadataIndex } from '../store/metadata-index.ts';
import { ContactFile } from './contact-file.ts';

export interface GuestSide {
  guard: GuestGuard;
  listeners: NetnsListeners;
  /** The native data plane, when `data_plane: native`. */
  native: NativePlane | undefined;
  /** The access log; `configure` it on reload (a file is reopened). */
  accessLog: AccessLog;
  /** The inventory's index changed (in `networks`; anywhere when undefined): the native table follows before the change's call returns. */
  indexChanged(index: MetadataIndex, networks?: ReadonlySet<string>): void;
  /** Loads the Fastify app and answers what was held; returns the app (closed on stop). */
  loadApp(): Promise<{ close(): Promise<void> }>;
  /** Per-VM contact persisted in the state directory; `close` it once guests are no longer answered. */
  contacts: ContactFile;
  /** A caller's rate-limit bucket as it is now (nothing taken): `off` without a limit, undefined without a bucket. */
  rateLimitOf(network: string, source: string): BucketState | 'off' | undefined;
}

export function buildGuestSide(cfg: Config, inventory: Inventory, sockets: ListenSockets, stats: Stats, log: Logger): GuestSide {
  const native = cfg.data_plane === 'native' ? new NativePlane() : undefined;
  const limiter =
    cfg.rate_limit_per_second <= 0
      ? undefined
      : (native?.limiter() ?? callerLimiter(new RateLimiter({ perSecond: cfg.rate_limit_per_second, burst: cfg.rate_limit_burst })));
  const guard: GuestGuard = { tokens: TokenKeys.load(cfg.state_dir), limiter, stats };
  const contacts = new ContactFile({ stateDir: cfg.state_dir, stats, exists: (id) => inventory.getVm(id) !== undefined, log });
  contacts.start();
  // Every answered request ends in `requests` (src/server/request-log.ts), whichever side answered.
  const accessLog = new AccessLog(log);
  accessLog.configure(cfg.access_log, cfg.access_log_lines_per_second);
  const unknownCallers = new UnknownCallerLog(log, {
    macOf: (network, address) => neighbourMac(namespaceName(cfg.namespace_prefix, network), address),
  });
  const requests = new RequestLog(log, accessLog, unknownCallers);
  let appHandler: RequestHandler | undefined;
  const held: [IncomingMessage, ServerResponse][] = [];
  const handler: RequestHandler = (req, res) => {
    if (appHandler === undefined) held.push([req, res]);
    else appHandler(req, res);
  };
  // The JS fast path: in front of node:http for every connection (data_plane: node), or for those
  // the native loop hands over (a session token, say).
  const front = cfg.fast_path
    ? createFastPath({
        index: () => inventory.index,
        password: (id) => inventory.password(id),
        log,
        stats,
        headersTimeoutMs: cfg.headers_timeout_ms,
        guard,
        keepAliveTimeoutMs: cfg.keep_alive_timeout_ms,
        requests,
      })
    : undefined;
  const timeouts = {
    requestTimeoutMs: cfg.request_timeout_ms,
    headersTimeoutMs: cfg.headers_timeout_ms,
    keepAliveTimeoutMs: cfg.keep_alive_timeout_ms,
  };
  const listeners = new NetnsListeners(handler, sockets, timeouts, log, front, native);
  if (native !== undefined) {
    native.start({ ...timeouts, ratePerSecond: cfg.rate_limit_per_second, rateBurst: cfg.rate_limit_burst }, (network, fd, bytes) =>
      listeners.adopt(network, fd, bytes),
    );
    native.sync(inventory.index);
    native.logRequests(requests);
    stats.addSource(() => native.drain(stats));
  }
  return {
    guard,
    listeners,
    native,
    accessLog,
    indexChanged: (index, networks) => native?.sync(index, networks),
    contacts,
    rateLimitOf: (network, source) => (limiter === undefined ? 'off' : limiter.peek(network, source)),
    async loadApp() {
      const { buildMetadataApp } = await import('../server/metadata-app.ts');
      const { app, handler: fastifyHandler } = await buildMetadataApp({
        index: () => inventory.index,
        passwords: inventory,
        log,
        stats,
        guard,
        requests,
      });
      appHandler = fastifyHandler;
      for (const [req, res] of held.splice(0)) fastifyHandler(req, res);
      return app;
    },
  };
}
