// The daemon itself: health and status (under /v1, in the OpenAPI document), and the two documents
// served beside the API (Prometheus metrics and the OpenAPI document itself, hidden from it).
import { z } from 'zod';
import type { AdminDeps, AdminPlugin, AdminRouter } from './deps.ts';
import { ImdsError } from '../../errors.ts';
import { errorResponses, networkView } from './schemas.ts';
import { networkViews } from './views.ts';

/** Registered with the prefix /v1. */
export const systemRoutes: AdminPlugin = (app, { deps }, done) => {
  health(app, deps);
  status(app, deps);
  reload(app, deps);
  restart(app, deps);
  done();
};

/** Registered without a prefix: /metrics and /openapi.json are not versioned API routes. */
export const documentRoutes: AdminPlugin = (app, { deps }, done) => {
  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    const body = await deps.metrics.render();
    return reply.header('content-type', deps.metrics.registry.contentType).send(body);
  });
  app.get('/openapi.json', { schema: { hide: true } }, () => app.swagger());
  done();
};

const healthView = z.object({
  status: z.enum(['ok', 'degraded']),
  networks: z.object({ serving: z.number(), degraded: z.number() }),
  vms: z.number(),
  registry: z
    .object({ connected: z.boolean(), revision: z.number() })
    .optional()
    .describe('with a registry: whether etcd is reachable (503 when not) and the last revision applied'),
});

function health(app: AdminRouter, deps: AdminDeps): void {
  const { inventory } = deps;
  app.get(
    '/health',
    {
      schema: {
        tags: ['daemon'],
        summary:
          'Liveness and a summary: 200 when every network serves, 503 when one is degraded (or not built yet) or the registry is unreachable',
        response: { 200: healthView, 503: healthView },
      },
    },
    (_req, reply) => {
      const states = inventory.networkList().map((n) => deps.statusOf(n.id)?.state ?? 'pending');
      const degraded = states.filter((s) => s !== 'serving').length;
      const registry = deps.registry?.status();
      const ok = degraded === 0 && registry?.connected !== false;
      void reply.code(ok ? 200 : 503);
      return {
        status: ok ? ('ok' as const) : ('degraded' as const),
        networks: { serving: states.length - degraded, degraded },
        vms: inventory.vmCount(),
        ...(registry === undefined ? {} : { registry: { connected: registry.connected, revision: registry.revision } }),
      };
    },
  );
}

function reload(app: AdminRouter, deps: AdminDeps): void {
  app.post(
    '/reload',
    {
      schema: {
        tags: ['daemon'],
        summary: 'Reload the configuration file, as SIGHUP does, and answer with the verdict (400 CONFIG_INVALID when refused)',
        response: { 200: z.object({ reloaded: z.literal(true) }), ...errorResponses },
      },
    },
    async () => {
      if (deps.reload === undefined) throw new ImdsError('INTERNAL', 'this daemon cannot reload through the API');
      const refused = await deps.reload();
      if (refused !== undefined) throw new ImdsError('CONFIG_INVALID', `reload rejected: ${refused}`);
      return { reloaded: true as const };
    },
  );
}

function restart(app: AdminRouter, deps: AdminDeps): void {
  app.post(
    '/restart',
    {
      schema: {
        tags: ['daemon'],
        summary:
          'Without systemd: start a new daemon (the same command line: after an upgrade, the new code), hand it the listening ' +
          'sockets, and stop this one once it is ready; answers with its pid',
        response: { 200: z.object({ successor: z.number() }), ...errorResponses },
      },
    },
    async () => {
      if (deps.restart === undefined) throw new ImdsError('INTERNAL', 'this daemon cannot restart through the API');
      return { successor: await deps.restart() };
    },
  );
}

const statusView = z.object({ daemon: z.record(z.string(), z.unknown()), networks: z.array(networkView), vms: z.number() });

function status(app: AdminRouter, deps: AdminDeps): void {
  app.get(
    '/status',
    { schema: { tags: ['daemon'], summary: 'Daemon state and every network with its state', response: { 200: statusView } } },
    () => ({ daemon: deps.info(), networks: networkViews(deps), vms: deps.inventory.vmCount() }),
  );
}
