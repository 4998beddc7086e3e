// The admin API: a separate Fastify app on a Unix socket (never inside a guest namespace). JSON in
// and out, bodies validated with zod, errors as {code, message, field?} with stable codes, and an
// OpenAPI document generated from the route schemas (docs/openapi.json).
import { DRIVE_FORMATS, type DriveFormat } from '../configdrive/image.ts';
import { chmodSync, chownSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import swagger from '@fastify/swagger';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import {
  hasZodFastifySchemaValidationErrors,
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { DhcpStatus } from '../dhcp/dhcp-servers.ts';
import type { NetworkStatus, ReconcileSummary } from '../controller/reconciler.ts';
import { httpStatusOf, ImdsError, isImdsError, messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import { bridgeNameOf } from '../model/names.ts';
import { networkSchema, vmSchema, type Network } from '../model/schema.ts';
import { formatPath } from '../model/validate.ts';
import type { Inventory } from '../store/inventory.ts';
import type { StoredNetwork, StoredVm } from '../store/sqlite-store.ts';
import {
  batchResult,
  errorBody,
  fetchBody,
  fetchResult,
  idParam,
  importBody,
  networkCreate,
  networkPatch,
  networkView,
  vmAsBody,
  vmCreate,
  vmInput,
  vmPatch,
  vmView,
} from './admin/schemas.ts';
import type { ProbeResult } from './probe.ts';
import { collectGarbage } from '../util/gc.ts';

export const API_VERSION = '1.0.0';

export interface AdminDeps {
  inventory: Inventory;
  log: Logger;
  metrics: Metrics;
  /** Converges the kernel to the inventory's networks (all of them; orphans removed). */
  converge(): Promise<ReconcileSummary>;
  /** Converges one network only (nothing else is observed). */
  convergeNetwork(id: string): Promise<ReconcileSummary>;
  statusOf(network: string): NetworkStatus | undefined;
  /** The network's DHCP server, when it has one. */
  dhcpStatusOf?(network: string): DhcpStatus | undefined;
  probe(network: string, vmId: string, path: string, method: string): Promise<ProbeResult>;
  info(): Record<string, unknown>;
  /** Replaces the IMDSv2 token key (persisted first). */
  rotateTokenKey(): void;
  /** The VM's config drive image. */
  configDrive(vmId: string, format: DriveFormat): Promise<Buffer>;
  /**
   * Resolves once VM changes made so far are in the kernel too (the bridge's interception set, the
   * namespace's guard sets, dnsmasq's hosts): a change is answered only then, so every guest —
   * also one reached by interception, or one whose MAC changed — is served when the call returns.
   */
  vmChangesApplied?(): Promise<void>;
}

type NetworkViewT = z.infer<typeof networkView>;

function dhcpView(s: DhcpStatus | undefined): { dhcp_server?: NonNullable<NetworkViewT['dhcp_server']> } {
  if (s === undefined) return {};
  return {
    dhcp_server: {
      state: s.state,
      restarts: s.restarts,
      ...(s.pid === undefined ? {} : { pid: s.pid }),
      ...(s.last_error === undefined ? {} : { last_error: s.last_error }),
    },
  };
}

type VmViewT = z.infer<typeof vmView>;

function parseModel<T>(schema: z.ZodType<T>, input: unknown, prefix: (string | number)[] = []): T {
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const field = formatPath([...prefix, ...(issue?.path ?? [])]);
  const all = parsed.error.issues.slice(0, 20).map((i) => `${formatPath([...prefix, ...i.path])}: ${i.message}`);
  if (parsed.error.issues.length > 20) all.push(`… and ${parsed.error.issues.length - 20} more`);
  throw new ImdsError('VALIDATION_FAILED', all.join('; '), { field });
}

/** `/vms/3/ip` (a JSON pointer from schema validation) -> `vms[3].ip`. */
function pointerPath(context: string | undefined, pointer: string): string {
  const parts: (string | number)[] = pointer
    .split('/')
    .filter(Boolean)
    .map((p) => (/^\d+$/.test(p) ? Number(p) : p));
  if (context !== undefined && context !== 'body') parts.unshift(context);
  return formatPath(parts);
}

export async function buildAdminApp(deps: AdminDeps): Promise<FastifyInstance> {
  const { inventory } = deps;
  const app = Fastify({
    loggerInstance: deps.log.child({ component: 'admin' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 256 * 1024 * 1024,
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  await app.register(swagger, {
    openapi: {
      info: {
        title: 'imds admin API',
        version: API_VERSION,
        description:
          "Manage the networks and VMs imds serves. Served on the daemon's Unix socket (admin_socket). Errors are {code, message, field?}; codes are listed in docs/errors.md.",
      },
    },
    transform: jsonSchemaTransform,
  });

  app.setErrorHandler((err, request, reply) => {
    if (hasZodFastifySchemaValidationErrors(err)) {
      const issues = err.validation;
      const first = issues[0];
      const field = first === undefined ? undefined : pointerPath(err.validationContext, first.instancePath);
      const lines = issues.slice(0, 20).map((v) => `${pointerPath(err.validationContext, v.instancePath)}: ${v.message}`);
      if (issues.length > 20) lines.push(`… and ${issues.length - 20} more`);
      return reply.code(400).send({
        code: 'VALIDATION_FAILED',
        message: lines.join('; '),
        ...(field === undefined || field === '(top level)' ? {} : { field }),
      });
    }
    if (isImdsError(err)) {
      const status = httpStatusOf(err.code);
      if (status >= 500) request.log.error({ err: err.message, code: err.code }, 'admin request failed');
      return reply.code(status).send(err.toJSON());
    }
    const statusCode = (err as { statusCode?: number }).statusCode;
    if (statusCode !== undefined && statusCode >= 400 && statusCode < 500) {
      return reply.code(statusCode).send({ code: 'VALIDATION_FAILED', message: messageOf(err) });
    }
    request.log.error({ err: messageOf(err) }, 'admin request failed');
    return reply.code(500).send({ code: 'INTERNAL', message: messageOf(err) });
  });
  app.setNotFoundHandler((request, reply) =>
    reply.code(404).send({ code: 'NOT_FOUND', message: `no route ${request.method} ${request.url}` }),
  );
  // No change is answered before the kernel has it (guest sets, DHCP hosts): see vmChangesApplied.
  app.addHook('onSend', async (request) => {
    if (request.method !== 'GET' && request.method !== 'HEAD') await deps.vmChangesApplied?.();
  });

  const networkViewOf = (stored: StoredNetwork): NetworkViewT => {
    const n = stored.network;
    const status = deps.statusOf(n.id);
    return {
      ...n,
      bridge: bridgeNameOf(n),
      origin: stored.origin,
      vms: inventory.vmCount(n.id),
      state: status?.state ?? 'pending',
      ...(status?.reason === undefined ? {} : { reason: status.reason }),
      ...dhcpView(deps.dhcpStatusOf?.(n.id)),
    };
  };
  const vmViewOf = (stored: StoredVm, full: boolean): VmViewT => {
    const { user_data, ...vm } = stored.vm;
    return {
      ...vm,
      user_data_bytes: user_data?.length ?? 0,
      ...(full && user_data !== undefined ? { user_data_b64: user_data.toString('base64') } : {}),
      password_set: (inventory.getPassword(vm.id) ?? '') !== '',
      origin: stored.origin,
    };
  };

  /** Applies a network change to the kernel; undoes the inventory change if it cannot be built. */
  const convergeOrUndo = async (network: string, undo: () => void): Promise<void> => {
    const summary = await deps.convergeNetwork(network);
    const status = summary.networks.find((s) => s.network === network);
    if (status !== undefined && status.state !== 'serving') {
      undo();
      await deps.converge();
      throw new ImdsError(
        'KERNEL_CONFLICT',
        `network ${network} cannot be built, nothing was changed: ${status.reason ?? 'unknown reason'}`,
        { details: { network } },
      );
    }
  };

  const r = app.withTypeProvider<ZodTypeProvider>();
  const errors = { 400: errorBody, 404: errorBody, 409: errorBody, 500: errorBody };

  r.get(
    '/v1/health',
    {
      schema: {
        tags: ['daemon'],
        summary: 'Liveness and a summary',
        response: {
          200: z.object({
            status: z.enum(['ok', 'degraded']),
            networks: z.object({ serving: z.number(), degraded: z.number() }),
            vms: z.number(),
          }),
        },
      },
    },
    () => {
      const states = inventory.networkList().map((n) => deps.statusOf(n.id)?.state ?? 'pending');
      const degraded = states.filter((s) => s !== 'serving').length;
      return {
        status: degraded === 0 ? ('ok' as const) : ('degraded' as const),
        networks: { serving: states.length - degraded, degraded },
        vms: inventory.vmCount(),
      };
    },
  );

  r.get(
    '/v1/status',
    {
      schema: {
        tags: ['daemon'],
        summary: 'Daemon state and every network with its state',
        response: { 200: z.object({ daemon: z.record(z.string(), z.unknown()), networks: z.array(networkView), vms: z.number() }) },
      },
    },
    () => ({
      daemon: deps.info(),
      networks: inventory.networkList().map((n) => networkViewOf(inventory.requireNetwork(n.id))),
      vms: inventory.vmCount(),
    }),
  );

  // -- networks --
  r.get('/v1/networks', { schema: { tags: ['networks'], summary: 'List networks', response: { 200: z.array(networkView) } } }, () =>
    inventory.networkList().map((n) => networkViewOf(inventory.requireNetwork(n.id))),
  );
  r.post(
    '/v1/token-key/rotate',
    {
      schema: {
        tags: ['daemon'],
        summary: 'Replace the IMDSv2 token key; tokens issued before are refused from now on',
        response: { 200: z.object({ rotated_at: z.string() }), ...errors },
      },
    },
    () => {
      deps.rotateTokenKey();
      deps.log.info('token key rotated');
      return { rotated_at: new Date().toISOString() };
    },
  );
  r.post(
    '/v1/networks',
    {
      schema: {
        tags: ['networks'],
        summary: 'Create a network; returns once it serves',
        body: networkCreate,
        response: { 201: networkView, ...errors },
      },
    },
    async (req, reply) => {
      const network = req.body;
      inventory.createNetwork(network, 'api');
      await convergeOrUndo(network.id, () => inventory.deleteNetwork(network.id, true));
      return reply.code(201).send(networkViewOf(inventory.requireNetwork(network.id)));
    },
  );
  r.get(
    '/v1/networks/:id',
    { schema: { tags: ['networks'], summary: 'Show a network', params: idParam, response: { 200: networkView, 404: errorBody } } },
    (req) => networkViewOf(inventory.requireNetwork(req.params.id)),
  );
  r.patch(
    '/v1/networks/:id',
    {
      schema: {
        tags: ['networks'],
        summary: 'Change a network; null clears a field',
        params: idParam,
        body: networkPatch,
        response: { 200: networkView, ...errors },
      },
    },
    async (req) => {
      const current = inventory.requireNetwork(req.params.id).network;
      const merged: Record<string, unknown> = { ...current };
      for (const [k, v] of Object.entries(req.body)) {
        if (v === null) delete merged[k];
        else if (v !== undefined) merged[k] = v;
      }
      const next: Network = parseModel(networkSchema, merged);
      const before = inventory.updateNetwork(next);
      await convergeOrUndo(next.id, () => inventory.updateNetwork(before));
      return networkViewOf(inventory.requireNetwork(next.id));
    },
  );
  r.delete(
    '/v1/networks/:id',
    {
      schema: {
        tags: ['networks'],
        summary: 'Delete a network (force: with its VMs)',
        params: idParam,
        querystring: z.object({ force: z.enum(['true', 'false']).optional() }),
        response: { 200: z.object({ deleted: z.string(), vms_deleted: z.number() }), ...errors },
      },
    },
    async (req) => {
      const removed = inventory.deleteNetwork(req.params.id, req.query.force === 'true');
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

  // -- VMs --
  r.get(
    '/v1/vms',
    {
      schema: {
        tags: ['vms'],
        summary: 'List VMs (user data omitted)',
        querystring: z.object({ network: z.string().optional() }),
        response: { 200: z.array(vmView) },
      },
    },
    (req) => inventory.vmList(req.query.network).map((v) => vmViewOf(v, false)),
  );
  r.post(
    '/v1/vms',
    {
      schema: {
        tags: ['vms'],
        summary: 'Create a VM; guests see it when this returns',
        body: vmCreate,
        response: { 201: vmView, ...errors },
      },
    },
    async (req, reply) => {
      const vm = parseModel(vmSchema, vmInput(req.body));
      inventory.createVm(vm, 'api');
      return reply.code(201).send(vmViewOf(inventory.requireVm(vm.id), false));
    },
  );
  r.get(
    '/v1/vms/:id',
    { schema: { tags: ['vms'], summary: 'Show a VM, with its user data', params: idParam, response: { 200: vmView, 404: errorBody } } },
    (req) => vmViewOf(inventory.requireVm(req.params.id), true),
  );
  r.patch(
    '/v1/vms/:id',
    {
      schema: {
        tags: ['vms'],
        summary: 'Change a VM; null clears a field',
        params: idParam,
        body: vmPatch,
        response: { 200: vmView, ...errors },
      },
    },
    (req) => {
      const current = inventory.requireVm(req.params.id).vm;
      const merged: Record<string, unknown> = vmAsBody(current);
      const body = req.body as Record<string, unknown>;
      if (body['user_data'] !== undefined || body['user_data_b64'] !== undefined) delete merged['user_data_b64'];
      for (const [k, v] of Object.entries(body)) {
        if (v === null) delete merged[k];
        else if (v !== undefined) merged[k] = v;
      }
      const vm = parseModel(vmSchema, vmInput(merged));
      inventory.updateVm(vm);
      return vmViewOf(inventory.requireVm(vm.id), false);
    },
  );
  r.delete(
    '/v1/vms/:id',
    {
      schema: {
        tags: ['vms'],
        summary: 'Delete a VM',
        params: idParam,
        response: { 200: z.object({ deleted: z.string() }), 404: errorBody },
      },
    },
    (req) => {
      const { vm } = inventory.requireVm(req.params.id);
      inventory.deleteVm(vm.id);
      return { deleted: vm.id };
    },
  );
  r.post(
    '/v1/import',
    {
      schema: {
        tags: ['vms'],
        summary: 'Create or update networks and VMs, all or nothing',
        body: importBody,
        response: { 200: batchResult, ...errors },
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
  r.get(
    '/v1/vms/:id/password',
    {
      schema: {
        tags: ['vms'],
        summary: "The password the guest posted (Nova's os-server-password); empty when none",
        params: idParam,
        response: { 200: z.object({ password: z.string() }), 404: errorBody },
      },
    },
    (req) => ({
      password: inventory.getPassword(req.params.id) ?? '',
    }),
  );
  r.delete(
    '/v1/vms/:id/password',
    {
      schema: {
        tags: ['vms'],
        summary: 'Clear the password so the guest may post a new one',
        params: idParam,
        response: { 204: z.null(), 404: errorBody },
      },
    },
    async (req, reply) => {
      inventory.clearPassword(req.params.id);
      return reply.code(204).send(null);
    },
  );
  r.get(
    '/v1/vms/:id/configdrive',
    {
      schema: {
        tags: ['vms'],
        summary:
          "The VM's config drive (label config-2): an ISO 9660 image (Rock Ridge, Joliet) or a 64 MiB vfat image, as application/octet-stream",
        params: idParam,
        querystring: z.object({ format: z.enum(DRIVE_FORMATS, "must be 'iso' or 'vfat'").default('iso') }),
      },
    },
    async (req, reply) => {
      inventory.requireVm(req.params.id);
      const image = await deps.configDrive(req.params.id, req.query.format);
      return reply
        .header('content-type', 'application/octet-stream')
        .header('content-disposition', `attachment; filename="${req.params.id}-config-2.${req.query.format === 'iso' ? 'iso' : 'img'}"`)
        .send(image);
    },
  );
  r.post(
    '/v1/vms/:id/fetch',
    {
      schema: {
        tags: ['vms'],
        summary: 'Fetch a path as the VM sees it, through its namespace, DNAT and listener',
        params: idParam,
        body: fetchBody,
        response: { 200: fetchResult, ...errors },
      },
    },
    async (req) => {
      const { vm } = inventory.requireVm(req.params.id);
      const result = await deps.probe(vm.network, vm.id, req.body.path, req.body.method);
      return { status: result.status, headers: result.headers, body_b64: result.body.toString('base64') };
    },
  );

  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    const body = await deps.metrics.registry.metrics();
    return reply.header('content-type', deps.metrics.registry.contentType).send(body);
  });
  app.get('/openapi.json', { schema: { hide: true } }, () => app.swagger());

  await app.ready();
  return app;
}

export interface SocketOptions {
  path: string;
  /** Group that may use the socket (mode 0660); undefined keeps root's group. */
  gid?: number;
}

/** Listens on the admin Unix socket: replaces a stale socket file, refuses a live one. */
export async function listenAdmin(app: FastifyInstance, options: SocketOptions): Promise<void> {
  mkdirSync(dirname(options.path), { recursive: true, mode: 0o755 });
  if (existsSync(options.path)) {
    const alive = await new Promise<boolean>((resolve) => {
      const s = connect(options.path);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (alive) throw new ImdsError('DAEMON_RUNNING', `another process serves the admin socket ${options.path}`);
    rmSync(options.path, { force: true });
  }
  await app.listen({ path: options.path });
  chmodSync(options.path, 0o660);
  if (options.gid !== undefined) chownSync(options.path, 0, options.gid);
}
