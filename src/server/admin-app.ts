// The admin API: a separate Fastify app on a Unix socket (never inside a guest namespace). JSON in
// and out, bodies validated with zod, errors as {code, message, field?} with stable codes, and an
// OpenAPI document generated from the route schemas (docs/openapi.json).
//
// This module builds the app (swagger, error and not-found handlers, the hook that holds changes
// until the kernel has them) and registers one plugin per resource, with its prefix; each route
// and its schema live in src/server/admin/.
import { chmodSync, chownSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import swagger from '@fastify/swagger';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import { hasZodFastifySchemaValidationErrors, jsonSchemaTransform, serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import { httpStatusOf, ImdsError, isImdsError, messageOf } from '../errors.ts';
import type { AdminDeps, AdminPlugin } from './admin/deps.ts';
import { doctorRoutes } from './admin/doctor.ts';
import { importRoutes } from './admin/import.ts';
import { networkRoutes } from './admin/networks.ts';
import { storeRoutes } from './admin/store.ts';
import { documentRoutes, systemRoutes } from './admin/system.ts';
import { tokenRoutes } from './admin/tokens.ts';
import { schemaValidationBody } from './admin/validation.ts';
import { vmRoutes } from './admin/vms.ts';

export type { AdminDeps } from './admin/deps.ts';

export const API_VERSION = '1.0.0';

/** Each resource's routes and where they live; registered in this order (the OpenAPI document's order). */
const PLUGINS: readonly (readonly [AdminPlugin, string])[] = [
  [systemRoutes, '/v1'],
  [tokenRoutes, '/v1/token-key'],
  [networkRoutes, '/v1/networks'],
  [vmRoutes, '/v1/vms'],
  [importRoutes, '/v1/import'],
  [doctorRoutes, '/v1/doctor'],
  [storeRoutes, '/v1'],
  [documentRoutes, ''],
];

export async function buildAdminApp(deps: AdminDeps): Promise<FastifyInstance> {
  const app = Fastify({
    // tsc needs the assertion: without it the app is typed by pino's Logger, not FastifyInstance.
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion
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
          "Manage the networks and VMs imds serves. Served on the daemon's Unix socket (admin_socket). Errors are {code, message, " +
          'field?}; codes are listed in docs/errors.md.',
      },
    },
    transform: jsonSchemaTransform,
  });

  app.setErrorHandler(answerError);
  app.setNotFoundHandler((request, reply) =>
    reply.code(404).send({ code: 'NOT_FOUND', message: `no route ${request.method} ${request.url}` }),
  );
  // No change is answered before the kernel has it (guest sets, DHCP hosts): see vmChangesApplied.
  app.addHook('onSend', async (request) => {
    if (request.method !== 'GET' && request.method !== 'HEAD') await deps.vmChangesApplied?.();
  });

  for (const [plugin, prefix] of PLUGINS) await app.register(plugin, { prefix, deps });

  await app.ready();
  return app;
}

/** Every error as {code, message, field?}: schema problems and client errors 400, ImdsErrors by their code, the rest 500. */
function answerError(err: FastifyError, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  if (hasZodFastifySchemaValidationErrors(err)) return reply.code(400).send(schemaValidationBody(err.validation, err.validationContext));
  if (isImdsError(err)) {
    const status = httpStatusOf(err.code);
    if (status >= 500) request.log.error({ err: err.message, code: err.code }, 'admin request failed');
    return reply.code(status).send(err.toJSON());
  }
  const { statusCode } = err;
  if (statusCode !== undefined && statusCode >= 400 && statusCode < 500) {
    return reply.code(statusCode).send({ code: 'VALIDATION_FAILED', message: messageOf(err) });
  }
  request.log.error({ err: messageOf(err) }, 'admin request failed');
  return reply.code(500).send({ code: 'INTERNAL', message: messageOf(err) });
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
  await secureAdminSocket(options.path, options.gid);
}

/** The admin socket is 0660, owned by root and `admin_group` when set. */
export function secureAdminSocket(path: string, gid: number | undefined): Promise<void> {
  chmodSync(path, 0o660);
  if (gid !== undefined) chownSync(path, 0, gid);
  return Promise.resolve();
}
