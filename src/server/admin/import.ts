// /v1/import: networks and VMs created or updated together, all or nothing (`imds import`).
import { z } from 'zod';
import { vmSchema } from '../../model/schema.ts';
import { collectGarbage } from '../../util/gc.ts';
import type { AdminPlugin } from './deps.ts';
import { errorResponses, networkCreate, vmCreate, vmInput } from './schemas.ts';
import { parseModel } from './validation.ts';

const importBody = z
  .object({
    networks: z.array(networkCreate).optional(),
    vms: z.array(vmCreate).optional(),
  })
  .strict();

const batchResult = z.object({
  networks: z.object({ created: z.array(z.string()), updated: z.array(z.string()), deleted: z.array(z.string()) }),
  vms: z.object({ created: z.array(z.string()), updated: z.array(z.string()), deleted: z.array(z.string()) }),
});

/** Registered with the prefix /v1/import. */
export const importRoutes: AdminPlugin = (app, { deps }, done) => {
  const { inventory } = deps;
  app.post(
    '',
    {
      schema: {
        tags: ['vms'],
        summary: 'Create or update networks and VMs, all or nothing',
        body: importBody,
        response: { 200: batchResult, ...errorResponses },
      },
    },
    async (req) => {
      const networks = req.body.networks ?? [];
      const vms = (req.body.vms ?? []).map((v, i) => parseModel(vmSchema, vmInput(v), ['vms', i]));
      const before = new Set(inventory.networkList().map((n) => n.id));
      const result = inventory.applyBatch({ networks, vms }, { origin: 'api' });
      if (vms.length >= 1000) collectGarbage();
      if (networks.length > 0) {
        const summary = await deps.converge();
        const failed = summary.networks.filter((s) => s.state !== 'serving' && networks.some((n) => n.id === s.network));
        if (failed.length > 0)
          deps.log.warn({ networks: failed.map((f) => f.network), before: [...before] }, 'imported networks not serving yet');
      }
      return result;
    },
  );
  done();
};
