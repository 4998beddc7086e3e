// The `registry:` section of the configuration (issue 18): etcd's endpoints, the key prefix and the
// client's TLS files. Without it the daemon keeps its local store as the only source of records.
import { isAbsolute } from 'node:path';
import { z } from 'zod';

/** `host:port`, `http://host:port` or `https://host:port` (a host name, an IPv4 address or a bracketed IPv6 one). */
const ENDPOINT = /^(?:https?:\/\/)?(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):(\d{1,5})$/;

export const endpointSchema = z.string().refine((v) => {
  const port = Number(ENDPOINT.exec(v)?.[1] ?? 0);
  return port >= 1 && port <= 65535;
}, 'must be host:port, http://host:port or https://host:port (port 1-65535, no path)');

const absolutePath = z.string().refine(isAbsolute, 'must be an absolute path');

export const DEFAULT_REGISTRY_PREFIX = '/imds/';

export const etcdSchema = z
  .object({
    endpoints: z.array(endpointSchema).min(1, 'must list at least one endpoint'),
    prefix: z
      .string()
      .regex(/^\/(?:[A-Za-z0-9._-]+\/)*$/, 'must start and end with "/" and hold only A-Z a-z 0-9 . _ - between slashes')
      .default(DEFAULT_REGISTRY_PREFIX),
    max_txn_ops: z
      .number()
      .int('must be a whole number')
      .min(4, 'must be at least 4')
      .max(1_000_000, 'must be at most 1000000')
      .default(128)
      .describe("etcd's --max-txn-ops: a `vm import` larger than this is written in several transactions"),
    tls: z
      .object({ ca: absolutePath.optional(), cert: absolutePath.optional(), key: absolutePath.optional() })
      .strict()
      .refine((t) => (t.cert === undefined) === (t.key === undefined), 'cert and key go together')
      .optional()
      .describe('PEM files: the CA of etcd server certificates, and a client certificate and key for --client-cert-auth'),
  })
  .strict()
  .superRefine((etcd, ctx) => {
    const secure = etcd.endpoints.map((e) => e.startsWith('https://'));
    if (secure.some((s) => s) && !secure.every((s) => s))
      ctx.addIssue({ code: 'custom', path: ['endpoints'], message: 'mixes https:// and plain endpoints: use one scheme for all' });
  });

export const registrySchema = z.object({ etcd: etcdSchema }).strict();

export type RegistryConfig = z.output<typeof registrySchema>;
export type EtcdConfig = z.output<typeof etcdSchema>;
