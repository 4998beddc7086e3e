// The daemon's guest side: the guards (tokens, rate limit), the listeners of every network's
// namespace, the fast path in front of them, and the Fastify app behind. The app and its framework
// load only once the sockets are open (a restart serves guests first): requests node:http receives
// before are held and answered when it is ready.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import { RateLimiter } from '../security/rate-limit.ts';
import { TokenKeys } from '../security/tokens.ts';
import { createFastPath } from '../server/fast-path.ts';
import type { GuestGuard } from '../server/guest-guard.ts';
import type { ListenSockets } from '../server/listen-sockets.ts';
import { NetnsListeners, type RequestHandler } from '../server/listeners.ts';
import type { Stats } from '../stats.ts';
import type { Inventory } from '../store/inventory.ts';

export interface GuestSide {
  guard: GuestGuard;
  listeners: NetnsListeners;
  /** Loads the Fastify app and answers what was held; returns the app (closed on stop). */
  loadApp(): Promise<{ close(): Promise<void> }>;
}

export function buildGuestSide(cfg: Config, inventory: Inventory, sockets: ListenSockets, stats: Stats, log: Logger): GuestSide {
  const guard: GuestGuard = {
    tokens: TokenKeys.load(cfg.state_dir),
    limiter:
      cfg.rate_limit_per_second > 0 ? new RateLimiter({ perSecond: cfg.rate_limit_per_second, burst: cfg.rate_limit_burst }) : undefined,
    stats,
  };
  let appHandler: RequestHandler | undefined;
  const held: [IncomingMessage, ServerResponse][] = [];
  const handler: RequestHandler = (req, res) => {
    if (appHandler === undefined) held.push([req, res]);
    else appHandler(req, res);
  };
  const front = cfg.fast_path
    ? createFastPath({
        index: () => inventory.index,
        password: (id) => inventory.password(id),
        log,
        stats,
        headersTimeoutMs: cfg.headers_timeout_ms,
        guard,
        keepAliveTimeoutMs: cfg.keep_alive_timeout_ms,
      })
    : undefined;
  const timeouts = {
    requestTimeoutMs: cfg.request_timeout_ms,
    headersTimeoutMs: cfg.headers_timeout_ms,
    keepAliveTimeoutMs: cfg.keep_alive_timeout_ms,
  };
  const listeners = new NetnsListeners(handler, sockets, timeouts, log, front);
  return {
    guard,
    listeners,
    async loadApp() {
      const { buildMetadataApp } = await import('../server/metadata-app.ts');
      const { app, handler: fastifyHandler } = await buildMetadataApp({
        index: () => inventory.index,
        passwords: inventory,
        log,
        stats,
        guard,
      });
      appHandler = fastifyHandler;
      for (const [req, res] of held.splice(0)) fastifyHandler(req, res);
      return app;
    },
  };
}
