// The daemon's configuration file: YAML, validated with zod, frozen. Loading fails with one error
// that lists every problem as `FILE:LINE: FIELD: REASON` before anything touches the kernel.
import { readFileSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { LineCounter, parseDocument, isNode } from 'yaml';
import { z } from 'zod';
import { ImdsError } from './errors.ts';
import { parseListenAddress } from './model/listen-address.ts';
import { DEFAULT_NAMESPACE_PREFIX } from './model/names.ts';
import { domainSchema, hostnameSchema, networkSchema, vmSchema, type Network, type Vm } from './model/schema.ts';
import { registrySchema } from './registry/registry-config.ts';
import { checkNetworks, checkVms, formatPath, type Problem } from './model/validate.ts';

const absolutePath = z.string().refine(isAbsolute, 'must be an absolute path');

export const configSchema = z
  .object({
    state_dir: absolutePath.default('/var/lib/imds'),
    admin_socket: absolutePath.default('/run/imds/admin.sock'),
    dhcp_dir: absolutePath
      .default('/run/imds/dhcp')
      .describe("dnsmasq's hosts, options and lease files, one directory per DHCP network (must be readable by user nobody)"),
    listen_port: z
      .number()
      .int('must be an integer')
      .min(1, 'must be 1..65535')
      .max(65535, 'must be 1..65535')
      .refine((p) => p !== 80, 'must not be 80: port 80 is the DNAT source')
      .default(8775),
    namespace_prefix: z
      .string()
      .regex(/^[a-z][a-z0-9-]{0,39}$/, 'must be 1-40 characters of a-z, 0-9 and "-", starting with a letter')
      .default(DEFAULT_NAMESPACE_PREFIX),
    admin_group: z
      .string()
      .regex(/^[a-z_][a-z0-9_-]{0,31}$/, 'must be a group name')
      .optional()
      .describe('group that may use the admin socket (mode 0660)'),
    seed_mode: z.enum(['merge', 'authoritative']).default('merge'),
    dhcp_domain: domainSchema.default('novalocal'),
    log_level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    request_timeout_ms: z.number().int().min(100).max(600_000).default(10_000),
    headers_timeout_ms: z.number().int().min(100).max(600_000).default(5_000),
    keep_alive_timeout_ms: z.number().int().min(100).max(600_000).default(5_000),
    rate_limit_per_second: z
      .number()
      .min(0, 'must be 0 (off) or more')
      .max(100_000, 'must be at most 100000')
      .default(20)
      .describe('requests a second one guest address may make after its burst; 0 turns the limit off'),
    rate_limit_burst: z
      .number()
      .int('must be an integer')
      .min(1, 'must be 1..100000')
      .max(100_000, 'must be 1..100000')
      .default(300)
      .describe('requests a guest address may make at once (a cloud-init or cloudbase-init boot makes 20-100)'),
    spoof_check_interval_s: z
      .number()
      .min(0, 'must be 0 (off) or more')
      .max(3600, 'must be at most 3600')
      .default(30)
      .describe("how often the namespaces' spoofing counters are read (one nft run per network); 0: never"),
    drift_check_interval_s: z
      .number()
      .min(0, 'must be 0 (off) or more')
      .max(3600, 'must be at most 3600')
      .default(2)
      .describe('how often namespaces are checked for removal (a stat each; the kernel sends no event); other drift is noticed by events'),
    data_plane: z
      .enum(['native', 'node'])
      .default('native')
      .describe("what answers guests first: the addon's loop (native) or node:http with the JS fast path (node); docs/performance.md"),
    fast_path: z
      .boolean()
      .default(true)
      .describe('with data_plane: node, answer complete simple GETs straight from the socket (docs/performance.md)'),
    access_log: z
      .string({ error: 'must be off, journal or an absolute file path' })
      .refine((v) => v === 'off' || v === 'journal' || isAbsolute(v), 'must be off, journal or an absolute file path')
      .default('off')
      .describe('one line per guest request: off, journal (pino lines on standard output) or a file appended to (docs/configuration.md)'),
    access_log_lines_per_second: z
      .number()
      .int('must be an integer')
      .min(0, 'must be 0 (no limit) or more')
      .max(1_000_000, 'must be at most 1000000')
      .default(1000)
      .describe('access log lines written in one second at most; the rest are counted in a summary line (0: no limit)'),
    metrics_listen: z
      .string()
      .superRefine((value, ctx) => {
        const parsed = parseListenAddress(value);
        if (!parsed.ok) ctx.addIssue({ code: 'custom', message: `invalid address "${value}": ${parsed.reason}` });
      })
      .optional()
      .describe('also serve GET /metrics over TCP on <address>:<port> (e.g. 127.0.0.1:9178), in the host namespace; off when absent'),
    host_id: hostnameSchema
      .optional()
      .describe("this hypervisor's name in the registry: a VM document's `host` names it (required with registry)"),
    registry: registrySchema.optional().describe('networks and VMs come from etcd (docs/registry.md); absent: the local store only'),
    networks: z.array(networkSchema).default([]),
    vms: z.array(vmSchema).default([]),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    if (cfg.registry !== undefined && cfg.host_id === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['host_id'],
        message: "is required with registry: the name VM documents' host field gives this hypervisor",
      });
  });

export type Config = Readonly<Omit<z.output<typeof configSchema>, 'networks' | 'vms'>> & {
  readonly networks: readonly Network[];
  readonly vms: readonly Vm[];
  /** Where the configuration was read from. */
  readonly path: string;
};

export interface ConfigProblem {
  line?: number;
  field: string;
  message: string;
}

export function loadConfig(path: string): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ImdsError('CONFIG_UNREADABLE', `${path}: cannot read the configuration: ${(err as Error).message}`, { cause: err });
  }
  return parseConfig(text, path);
}

/** Parses and validates configuration text; `path` is used in messages only. */
export function parseConfig(text: string, path: string): Config {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true, customTags: ['binary'] });
  if (doc.errors.length > 0) {
    const problems = doc.errors.map((e) => ({
      line: e.linePos?.[0]?.line ?? 0,
      field: '(yaml)',
      message: e.message.split('\n')[0] ?? e.message,
    }));
    throw configError(path, problems);
  }
  // The parsed values are slices of `text`: each one kept alive (the VMs' ids, addresses and
  // documents live as long as the daemon) would keep the whole file with it, 4 MB at 10,000 VMs. A
  // structured clone gives them their own strings (docs/performance.md, memory).
  const raw: unknown = structuredClone(doc.toJS() ?? {});
  const lineOf = (p: readonly PropertyKey[]): number | undefined => {
    for (let len = p.length; len >= 0; len--) {
      const node = doc.getIn(p.slice(0, len) as unknown[], true);
      if (isNode(node) && node.range) return lines.linePos(node.range[0]).line;
    }
    return undefined;
  };

  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    throw configError(
      path,
      parsed.error.issues.map((issue) => {
        const field = issue.code === 'unrecognized_keys' ? formatPath([...issue.path, issue.keys[0] ?? '']) : formatPath(issue.path);
        const message =
          issue.code === 'unrecognized_keys'
            ? `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`
            : issue.message;
        const line = lineOf(issue.code === 'unrecognized_keys' ? [...issue.path, issue.keys[0] ?? ''] : issue.path);
        return { ...(line === undefined ? {} : { line }), field, message };
      }),
    );
  }
  const cfg = parsed.data;
  const crossProblems: Problem[] = [...checkNetworks(cfg.networks), ...checkVms(cfg.networks, cfg.vms)];
  if (crossProblems.length > 0) {
    throw configError(
      path,
      crossProblems.map((p) => {
        const line = lineOf(p.path);
        return { ...(line === undefined ? {} : { line }), field: formatPath(p.path), message: p.message };
      }),
    );
  }
  return deepFreeze({ ...cfg, path });
}

function configError(path: string, problems: ConfigProblem[]): ImdsError {
  const lines = problems.map((p) => `${path}${p.line === undefined ? '' : `:${p.line}`}: ${p.field}: ${p.message}`);
  const first = problems[0];
  return new ImdsError(
    'CONFIG_INVALID',
    `invalid configuration (${problems.length} problem${problems.length > 1 ? 's' : ''}):\n  ${lines.join('\n  ')}`,
    {
      ...(first === undefined ? {} : { field: first.field }),
      details: { file: path, problems },
    },
  );
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Buffer.isBuffer(value) && !Object.isFrozen(value)) {
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key]);
    Object.freeze(value);
  }
  return value;
}
