// The file `imds vm import` reads, turned into the POST /v1/import body. Accepted: the configuration
// file's shape (`networks:` and `vms:` lists, what `imds export` writes), a list of VMs, one VM or one network —
// so `imds vm show ID --json` and `imds network show ID --json` output can be fed back: the fields
// only a view has (state, counters, origin, sizes) are dropped. YAML `!!binary` user data is sent as
// base64. A VM view without its user data (`vm list --json` leaves it out) is refused rather than
// imported without it, which would delete the VM's user data.
import { ImdsError } from '../errors.ts';

type Entry = Record<string, unknown>;

export interface ImportRequest {
  networks?: Entry[];
  vms: Entry[];
}

/** Fields of `vm show/list --json` that are not part of a VM's declaration. */
const VM_VIEW_FIELDS = ['user_data_bytes', 'password_set', 'origin', 'contact'] as const;
/** Fields of `network show/list --json` that are not part of a network's declaration. */
const NETWORK_VIEW_FIELDS = ['origin', 'vms', 'state', 'reason', 'dhcp_server'] as const;

const isObject = (v: unknown): v is Entry => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);

function fail(field: string, message: string): ImdsError {
  return new ImdsError('VALIDATION_FAILED', `${field}: ${message}`, { field });
}

function vmEntry(v: unknown, i: number): Entry {
  if (!isObject(v)) throw fail(`vms[${i}]`, 'must be an object (a VM)');
  const out: Entry = { ...v };
  if ('user_data_bytes' in v) {
    const bytes = v['user_data_bytes'];
    if (typeof bytes === 'number' && bytes > 0 && v['user_data'] === undefined && v['user_data_b64'] === undefined)
      throw fail(
        `vms[${i}].user_data`,
        `the VM has ${bytes} bytes of user data but the file does not hold them (vm list --json leaves them out; use vm show ` +
          `--json or imds export), so importing it would delete them`,
      );
    for (const f of VM_VIEW_FIELDS) delete out[f];
  }
  const userData = out['user_data'];
  if (userData instanceof Uint8Array) {
    delete out['user_data'];
    out['user_data_b64'] = Buffer.from(userData).toString('base64');
  }
  return out;
}

function networkEntry(n: unknown, i: number): Entry {
  if (!isObject(n)) throw fail(`networks[${i}]`, 'must be an object (a network)');
  if (!('state' in n)) return n;
  // A view: its bridge is always shown; only a bridge other than the default one was declared.
  const out: Entry = { ...n };
  for (const f of NETWORK_VIEW_FIELDS) delete out[f];
  if (out['bridge'] === `imdsb-${String(n['id'])}`) delete out['bridge'];
  return out;
}

function list(value: unknown, field: string): unknown[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw fail(field, 'must be a list');
  return value;
}

/** The import body for a parsed YAML or JSON document. */
export function importRequest(doc: unknown): ImportRequest {
  if (Array.isArray(doc)) return { vms: doc.map(vmEntry) };
  if (!isObject(doc)) throw fail('file', 'must hold `networks:` and/or `vms:` lists, a list of VMs, or one VM');
  if ('id' in doc && 'cidr' in doc) return { networks: [networkEntry(doc, 0)], vms: [] };
  if ('id' in doc && 'network' in doc && !('vms' in doc)) return { vms: [vmEntry(doc, 0)] };
  const networks = list(doc['networks'], 'networks').map(networkEntry);
  return { ...(doc['networks'] === undefined ? {} : { networks }), vms: list(doc['vms'], 'vms').map(vmEntry) };
}

interface Changes {
  created: string[];
  updated: string[];
  unchanged: string[];
  deleted: string[];
}

export interface ImportResult {
  dry_run: boolean;
  networks: Changes;
  vms: Changes;
}

/** POST /v1/import with the command's flags as its query. */
export function importPath(opts: { prune?: true; pruneAll?: true; dryRun?: true }): string {
  if (opts.prune === true && opts.pruneAll === true)
    throw new ImdsError('VALIDATION_FAILED', '--prune and --prune-all: give one of them', { field: '--prune' });
  const query = [
    ...(opts.dryRun === true ? ['dry_run=true'] : []),
    ...(opts.prune === true ? ['prune=vms'] : opts.pruneAll === true ? ['prune=all'] : []),
  ];
  return `/v1/import${query.length === 0 ? '' : `?${query.join('&')}`}`;
}

const count = (c: Changes, verbs: readonly [string, string, string, string]): string =>
  `${c.created.length} ${verbs[0]}, ${c.updated.length} ${verbs[1]}, ${c.unchanged.length} ${verbs[2]}, ${c.deleted.length} ${verbs[3]}`;

/** The result in sentences; a dry run lists every record that would change (+ created, ~ updated, - deleted). */
export function importText(r: ImportResult): string {
  if (!r.dry_run) {
    const verbs = ['created', 'updated', 'unchanged', 'deleted'] as const;
    return `imported: networks ${count(r.networks, verbs)}; VMs ${count(r.vms, verbs)}\n`;
  }
  const verbs = ['to create', 'to update', 'unchanged', 'to delete'] as const;
  const lines = ['dry run, nothing was changed:', `networks: ${count(r.networks, verbs)}`, `VMs: ${count(r.vms, verbs)}`];
  for (const [kind, c] of [
    ['network', r.networks],
    ['vm', r.vms],
  ] as const) {
    for (const id of c.created) lines.push(`+ ${kind} ${id}`);
    for (const id of c.updated) lines.push(`~ ${kind} ${id}`);
    for (const id of c.deleted) lines.push(`- ${kind} ${id}`);
  }
  return `${lines.join('\n')}\n`;
}

export function printImport(r: ImportResult): void {
  process.stdout.write(importText(r));
}
