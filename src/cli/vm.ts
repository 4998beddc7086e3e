// `imds vm add|list|show|set|rm|import|password|configdrive|get`: clients of the admin API.
import { migrateVmCommand } from './vm-migrate.ts';
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { writeFileAtomic } from '../util/atomic-write.ts';
import { dirname, resolve } from 'node:path';
import { Command } from '@commander-js/extra-typings';
import { parse } from 'yaml';
import { ImdsError } from '../errors.ts';
import { clientOf } from './network.ts';
import { collect, defined, integer, jsonObject, pairs, readValue } from './input.ts';
import type { AdminClient } from './client.ts';
import { checkOutputFile, emit, formatOf, JSON_HELP, outputOption } from './output.ts';
import { importSummary, progressOn } from './progress.ts';
import { importPath, importRequest, importText, type ImportRequest, type ImportResult } from './import-document.ts';
import { passwordCommand } from './vm-password.ts';
import { ifRevisionOption, withIfRevision } from './if-revision.ts';
import { allowUnknownHostOption, withAllowUnknownHost } from './host.ts';
import { VM_REF, vmFields, vmsTable, type VmView } from './vm-view.ts';

const CLEAR_FIELD: Record<string, string> = {
  'user-data': 'user_data',
  'ssh-keys': 'public_keys',
  meta: 'meta',
  name: 'name',
  az: 'availability_zone',
  'project-id': 'project_id',
  'instance-type': 'instance_type',
  'image-id': 'image_id',
  'public-ip': 'public_ipv4',
  'security-groups': 'security_groups',
  'root-device': 'root_device_name',
  'vendor-data': 'vendor_data',
  'http-tokens': 'http_tokens',
  'http-endpoint': 'http_endpoint',
  'http-hop-limit': 'http_hop_limit',
};
const CLEARABLE = Object.keys(CLEAR_FIELD);

interface VmFlags {
  network?: string;
  ip?: string;
  mac?: string;
  hostname?: string;
  name?: string;
  userData?: string;
  sshKey?: string[];
  meta?: string[];
  az?: string;
  projectId?: string;
  instanceType?: string;
  imageId?: string;
  publicIp?: string;
  securityGroup?: string[];
  rootDevice?: string;
  vendorData?: string;
  httpTokens?: string;
  httpEndpoint?: string;
  httpHopLimit?: number;
  host?: string;
}

function vmBody(opts: VmFlags): Record<string, unknown> {
  return defined({
    network: opts.network,
    ip: opts.ip,
    mac: opts.mac,
    hostname: opts.hostname,
    host: opts.host,
    name: opts.name,
    user_data_b64: opts.userData === undefined ? undefined : readValue(opts.userData, '--user-data').toString('base64'),
    public_keys: pairs(opts.sshKey, '--ssh-key', true),
    meta: pairs(opts.meta, '--meta'),
    availability_zone: opts.az,
    project_id: opts.projectId,
    instance_type: opts.instanceType,
    image_id: opts.imageId,
    public_ipv4: opts.publicIp,
    security_groups: opts.securityGroup,
    root_device_name: opts.rootDevice,
    vendor_data: jsonObject(opts.vendorData, '--vendor-data'),
    http_tokens: opts.httpTokens,
    http_endpoint: opts.httpEndpoint,
    http_hop_limit: opts.httpHopLimit,
  });
}

function vmOptions<T extends Command<[string], Record<string, unknown>>>(cmd: T, required: boolean) {
  const opt = (flags: string, description: string) => (required ? cmd.requiredOption(flags, description) : cmd.option(flags, description));
  opt('--network <id>', 'the network the VM is on');
  opt('--ip <ip>', "the VM's address in the network");
  opt('--mac <mac>', "the VM's MAC address");
  opt('--hostname <name>', 'RFC 1123 host name');
  return cmd
    .option('--host <host_id>', "with a registry: the hypervisor (host_id) the VM runs on; default the daemon's own")
    .addOption(allowUnknownHostOption())
    .option('--name <name>', 'display name (default: the host name)')
    .option('--user-data <@file|-|text>', 'user data: @file, - for stdin, or the text itself (served byte for byte)')
    .option('--ssh-key <name=@file>', 'an SSH public key: NAME=@file or NAME=key text; repeatable', collect)
    .option('--meta <k=v>', 'instance metadata (meta); repeatable', collect)
    .option('--az <zone>', 'availability zone (default nova)')
    .option('--project-id <id>', 'project id')
    .option('--instance-type <flavor>', 'flavor name (EC2 instance-type; default m1.small)')
    .option('--image-id <id>', 'image id (EC2 ami-id derives from it)')
    .option('--public-ip <ip>', 'floating address (EC2 public-ipv4)')
    .option('--security-group <name>', "security group (EC2 security-groups); repeatable, default 'default'", collect)
    .option('--root-device <dev>', 'root device (EC2 block-device-mapping; default /dev/vda)')
    .option('--vendor-data <@file|json>', "vendor data (a JSON object), merged over the network's")
    .option('--http-tokens <optional|required>', 'required: EC2 tree only with an IMDSv2 session token (default optional)')
    .option('--http-endpoint <enabled|disabled>', 'disabled: every metadata request of the VM gets 403 (default enabled)')
    .option('--http-hop-limit <n>', 'IP TTL of the token response, 1..64 (default 1)', integer('--http-hop-limit'));
}

/** How a VM is named on the command line; the daemon resolves it (src/server/admin/vm-ref.ts). */

function pathOf(id: string): string {
  return `/v1/vms/${encodeURIComponent(id)}`;
}

export function vmCommand(): Command {
  const vm = new Command('vm').description("manage VMs (through the daemon's admin API)");
  const subcommands = [
    addVmCommand,
    listVmsCommand,
    showVmCommand,
    setVmCommand,
    rmVmCommand,
    migrateVmCommand,
    importCommand,
    passwordCommand,
    configdriveCommand,
    getCommand,
  ];
  for (const register of subcommands) register(vm);
  return vm;
}

function addVmCommand(parent: Command): void {
  vmOptions(
    parent.command('add').description('register a VM; its guest is served as soon as this returns').argument('<id>', 'instance UUID'),
    true,
  )
    .addOption(outputOption())
    .option('--json', JSON_HELP)
    .action(async (id, opts, cmd) => {
      const path = withAllowUnknownHost('/v1/vms', opts['allowUnknownHost'] as boolean | undefined);
      const created = await clientOf(cmd).call<VmView>('POST', path, { id, ...vmBody(opts) });
      emit(opts, created, (v) => `vm ${v.id} added: ${v.hostname} ${v.ip} on ${v.network}`);
    });
}

function listVmsCommand(parent: Command): void {
  parent
    .command('list')
    .description('list VMs')
    .option('--network <id>', 'only this network')
    .addOption(outputOption())
    .option('--json', JSON_HELP)
    .action(async (opts, cmd) => {
      const rows = await clientOf(cmd).call<VmView[]>(
        'GET',
        `/v1/vms${opts.network ? `?network=${encodeURIComponent(opts.network)}` : ''}`,
      );
      emit(opts, rows, vmsTable);
    });
}

function showVmCommand(parent: Command): void {
  parent
    .command('show')
    .description('show one VM (with -o json|yaml, its user data as base64)')
    .argument('<vm>', VM_REF)
    .addOption(outputOption())
    .option('--json', JSON_HELP)
    .action(async (id, opts, cmd) => {
      const v = await clientOf(cmd).call<VmView>('GET', pathOf(id));
      emit(opts, v, vmFields);
    });
}

function setVmCommand(parent: Command): void {
  vmOptions(parent.command('set').description('change a VM; guests see the change as soon as this returns').argument('<vm>', VM_REF), false)
    .option('--clear <field>', `clear an optional field (${CLEARABLE.join(', ')}); repeatable`, collect)
    .addOption(ifRevisionOption())
    .addOption(outputOption())
    .option('--json', JSON_HELP)
    .action(async (id, opts, cmd) => {
      const body = vmBody(opts);
      for (const field of (opts['clear'] as string[] | undefined) ?? []) {
        const key = CLEAR_FIELD[field];
        if (key === undefined)
          throw new ImdsError('VALIDATION_FAILED', `--clear: "${field}" is not one of ${CLEARABLE.join(', ')}`, { field: '--clear' });
        body[key] = null;
      }
      const path = withAllowUnknownHost(
        withIfRevision(pathOf(id), opts['ifRevision'] as number | undefined),
        opts['allowUnknownHost'] as boolean | undefined,
      );
      const v = await clientOf(cmd).call<VmView>('PATCH', path, body);
      emit(opts, v, (u) => `vm ${u.id} updated`);
    });
}

function rmVmCommand(parent: Command): void {
  parent
    .command('rm')
    .description('delete a VM')
    .argument('<vm>', VM_REF)
    .addOption(ifRevisionOption())
    .addOption(outputOption())
    .option('--json', JSON_HELP)
    .action(async (id, opts, cmd) => {
      const r = await clientOf(cmd).call<{ deleted: string }>('DELETE', withIfRevision(pathOf(id), opts.ifRevision));
      emit(opts, r, (d) => `vm ${d.deleted} deleted`);
    });
}

function importCommand(parent: Command): void {
  parent
    .command('import')
    .description('create or update many networks and VMs from a YAML or JSON file, all or nothing (progress on stderr when a terminal)')
    .argument(
      '<file>',
      'file with `networks:` and/or `vms:` lists (the configuration file format, `imds export`); one VM or a list of them (vm show --json); - for stdin',
    )
    .option('--prune', "also delete the API's VMs on the file's networks that the file does not list")
    .option('--prune-all', 'also delete every VM and network made through the API that the file does not list')
    .option('--dry-run', 'print what would be created, updated and deleted; change nothing')
    .addOption(allowUnknownHostOption())
    .addOption(outputOption())
    .option('--json', JSON_HELP)
    .action(async (file, opts, cmd) => {
      const progress = progressOn();
      let r: ImportResult;
      try {
        progress.phase(`reading ${file === '-' ? 'stdin' : file}`);
        const body = readImportFile(file);
        progress.phase(`importing ${importSummary(body.networks?.length ?? 0, body.vms.length, JSON.stringify(body).length)}`);
        r = await sendImport(clientOf(cmd, true), withAllowUnknownHost(importPath(opts), opts.allowUnknownHost), body);
      } finally {
        progress.done(); // also when the file is refused: no status line left on the terminal
      }
      emit(opts, r, importText);
    });
}

/** One request: the daemon applies the whole file or nothing. */
async function sendImport(client: AdminClient, path: string, body: ImportRequest): Promise<ImportResult> {
  return client.call<ImportResult>('POST', path, body);
}

/** The import request for a YAML or JSON file (- for stdin). */
function readImportFile(file: string): ImportRequest {
  let doc: unknown;
  try {
    doc = parse(readFileSync(file === '-' ? 0 : file, 'utf8'), { customTags: ['binary'] });
  } catch (err) {
    throw new ImdsError('VALIDATION_FAILED', `${file}: ${(err as Error).message}`, { field: 'file' });
  }
  return importRequest(doc);
}

function configdriveCommand(parent: Command): void {
  parent
    .command('configdrive')
    .description("write the VM's config drive image (label config-2; the same documents as the HTTP tree, no password)")
    .argument('<vm>', VM_REF)
    .requiredOption('-o, --output <file|->', 'where to write the image (- for stdout); replaced atomically')
    .option('--format <iso|vfat>', 'iso: ISO 9660 with Rock Ridge and Joliet (default); vfat: a 64 MiB FAT filesystem', 'iso')
    .action(async (id, opts, cmd) => {
      if (opts.format !== 'iso' && opts.format !== 'vfat') {
        throw new ImdsError('VALIDATION_FAILED', `--format: "${opts.format}" is not iso or vfat`, { field: '--format' });
      }
      const out = opts.output;
      if (out !== '-') {
        checkOutputFile(out, 'the image format is --format iso|vfat');
        checkWritable(out);
      }
      const image = await clientOf(cmd).download(`${pathOf(id)}/configdrive?format=${opts.format}`);
      if (out === '-') {
        process.stdout.write(image);
        return;
      }
      writeAtomically(out, image);
      process.stderr.write(`wrote ${out} (${opts.format}, ${image.length} bytes, label config-2)\n`);
    });
}

function getCommand(parent: Command): void {
  parent
    .command('get')
    .description("fetch a path exactly as the VM sees it, through its network's namespace, DNAT and listener")
    .argument('<vm>', VM_REF)
    .argument('<path>', 'e.g. /openstack/latest/meta_data.json')
    .option('-X, --method <method>', 'HTTP method', 'GET')
    .option('-i, --include', 'print the status line and headers first')
    .addOption(outputOption())
    .option('--json', 'print {status, headers, body_b64} (same as -o json)')
    .action(async (id, path, opts, cmd) => {
      const r = await clientOf(cmd).call<{ status: number; headers: Record<string, string>; body_b64: string }>(
        'POST',
        `${pathOf(id)}/fetch`,
        { path, method: opts.method.toUpperCase() },
      );
      if (formatOf(opts) === 'json' || formatOf(opts) === 'yaml') emit(opts, r, () => '');
      else {
        if (opts.include)
          process.stdout.write(
            `HTTP ${r.status}\n${Object.entries(r.headers)
              .map(([k, v]) => `${k}: ${v}`)
              .join('\n')}\n\n`,
          );
        process.stdout.write(Buffer.from(r.body_b64, 'base64'));
      }
      if (r.status === 404) process.exitCode = 4;
      else if (r.status >= 400) process.exitCode = 1;
    });
}

/** Refuses an output path that cannot be written before anything is fetched. */
function checkWritable(file: string): void {
  const path = resolve(file);
  let reason: string | undefined;
  try {
    if (statSync(path, { throwIfNoEntry: false })?.isDirectory() === true) reason = 'is a directory';
    else accessSync(dirname(path), constants.W_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    reason =
      code === 'ENOENT'
        ? `directory ${dirname(path)} does not exist`
        : code === 'EACCES'
          ? `directory ${dirname(path)} is not writable`
          : (err as Error).message;
  }
  if (reason !== undefined) throw new ImdsError('VALIDATION_FAILED', `--output: cannot write ${file}: ${reason}`, { field: '--output' });
}

/** Writes through a temporary file in the same directory, so a failure leaves nothing behind. */
function writeAtomically(file: string, bytes: Buffer): void {
  try {
    writeFileAtomic(resolve(file), bytes);
  } catch (err) {
    throw new ImdsError('VALIDATION_FAILED', `--output: cannot write ${file}: ${(err as Error).message}`, {
      field: '--output',
      cause: err,
    });
  }
}
