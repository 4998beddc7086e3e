// Admin API schemas shared by several routes (a route's own schemas live beside it). Bodies reuse the
// model schemas, so the API accepts exactly what the configuration file accepts; JSON carries user
// data as text or base64.
import { z } from 'zod';
import { ImdsError } from '../../errors.ts';
import { hostnameSchema, networkSchema, vmSchema, type Vm } from '../../model/schema.ts';

export const errorBody = z
  .object({
    code: z.string().describe('stable error code (docs/errors.md)'),
    message: z.string(),
    field: z.string().optional().describe('the input field the error is about'),
    details: z.record(z.string(), z.unknown()).optional(),
  })
  .describe('error');

/** The error responses of a route that validates input, looks records up and changes them. */
export const errorResponses = { 400: errorBody, 404: errorBody, 409: errorBody, 500: errorBody };

export const networkCreate = networkSchema;

/** Every optional field of a create schema becomes nullable (null clears it); required ones stay non-null. */
export function patchOf<S extends z.ZodRawShape>(shape: S, required: readonly string[]) {
  const out: Record<string, z.ZodType> = {};
  for (const [key, schema] of Object.entries(shape)) {
    const inner = schema instanceof z.ZodOptional ? (schema.unwrap() as z.ZodType) : (schema as z.ZodType);
    out[key] = required.includes(key) ? inner.optional() : inner.nullable().optional();
  }
  return z.object(out).strict().describe('fields to change; null clears an optional field');
}

const userDataFields = {
  user_data: z.string().optional().describe('user data as UTF-8 text'),
  user_data_b64: z.base64().optional().describe('user data as base64 (binary, gzip)'),
};

export const vmCreate = vmSchema
  .omit({ user_data: true })
  .extend(userDataFields)
  .extend({ host: hostnameSchema.optional().describe('with a registry: the host (host_id) the VM runs on; default this host') })
  .strict();

export const idParam = z.object({ id: z.string().min(1).max(64) });

/** `?if_revision=N` (with a registry): the write happens only if the document's mod revision is still N. */
export const ifRevision = z
  .string()
  .regex(/^[1-9][0-9]{0,15}$/, 'must be a registry revision (a positive whole number, as `revision` shows)')
  .optional()
  .describe('with a registry: change it only if its revision is still this one (else 409 REGISTRY_CONFLICT)');
export const ifRevisionQuery = z.object({ if_revision: ifRevision });

export const networkView = z.object({
  id: z.string(),
  cidr: z.string(),
  service_ip: z.string(),
  gateway: z.string().optional(),
  bridge: z.string().describe('the bridge in use (the default imdsb-<id> unless configured)'),
  uplink: z.string().optional(),
  mtu: z.number().optional(),
  domain: z.string().optional(),
  dhcp: z.boolean().optional(),
  dns: z.array(z.string()).optional(),
  ntp: z.array(z.string()).optional(),
  dhcp_lease_time: z.number().optional(),
  vendor_data: z.record(z.string(), z.unknown()).optional(),
  dhcp_server: z
    .object({
      state: z.enum(['running', 'restarting', 'stopped']),
      pid: z.number().optional(),
      restarts: z.number().describe('times the daemon restarted it after it died'),
      last_error: z.string().optional(),
    })
    .optional()
    .describe("the network's dnsmasq (DHCP networks)"),
  origin: z.enum(['config', 'api', 'registry']),
  vms: z.number().describe('VMs on this network'),
  revision: z
    .number()
    .optional()
    .describe('with a registry: the mod revision of the document in etcd; give it as if_revision to change it only if nobody else did'),
  state: z.enum(['serving', 'degraded', 'pending']),
  reason: z.string().optional(),
});

/** One of a VM's recent requests (src/contact.ts). */
export const recentRequestView = z.object({
  at: z.string().describe('ISO 8601; for a native summary, its last request'),
  method: z.string().optional().describe('absent for a native summary'),
  path: z.string().optional().describe('as the guest sent it (cut at 160 characters); absent for a native summary: the loop records none'),
  status: z.number().describe('the answer (for a native summary, of its last request)'),
  requests: z.number().describe('1, or how many requests the native loop answered between two reads of its counters'),
  by: z.enum(['node', 'native']).describe('node: the JS fast path or the Fastify app; native: the data plane loop'),
});

export const vmView = z.object({
  id: z.string(),
  network: z.string(),
  ip: z.string(),
  mac: z.string(),
  hostname: z.string(),
  name: z.string().optional(),
  public_keys: z.record(z.string(), z.string()).optional(),
  meta: z.record(z.string(), z.string()).optional(),
  availability_zone: z.string().optional(),
  project_id: z.string().optional(),
  instance_type: z.string().optional(),
  image_id: z.string().optional(),
  public_ipv4: z.string().optional(),
  root_device_name: z.string().optional(),
  security_groups: z.array(z.string()).optional(),
  vendor_data: z.record(z.string(), z.unknown()).optional(),
  http_tokens: z.enum(['optional', 'required']).optional(),
  http_endpoint: z.enum(['enabled', 'disabled']).optional(),
  http_hop_limit: z.number().optional(),
  user_data_bytes: z.number(),
  user_data_b64: z.string().optional().describe('only on GET /v1/vms/{id}'),
  password_set: z.boolean(),
  host: z.string().optional().describe('with a registry: the host the VM runs on'),
  revision: z
    .number()
    .optional()
    .describe('with a registry: the mod revision of the document in etcd; give it as if_revision to change it only if nobody else did'),
  origin: z.enum(['config', 'api', 'registry']),
  contact: z
    .object({
      requests: z.number(),
      first_seen: z.string(),
      last_seen: z.string(),
      last_status: z.number(),
      recent: z
        .array(recentRequestView)
        .optional()
        .describe('only on GET /v1/vms/{id}: its last requests (at most 8) since the daemon started, newest first'),
    })
    .optional()
    .describe(
      "the VM's requests to the metadata service (kept across restarts in state_dir): count, first and last (ISO 8601), the last status",
    ),
});

type VmBody = z.output<typeof vmCreate>;

/** A VM body (create, or a patched one) as the model input: user data as bytes. */
export function vmInput(body: Partial<VmBody> & Record<string, unknown>): Record<string, unknown> {
  const { user_data, user_data_b64, ...rest } = body;
  if (user_data !== undefined && user_data !== null && user_data_b64 !== undefined && user_data_b64 !== null) {
    throw new ImdsError('VALIDATION_FAILED', 'user_data: give user_data or user_data_b64, not both', { field: 'user_data' });
  }
  const bytes =
    typeof user_data_b64 === 'string'
      ? Buffer.from(user_data_b64, 'base64')
      : typeof user_data === 'string'
        ? Buffer.from(user_data, 'utf8')
        : undefined;
  return bytes === undefined ? rest : { ...rest, user_data: bytes };
}

/** The stored VM as a create body (for PATCH merging). */
export function vmAsBody(vm: Vm): Record<string, unknown> {
  const { user_data, ...rest } = vm;
  return user_data === undefined ? { ...rest } : { ...rest, user_data_b64: user_data.toString('base64') };
}
