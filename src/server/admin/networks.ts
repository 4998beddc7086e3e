// /v1/networks: list, create, show, change, delete. A change to a network is answered once the
// kernel has it (the network serves); a change the kernel refuses is undone.
import { z } from 'zod';
import { ImdsError } from '../../errors.ts';
import { networkSchema, type Network } from '../../model/schema.ts';
import { refuseIfRevision, registryCreateNetwork, registryDeleteNetwork, registryPatchNetwork, revisionOf } from './registry-writes.ts';
import type { AdminDeps, AdminPlugin, AdminRouter } from './deps.ts';
import { mergePatch } from './merge-patch.ts';
import { patchRoute } from './patch-route.ts';
import { errorBody, errorResponses, idParam, ifRevision, ifRevisionQuery, networkCreate, networkView, patchOf } from './schemas.ts';
import { parseModel } from './validation.ts';
import { networkViewOf, networkViews } from './views.ts';

/** Registered with the prefix /v1/networks. */
export const networkRoutes: AdminPlugin = (app, { deps }, done) => {
  listNetworks(app, deps);
  createNetwork(app, deps);
  showNetwork(app, deps);
  patchNetwork(app, deps);
  deleteNetwork(app, deps);
  done();
};

/** Applies a network change to the kernel; undoes the inventory change if it cannot be built. */
async function convergeOrUndo(deps: AdminDeps, network: string, undo: () => void): Promise<void> {
  const summary = await deps.convergeNetwork(network);
  const status = summary.networks.find((s) => s.network === network);
  if (status !== undefined && status.state !== 'serving') {
    undo();
    await deps.converge();
    throw new ImdsError(
      'KERNEL_CONFLICT',
      `network ${network} cannot be built, nothing was changed: ${status.reason ?? 'unknown reason'}`,
      {
        details: { network },
      },
    );
  }
}

function listNetworks(app: AdminRouter, deps: AdminDeps): void {
  app.get('', { schema: { tags: ['networks'], summary: 'List networks', response: { 200: z.array(networkView) } } }, () =>
    networkViews(deps),
  );
}

function createNetwork(app: AdminRouter, deps: AdminDeps): void {
  const { inventory } = deps;
  app.post(
    '',
    {
      schema: {
        tags: ['networks'],
        summary: 'Create a network; returns once it serves',
        body: networkCreate,
        response: { 201: networkView, ...errorResponses },
      },
    },
    async (req, reply) => {
      const network = req.body;
      if (deps.registry !== undefined) return reply.code(201).send(await registryCreateNetwork(deps, deps.registry, network));
      inventory.createNetwork(network, 'api');
      await convergeOrUndo(deps, network.id, () => inventory.deleteNetwork(network.id, true));
      return reply.code(201).send(networkViewOf(deps, inventory.requireNetwork(network.id)));
    },
  );
}

function showNetwork(app: AdminRouter, deps: AdminDeps): void {
  app.get(
    '/:id',
    { schema: { tags: ['networks'], summary: 'Show a network', params: idParam, response: { 200: networkView, 404: errorBody } } },
    (req) => networkViewOf(deps, deps.inventory.requireNetwork(req.params.id)),
  );
}

const networkPatch = patchOf(networkSchema.omit({ id: true }).shape, ['cidr', 'service_ip']);

function patchNetwork(app: AdminRouter, deps: AdminDeps): void {
  const { inventory } = deps;
  patchRoute(app, deps, {
    tag: 'networks',
    noun: 'network',
    body: networkPatch,
    view: networkView,
    query: ifRevisionQuery,
    registry: (registry, id, body, query) => registryPatchNetwork(deps, registry, id, body, revisionOf(query)),
    local: async (id, body) => {
      const current = inventory.requireNetwork(id).network;
      const next: Network = parseModel(networkSchema, mergePatch(current, body));
      const before = inventory.updateNetwork(next);
      await convergeOrUndo(deps, next.id, () => inventory.updateNetwork(before));
      return networkViewOf(deps, inventory.requireNetwork(next.id));
    },
  });
}

const deleteQuery = z.object({ force: z.enum(['true', 'false']).optional(), if_revision: ifRevision });
const deleted = z.object({ deleted: z.string(), vms_deleted: z.number() });

function deleteNetwork(app: AdminRouter, deps: AdminDeps): void {
  app.delete(
    '/:id',
    {
      schema: {
        tags: ['networks'],
        summary: 'Delete a network (force: with its VMs)',
        params: idParam,
        querystring: deleteQuery,
        response: { 200: deleted, ...errorResponses },
      },
    },
    async (req) => {
      const force = req.query.force === 'true';
      if (deps.registry !== undefined) return registryDeleteNetwork(deps, deps.registry, req.params.id, force, revisionOf(req.query));
      refuseIfRevision(req.query);
      const removed = deps.inventory.deleteNetwork(req.params.id, force);
      const summary = await deps.converge();
      if (!summary.removed.includes(req.params.id) && summary.removalFailures.some((f) => f.network === req.params.id)) {
        throw new ImdsError(
          'COMMAND_FAILED',
          `network ${req.params.id} was deleted, but removing its kernel objects failed; the daemon retries on the next reconcile`,
        );
      }
      return { deleted: req.params.id, vms_deleted: removed.length };
    },
  );
}
