// /v1/import: networks and VMs created or updated together, all or nothing (`imds vm import`); with
// `prune`, the API's VMs (and networks) the file does not list are deleted in the same transaction;
// with `dry_run`, nothing changes and the answer says what would.
import { z } from 'zod';
import { vmSchema, type Vm } from '../../model/schema.ts';
import { collectGarbage } from '../../util/gc.ts';
import { PASSWORD_MAX } from '../guest-routes.ts';
import { ImdsError } from '../../errors.ts';
import type { BatchResult, InventorySnapshot, RevertScope } from '../../store/inventory.ts';
import type { AdminDeps, AdminPlugin } from './deps.ts';
import { errorResponses, networkCreate, vmCreate, vmInput } from './schemas.ts';
import { allowUnknownHost } from './registry-writes.ts';
import { parseModel } from './validation.ts';

const importVm = vmCreate.extend({
  password: z
    .string()
    .min(1)
    .max(PASSWORD_MAX)
    .optional()
    .describe('the password the guest posted (`imds export --include-secrets`); set, replacing any, when given; kept when absent'),
});

const importBody = z
  .object({
    networks: z.array(networkCreate).optional(),
    vms: z.array(importVm).optional(),
  })
  .strict();

const importQuery = z.object({
  dry_run: z.enum(['true', 'false']).default('false').describe('true: validate and report what would change, change nothing'),
  prune: z
    .enum(['vms', 'all'])
    .optional()
    .describe(
      'delete what the body does not list (only records made through the API): vms = VMs on the networks the body names; all = every VM and network',
    ),
  allow_unknown_host: allowUnknownHost,
});

const changes = z.object({
  created: z.array(z.string()),
  updated: z.array(z.string()),
  unchanged: z.array(z.string()),
  deleted: z.array(z.string()),
});
const batchResult = z.object({ dry_run: z.boolean(), networks: changes, vms: changes });

/** The networks a body names: its networks and the networks of its VMs (the scope of prune=vms). */
function namedNetworks(networks: readonly { id: string }[], vms: readonly Vm[]): Set<string> {
  return new Set([...networks.map((n) => n.id), ...vms.map((v) => v.network)]);
}

/**
 * Builds the networks the import created or changed; if the kernel refuses one, the whole import is
 * undone (the inventory put back, the kernel converged back) and KERNEL_CONFLICT names the network.
 */
async function convergeOrRevert(deps: AdminDeps, result: BatchResult, before: InventorySnapshot, scope: RevertScope): Promise<void> {
  const changed = new Set([...result.networks.created, ...result.networks.updated]);
  let summary: Awaited<ReturnType<AdminDeps['converge']>>;
  try {
    summary = await deps.converge();
  } catch (err) {
    deps.inventory.revertTo(before, scope);
    await deps.converge().catch(() => undefined); // the error of the first run is the one to report
    throw err;
  }
  const failed = summary.networks.find((s) => s.state !== 'serving' && changed.has(s.network));
  if (failed === undefined) return;
  deps.inventory.revertTo(before, scope);
  await deps.converge();
  throw new ImdsError(
    'KERNEL_CONFLICT',
    `network ${failed.network} cannot be built, so the import was undone, nothing was changed: ${failed.reason ?? 'unknown reason'}`,
    { field: 'networks', details: { network: failed.network } },
  );
}

type ImportBody = z.output<typeof importBody>;

/** The body's VMs as the model's (problems named `vms[i].…`), each with its `host`, and the passwords given, by VM id. */
function parseEntries(entries: NonNullable<ImportBody['vms']>) {
  const placed = entries.map(({ password: _password, host, ...v }, i) => ({ vm: parseModel(vmSchema, vmInput(v), ['vms', i]), host }));
  const passwords = new Map(
    entries.flatMap((v, i) => (v.password === undefined ? [] : [[placed[i]?.vm.id as string, v.password] as const])),
  );
  return { placed, passwords };
}
type ImportQuery = z.output<typeof importQuery>;

/** With a registry: the batch goes to etcd (src/registry/import-plan.ts); this host applies its share before the answer. */
async function registryImport(deps: AdminDeps, registry: NonNullable<AdminDeps['registry']>, body: ImportBody, query: ImportQuery) {
  const { placed: vms, passwords } = parseEntries(body.vms ?? []);
  const dryRun = query.dry_run === 'true';
  const written = await registry.writer.importBatch(
    { networks: body.networks ?? [], vms, passwords },
    { dryRun, prune: query.prune, allowUnknownHost: query.allow_unknown_host === 'true' },
  );
  if (!dryRun && written.thisHost) {
    await deps.converge();
    await deps.vmChangesApplied?.();
  }
  return { dry_run: dryRun, ...written.result };
}

/** Registered with the prefix /v1/import. */
export const importRoutes: AdminPlugin = (app, { deps }, done) => {
  const { inventory } = deps;
  app.post(
    '',
    {
      schema: {
        tags: ['vms'],
        summary: 'Create or update networks and VMs, all or nothing; optionally prune what is not listed, or only report (dry run)',
        querystring: importQuery,
        body: importBody,
        response: { 200: batchResult, ...errorResponses },
      },
    },
    async (req) => {
      if (deps.registry !== undefined) return registryImport(deps, deps.registry, req.body, req.query);
      const networks = req.body.networks ?? [];
      const entries = req.body.vms ?? [];
      entries.forEach((v, i) => {
        if (v.host !== undefined)
          throw new ImdsError('VALIDATION_FAILED', `vms[${i}].host: only with a registry`, { field: `vms[${i}].host` });
      });
      const { placed, passwords } = parseEntries(entries);
      const vms = placed.map((p) => p.vm);
      const dryRun = req.query.dry_run === 'true';
      const prune = req.query.prune;
      const before = inventory.snapshot();
      const result = inventory.applyBatch(
        { networks, vms, passwords },
        {
          origin: 'api',
          dryRun,
          ...(prune === undefined ? {} : { pruneOrigin: 'api' as const }),
          ...(prune === 'vms' ? { pruneNetworks: namedNetworks(networks, vms) } : {}),
        },
      );
      if (dryRun) return { dry_run: true, ...result };
      if (vms.length >= 1000) collectGarbage();
      const all = (c: BatchResult['vms']) => new Set([...c.created, ...c.updated, ...c.deleted]);
      const scope = { networks: all(result.networks), vms: all(result.vms), passwords: new Set([...passwords.keys(), ...all(result.vms)]) };
      if (networks.length > 0 || result.networks.deleted.length > 0) await convergeOrRevert(deps, result, before, scope);
      return { dry_run: false, ...result };
    },
  );
  done();
};
