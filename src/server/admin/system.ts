// The daemon itself: health and status (under /v1, in the OpenAPI document), and the two documents
// served beside the API (Prometheus metrics and the OpenAPI document itself, hidden from it).
import { z } from 'zod';
import type { AdminDeps, AdminPlugin, AdminRouter } from './deps.ts';
import { networkView } from './schemas.ts';
import { networkViews } from './views.ts';

/** Registered with the prefix /v1. */
export const systemRoutes: AdminPlugin = (app, { deps }, done) => {
  health(app, deps);
  status(app, deps);
  done();
};

/** Registered without a prefix: /metrics and /openapi.json are not versioned API routes. */
export const documentRoutes: AdminPlugin = (app, { deps }, done) => {
  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    const body = await deps.metrics.registry.metrics();
    return reply.header('content-type', deps.metrics.registry.contentType).send(body);
  });
  app.get('/openapi.json', { schema: { hide: true } }, () => app.swagger());
  done();
};

const healthView = z.object({
  status: z.enum(['ok', 'degraded']),
  networks: z.object({ serving: z.number(), degraded: z.number() }),
  vms: z.number(),
});

function health(app: AdminRouter, deps: AdminDeps): void {
  const { inventory } = deps;
  app.get('/health', { schema: { tags: ['daemon'], summary: 'Liveness and a summary', response: { 200: healthView } } }, () => {
    const states = inventory.networkList().map((n) => deps.statusOf(n.id)?.state ?? 'pending');
    const degraded = states.filter((s) => s !== 'serving').length;
    return {
      status: degraded === 0 ? ('ok' as const) : ('degraded' as const),
      networks: { serving: states.length - degraded, degraded },
      vms: inventory.vmCount(),
    };
  });
}

const statusView = z.object({ daemon: z.record(z.string(), z.unknown()), networks: z.array(networkView), vms: z.number() });

function status(app: AdminRouter, deps: AdminDeps): void {
  app.get(
    '/status',
    { schema: { tags: ['daemon'], summary: 'Daemon state and every network with its state', response: { 200: statusView } } },
    () => ({ daemon: deps.info(), networks: networkViews(deps), vms: deps.inventory.vmCount() }),
  );
}
