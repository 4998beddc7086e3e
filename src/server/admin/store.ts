// /v1/store/backup and /v1/export: the store as a file (SQLite's online backup, taken while the
// daemon serves), and the networks and VMs as the document `imds vm import` reads.
import { open, rm } from 'node:fs/promises';
import { z } from 'zod';
import { exportDocument } from '../../store/export.ts';
import { createBackupFile } from '../../store/store-files.ts';
import type { AdminDeps, AdminPlugin, AdminRouter } from './deps.ts';

/** Registered with the prefix /v1. */
export const storeRoutes: AdminPlugin = (app, { deps }, done) => {
  backupRoute(app, deps);
  exportRoute(app, deps);
  done();
};

function backupRoute(app: AdminRouter, deps: AdminDeps): void {
  app.get(
    '/store/backup',
    {
      schema: {
        tags: ['store'],
        summary:
          'A consistent copy of the store (SQLite online backup, taken while the daemon serves) as application/octet-stream: one SQLite file, no -wal',
      },
    },
    async (_req, reply) => {
      const started = performance.now();
      // Made beside the store (mode 0600), opened, then unlinked: the copy leaves nothing behind.
      const tmp = createBackupFile(`${deps.inventory.storePath}.online-${process.pid}-${Date.now()}`);
      try {
        await deps.inventory.backupStore(tmp);
        const file = await open(tmp, 'r');
        const { size } = await file.stat().catch(async (err: unknown) => {
          await file.close();
          throw err;
        });
        deps.log.info({ bytes: size, ms: Math.round(performance.now() - started) }, 'store backup taken');
        return reply
          .header('content-type', 'application/octet-stream')
          .header('content-length', size)
          .header('content-disposition', 'attachment; filename="imds.sqlite"')
          .send(file.createReadStream());
      } finally {
        await rm(tmp, { force: true });
      }
    },
  );
}

const exportQuery = z.object({
  secrets: z.enum(['true', 'false']).default('false').describe("true: include the VMs' passwords"),
});

// Plain shapes (the records are already valid; the serializer must not run the model's transforms).
const exportBody = z.object({
  networks: z.array(z.looseObject({ id: z.string() })).describe('as in the body of POST /v1/import'),
  vms: z
    .array(z.looseObject({ id: z.string(), network: z.string(), user_data_b64: z.string().optional(), password: z.string().optional() }))
    .describe('as in the body of POST /v1/import'),
});

function exportRoute(app: AdminRouter, deps: AdminDeps): void {
  app.get(
    '/export',
    {
      schema: {
        tags: ['store'],
        summary:
          'Every network and VM as POST /v1/import takes them (sorted; user data as user_data_b64; passwords only with secrets=true)',
        querystring: exportQuery,
        response: { 200: exportBody },
      },
    },
    (req) => {
      const { inventory } = deps;
      return exportDocument(
        inventory.networkList(),
        inventory.vmList().map((v) => v.vm),
        req.query.secrets === 'true' ? inventory.passwordList() : undefined,
      );
    },
  );
}
