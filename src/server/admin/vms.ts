// /v1/vms: list, create, show, change, delete; a VM's password, config drive, and a fetch as the VM
// sees it. Guests see a change when the call returns (the admin app's onSend hook waits for the kernel).
import { z } from 'zod';
import { DRIVE_FORMATS } from '../../configdrive/image.ts';
import { vmSchema } from '../../model/schema.ts';
import { PASSWORD_MAX } from '../guest-routes.ts';
import type { AdminDeps, AdminPlugin, AdminRouter } from './deps.ts';
import { mergePatch } from './merge-patch.ts';
import { patchRoute } from './patch-route.ts';
import { errorBody, errorResponses, idParam, ifRevisionQuery, patchOf, vmAsBody, vmCreate, vmInput, vmView } from './schemas.ts';
import { parseModel } from './validation.ts';
import { vmViewOf } from './views.ts';
import {
  allowUnknownHost,
  placeOptionsOf,
  refuseHost,
  refuseIfRevision,
  registryCreateVm,
  registryDeleteVm,
  registryPatchVm,
  revisionOf,
} from './registry-writes.ts';
import { requireServedVm, resolveVmRefs, withFallback, type VmRefLookups } from './vm-ref.ts';

/** Registered with the prefix /v1/vms. */
export const vmRoutes: AdminPlugin = (app, { deps }, done) => {
  const local: VmRefLookups = { byId: (id) => deps.inventory.getVm(id)?.vm, all: () => deps.inventory.vmList().map((s) => s.vm) };
  resolveVmRefs(app, deps.registry === undefined ? local : withFallback(deps.registry.vmRefs, local));
  listVms(app, deps);
  createVm(app, deps);
  showVm(app, deps);
  patchVm(app, deps);
  deleteVm(app, deps);
  passwordRoutes(app, deps);
  configDrive(app, deps);
  fetchAsVm(app, deps);
  done();
};

const listQuery = z.object({ network: z.string().optional() });

function listVms(app: AdminRouter, deps: AdminDeps): void {
  app.get(
    '',
    {
      schema: {
        tags: ['vms'],
        summary: 'List VMs (user data omitted)',
        querystring: listQuery,
        response: { 200: z.array(vmView) },
      },
    },
    (req) => deps.inventory.vmList(req.query.network).map((v) => vmViewOf(deps, v, false)),
  );
}

function createVm(app: AdminRouter, deps: AdminDeps): void {
  app.post(
    '',
    {
      schema: {
        tags: ['vms'],
        summary: 'Create a VM; guests see it when this returns',
        querystring: z.object({ allow_unknown_host: allowUnknownHost }),
        body: vmCreate,
        response: { 201: vmView, ...errorResponses },
      },
    },
    async (req, reply) => {
      const { host, ...body } = req.body;
      if (deps.registry !== undefined)
        return reply.code(201).send(await registryCreateVm(deps, deps.registry, body, host, placeOptionsOf(req.query)));
      refuseHost(host);
      const vm = parseModel(vmSchema, vmInput(body));
      deps.inventory.createVm(vm, 'api');
      return reply.code(201).send(vmViewOf(deps, deps.inventory.requireVm(vm.id), false));
    },
  );
}

function showVm(app: AdminRouter, deps: AdminDeps): void {
  app.get(
    '/:id',
    { schema: { tags: ['vms'], summary: 'Show a VM, with its user data', params: idParam, response: { 200: vmView, 404: errorBody } } },
    (req) => vmViewOf(deps, requireServedVm(deps, req.params.id), true),
  );
}

const vmPatch = patchOf(vmCreate.omit({ id: true }).shape, ['network', 'ip', 'mac', 'hostname']);

function patchVm(app: AdminRouter, deps: AdminDeps): void {
  const { inventory } = deps;
  patchRoute(app, deps, {
    tag: 'vms',
    noun: 'VM',
    body: vmPatch,
    view: vmView,
    query: ifRevisionQuery.extend({ allow_unknown_host: allowUnknownHost }),
    registry: (registry, id, body, query) => registryPatchVm(deps, registry, id, body, revisionOf(query), placeOptionsOf(query)),
    local: (id, patch) => {
      const { host, ...body }: Record<string, unknown> = patch;
      refuseHost(host as string | undefined);
      const current = vmAsBody(inventory.requireVm(id).vm);
      // The stored user data is in the body as user_data_b64: user data given either way replaces it.
      if (body['user_data'] !== undefined || body['user_data_b64'] !== undefined) delete current['user_data_b64'];
      const vm = parseModel(vmSchema, vmInput(mergePatch(current, body)));
      inventory.updateVm(vm);
      return vmViewOf(deps, inventory.requireVm(vm.id), false);
    },
  });
}

function deleteVm(app: AdminRouter, deps: AdminDeps): void {
  app.delete(
    '/:id',
    {
      schema: {
        tags: ['vms'],
        summary: 'Delete a VM',
        params: idParam,
        querystring: ifRevisionQuery,
        response: { 200: z.object({ deleted: z.string() }), ...errorResponses },
      },
    },
    async (req) => {
      if (deps.registry !== undefined) return registryDeleteVm(deps, deps.registry, req.params.id, revisionOf(req.query));
      refuseIfRevision(req.query);
      const { vm } = deps.inventory.requireVm(req.params.id);
      deps.inventory.deleteVm(vm.id);
      return { deleted: vm.id };
    },
  );
}

function passwordRoutes(app: AdminRouter, deps: AdminDeps): void {
  app.get(
    '/:id/password',
    {
      schema: {
        tags: ['vms'],
        summary: "The password the guest posted (Nova's os-server-password); empty when none",
        params: idParam,
        response: { 200: z.object({ password: z.string() }), 404: errorBody },
      },
    },
    (req) => ({
      password: deps.inventory.getPassword(req.params.id) ?? '',
    }),
  );
  setPassword(app, deps);
  app.delete(
    '/:id/password',
    {
      schema: {
        tags: ['vms'],
        summary: 'Clear the password so the guest may post a new one',
        params: idParam,
        response: { 204: z.null(), 404: errorBody },
      },
    },
    async (req, reply) => {
      if (deps.registry === undefined) deps.inventory.clearPassword(req.params.id);
      else {
        const result = await deps.registry.writer.clearPassword(req.params.id);
        // The registry had none but this host may hold one (a guest's, not yet published): clear it too.
        deps.registry.passwords.cancel(req.params.id);
        if (result.thisHost && deps.inventory.getVm(req.params.id) !== undefined) deps.inventory.clearPassword(req.params.id);
      }
      return reply.code(204).send(null);
    },
  );
}

const passwordBody = z
  .object({
    password: z.string().min(1).max(PASSWORD_MAX).describe('the value a guest would post (cloudbase-init: encrypted to its key, base64)'),
    replace: z.boolean().default(false).describe('replace a password already set (otherwise 409 ALREADY_EXISTS)'),
  })
  .strict();

/** PUT /v1/vms/{id}/password: the operator sets the write-once password (a VM moved from another host). */
function setPassword(app: AdminRouter, deps: AdminDeps): void {
  app.put(
    '/:id/password',
    {
      schema: {
        tags: ['vms'],
        summary: 'Set the password the guest reads (as if it had posted it); refused when one is set, unless replace',
        params: idParam,
        body: passwordBody,
        response: { 204: z.null(), ...errorResponses },
      },
    },
    async (req, reply) => {
      if (deps.registry !== undefined) await deps.registry.writer.setPassword(req.params.id, req.body.password, req.body.replace);
      else deps.inventory.setPassword(req.params.id, req.body.password, req.body.replace);
      return reply.code(204).send(null);
    },
  );
}

const driveQuery = z.object({ format: z.enum(DRIVE_FORMATS, "must be 'iso' or 'vfat'").default('iso') });

function configDrive(app: AdminRouter, deps: AdminDeps): void {
  app.get(
    '/:id/configdrive',
    {
      schema: {
        tags: ['vms'],
        summary:
          "The VM's config drive (label config-2): an ISO 9660 image (Rock Ridge, Joliet) or a 64 MiB vfat image, as application/octet-stream",
        params: idParam,
        querystring: driveQuery,
      },
    },
    async (req, reply) => {
      const { id } = req.params;
      const { format } = req.query;
      deps.inventory.requireVm(id);
      const image = await deps.configDrive(id, format);
      return reply
        .header('content-type', 'application/octet-stream')
        .header('content-disposition', `attachment; filename="${id}-config-2.${format === 'iso' ? 'iso' : 'img'}"`)
        .send(image);
    },
  );
}

const fetchBody = z
  .object({
    path: z.string().min(1).max(2048).describe('the path to fetch, e.g. /openstack/latest/meta_data.json'),
    method: z.enum(['GET', 'HEAD', 'POST', 'PUT', 'DELETE']).default('GET'),
  })
  .strict();

const fetchResult = z.object({
  status: z.number(),
  headers: z.record(z.string(), z.string()),
  body_b64: z.string(),
});

function fetchAsVm(app: AdminRouter, deps: AdminDeps): void {
  app.post(
    '/:id/fetch',
    {
      schema: {
        tags: ['vms'],
        summary: 'Fetch a path as the VM sees it, through its namespace, DNAT and listener',
        params: idParam,
        body: fetchBody,
        response: { 200: fetchResult, ...errorResponses },
      },
    },
    async (req) => {
      const { vm } = deps.inventory.requireVm(req.params.id);
      const result = await deps.probe(vm.network, vm.id, req.body.path, req.body.method);
      return { status: result.status, headers: result.headers, body_b64: result.body.toString('base64') };
    },
  );
}
