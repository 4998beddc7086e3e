// The registry's key layout in etcd, version 1 (docs/registry.md), and its documents: key builders
// and parsers, encoders, and decoders that validate a value with the model's schemas. A document
// that does not validate is reported, never thrown: one bad value in etcd must not stop a daemon.
import { z } from 'zod';
import { hostnameSchema, networkSchema, uuidSchema, vmSchema, type Network, type Vm } from '../model/schema.ts';
import { formatPath } from '../model/validate.ts';

export const LAYOUT_VERSION = 1;
/** The longest password a guest may post (the guest API's limit too). */
export const PASSWORD_MAX = 4096;
const TOKEN_KEY_BYTES = 32;

export interface RegistryKeys {
  /** `<prefix>v1/`: every key of this layout is under it (what a daemon reads and watches). */
  readonly root: string;
  readonly layout: string;
  readonly tokenKey: string;
  network(id: string): string;
  /** A host's registration: written by its daemon at every start, kept (what writes check `host` against). */
  host(id: string): string;
  /** A host's liveness: written by its daemon with a lease, gone once the daemon stops or stops renewing it. */
  alive(id: string): string;
  vm(id: string): string;
  password(vmId: string): string;
}

export function registryKeys(prefix: string): RegistryKeys {
  const root = `${prefix}v${LAYOUT_VERSION}/`;
  return {
    root,
    layout: `${root}layout`,
    tokenKey: `${root}token-key`,
    network: (id) => `${root}networks/${id}`,
    host: (id) => `${root}hosts/${id}`,
    alive: (id) => `${root}alive/${id}`,
    vm: (id) => `${root}vms/${id}`,
    password: (vmId) => `${root}passwords/${vmId}`,
  };
}

export type ParsedKey =
  | { kind: 'network'; id: string }
  | { kind: 'vm'; id: string }
  | { kind: 'password'; id: string }
  | { kind: 'host'; id: string }
  | { kind: 'alive'; id: string }
  | { kind: 'token-key' }
  | { kind: 'layout' };

/** What a key under `keys.root` names; undefined for a key this layout does not know (ignored). */
export function parseKey(keys: RegistryKeys, key: string): ParsedKey | undefined {
  if (!key.startsWith(keys.root)) return undefined;
  const rest = key.slice(keys.root.length);
  if (rest === 'layout') return { kind: 'layout' };
  if (rest === 'token-key') return { kind: 'token-key' };
  const slash = rest.indexOf('/');
  if (slash < 0) return undefined;
  const dir = rest.slice(0, slash);
  const id = rest.slice(slash + 1);
  if (id === '' || id.includes('/')) return undefined;
  if (dir === 'networks') return { kind: 'network', id };
  if (dir === 'vms') return { kind: 'vm', id };
  if (dir === 'passwords') return { kind: 'password', id };
  if (dir === 'hosts') return { kind: 'host', id };
  if (dir === 'alive') return { kind: 'alive', id };
  return undefined;
}

/** A VM as the registry holds it: the model's VM and the host it runs on. */
export interface PlacedVm {
  vm: Vm;
  host: string;
}

export type Decoded<T> = { ok: true; value: T } | { ok: false; reason: string };

function zodReason(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((i) => `${i.path.length > 0 ? `${formatPath(i.path)}: ` : ''}${i.message}`)
    .join('; ');
}

function parseJsonObject(value: string): Decoded<Record<string, unknown>> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch (err) {
    return { ok: false, reason: `not JSON: ${(err as Error).message}` };
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return { ok: false, reason: 'not a JSON object' };
  return { ok: true, value: parsed as Record<string, unknown> };
}

function checkId(id: string, docId: unknown, normalise: (v: string) => string): string | undefined {
  return typeof docId === 'string' && normalise(docId) === id ? undefined : `its id ${JSON.stringify(docId)} is not the key's (${id})`;
}

export function encodeNetwork(network: Network): string {
  return JSON.stringify(network);
}

/** A document of one schema whose own id (`idOf`) must be its key's `id`. */
function decodeKeyed<T>(id: string, value: string, schema: z.ZodType<T>, idOf: (doc: T) => unknown): Decoded<T> {
  const json = parseJsonObject(value);
  if (!json.ok) return json;
  const parsed = schema.safeParse(json.value);
  if (!parsed.success) return { ok: false, reason: zodReason(parsed.error) };
  const clash = checkId(id, idOf(parsed.data), (v) => v);
  return clash === undefined ? { ok: true, value: parsed.data } : { ok: false, reason: clash };
}

/** The network document under `networks/<id>`: the admin API's network body; its id must be the key's. */
export function decodeNetwork(id: string, value: string): Decoded<Network> {
  return decodeKeyed(id, value, networkSchema, (n) => n.id);
}

/** The VM document: the admin API's VM body (user data as `user_data_b64`) and `host`. */
export function encodeVm(placed: PlacedVm): string {
  const { user_data, ...rest } = placed.vm;
  return JSON.stringify({
    ...rest,
    ...(user_data === undefined ? {} : { user_data_b64: user_data.toString('base64') }),
    host: placed.host,
  });
}

const vmDocExtras = z.object({
  host: hostnameSchema,
  user_data: z.string().optional(),
  user_data_b64: z.base64('must be base64').optional(),
});

/** The VM document under `vms/<id>`: `host`, user data as `user_data` (text) or `user_data_b64`; its id must be the key's. */
export function decodeVm(id: string, value: string): Decoded<PlacedVm> {
  const json = parseJsonObject(value);
  if (!json.ok) return json;
  const { host, user_data, user_data_b64, ...rest } = json.value;
  const extras = vmDocExtras.safeParse({ host, user_data, user_data_b64 });
  if (!extras.success) return { ok: false, reason: zodReason(extras.error) };
  if (extras.data.user_data !== undefined && extras.data.user_data_b64 !== undefined)
    return { ok: false, reason: 'user_data: give user_data or user_data_b64, not both' };
  const bytes =
    extras.data.user_data_b64 !== undefined
      ? Buffer.from(extras.data.user_data_b64, 'base64')
      : extras.data.user_data === undefined
        ? undefined
        : Buffer.from(extras.data.user_data, 'utf8');
  const parsed = vmSchema.safeParse(bytes === undefined ? rest : { ...rest, user_data: bytes });
  if (!parsed.success) return { ok: false, reason: zodReason(parsed.error) };
  const clash = checkId(id, parsed.data.id, (v) => v.toLowerCase());
  if (clash !== undefined) return { ok: false, reason: clash };
  return { ok: true, value: { vm: parsed.data, host: extras.data.host } };
}

/** A VM id as a key segment: the model's (lower-case) UUID; undefined when the segment is none. */
export function vmIdOfKey(id: string): string | undefined {
  const parsed = uuidSchema.safeParse(id);
  return parsed.success && parsed.data === id ? parsed.data : undefined;
}

/** The password document under `passwords/<vm id>`: the password itself, as the guest posted it. */
export function decodePassword(value: string): Decoded<string> {
  if (value === '') return { ok: false, reason: 'is empty' };
  if (value.length > PASSWORD_MAX) return { ok: false, reason: `is longer than ${PASSWORD_MAX} characters` };
  return { ok: true, value };
}

/** The shared IMDSv2 token key: 32 bytes, base64. */
export function encodeTokenKey(key: Buffer): string {
  return key.toString('base64');
}

export function decodeTokenKey(value: string): Decoded<Buffer> {
  const key = Buffer.from(value, 'base64');
  if (key.length !== TOKEN_KEY_BYTES || key.toString('base64') !== value)
    return { ok: false, reason: `must be ${TOKEN_KEY_BYTES} bytes in base64` };
  return { ok: true, value: key };
}

export function encodeLayout(): string {
  return JSON.stringify({ version: LAYOUT_VERSION });
}

/**
 * The layout version under `<prefix>v1/layout`. Absent is version 1 (a registry written by a controller
 * alone, before any daemon started); anything else than 1 is a layout this imds does not know.
 */
export function decodeLayout(value: string): Decoded<number> {
  const json = parseJsonObject(value);
  if (!json.ok) return json;
  const version = json.value['version'];
  return typeof version === 'number' && Number.isInteger(version)
    ? { ok: true, value: version }
    : { ok: false, reason: 'no integer version' };
}

/**
 * A host as its daemon registers it (`hosts/<host_id>`, and the leased `alive/<host_id>`): `version`,
 * the imds version of the daemon that last registered it; `started_at`, when that daemon started (ISO 8601).
 */
const hostRecordSchema = z.object({ host_id: hostnameSchema, version: z.string().max(100), started_at: z.string().max(40) });
export type HostRecord = z.infer<typeof hostRecordSchema>;

export function encodeHost(record: HostRecord): string {
  return JSON.stringify(record);
}

/** A host's registration or liveness document; its host_id must be the key's. */
export function decodeHost(id: string, value: string): Decoded<HostRecord> {
  return decodeKeyed(id, value, hostRecordSchema, (h) => h.host_id);
}
