// PATCH /:id of a record (a network, a VM): one route shape for both. The body is a merge patch
// (merge-patch.ts: null clears a field); with a registry the change is written there (if_revision
// compared by etcd), without one it is applied to the inventory and if_revision is refused.
import type { z } from 'zod';
import type { AdminDeps, AdminRouter } from './deps.ts';
import { refuseIfRevision } from './registry-writes.ts';
import { errorResponses, idParam, type ifRevisionQuery } from './schemas.ts';

type Registry = NonNullable<AdminDeps['registry']>;
type IfRevision = z.output<typeof ifRevisionQuery>;

export interface PatchRoute<Body extends z.ZodType, Query extends z.ZodType<IfRevision>, View extends z.ZodType> {
  /** The OpenAPI tag, and what the summary calls the record ("network", "VM"). */
  tag: string;
  noun: string;
  /** The patch body (patchOf) and the view answered. */
  body: Body;
  view: View;
  /** ifRevisionQuery, or an extension of it. */
  query: Query;
  /** With a registry: the change written to etcd. */
  registry(registry: Registry, id: string, body: z.output<Body>, query: z.output<Query>): Promise<z.input<View>>;
  /** Without one: the change applied to the inventory. */
  local(id: string, body: z.output<Body>): z.input<View> | Promise<z.input<View>>;
}

export function patchRoute<Body extends z.ZodType, Query extends z.ZodType<IfRevision>, View extends z.ZodType>(
  app: AdminRouter,
  deps: AdminDeps,
  route: PatchRoute<Body, Query, View>,
): void {
  // The schemas as plain zod types: Fastify's inference cannot resolve a route's types while its
  // schemas are type parameters. The schemas still check the request and the answer at run time,
  // so the body and query are what `route` says.
  const schema = {
    tags: [route.tag],
    summary: `Change a ${route.noun}; null clears a field`,
    params: idParam,
    querystring: route.query as z.ZodType,
    body: route.body as z.ZodType,
    response: { 200: route.view as z.ZodType, ...errorResponses },
  };
  app.patch('/:id', { schema }, async (req) => {
    const body = req.body as z.output<Body>;
    const query = req.query as z.output<Query>;
    if (deps.registry !== undefined) return route.registry(deps.registry, req.params.id, body, query);
    refuseIfRevision(query);
    return route.local(req.params.id, body);
  });
}
