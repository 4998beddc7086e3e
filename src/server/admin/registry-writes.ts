// The admin API's writes when a registry is configured (docs/registry.md): networks, VMs and
// passwords go to etcd through the registry writer, in transactions (create-only adds, compared
// updates); this host's sync applies what it serves before the call returns. Views answer with the
// record as written (a VM on another host is not in this host's inventory).
import { z } from 'zod';
import { ImdsError } from '../../errors.ts';
import { networkSchema, vmSchema, type Network, type Vm } from '../../model/schema.ts';
import type { AdminDeps } from './deps.ts';
import { mergePatch } from './merge-patch.ts';
import { vmAsBody, vmInput } from './schemas.ts';
import { parseModel } from './validation.ts';
import { networkViewOf, vmViewOf } from './views.ts';

type Registry = NonNullable<AdminDeps['registry']>;

/** `?allow_unknown_host=true` (with a registry): a VM may be placed on a host that never registered. */
export const allowUnknownHost = z
  .enum(['true', 'false'])
  .optional()
  .describe(
    'with a registry: true places the VM on a host that is not registered yet (its daemon never started with this registry); ' +
      'otherwise such a host is refused (400 VALIDATION_FAILED, field host)',
  );

/** The query's allow_unknown_host as the writer takes it. */
export function placeOptionsOf(query: { allow_unknown_host?: 'true' | 'false' | undefined }): { allowUnknownHost: boolean } {
  return { allowUnknownHost: query.allow_unknown_host === 'true' };
}

/** `if_revision` as a number (undefined when not given). */
export function revisionOf(query: { if_revision?: string | undefined }): number | undefined {
  return query.if_revision === undefined ? undefined : Number(query.if_revision);
}

/** `if_revision` given without a registry: refused, naming the field. */
export function refuseIfRevision(query: { if_revision?: string | undefined }): void {
  if (query.if_revision !== undefined)
    throw new ImdsError('VALIDATION_FAILED', 'if_revision: only with a registry (records have no revision without one)', {
      field: 'if_revision',
    });
}

/** `host` given without a registry: refused, naming the field. */
export function refuseHost(host: string | undefined): void {
  if (host !== undefined)
    throw new ImdsError('VALIDATION_FAILED', 'host: only with a registry (configuration: registry and host_id)', { field: 'host' });
}

/** A VM now served here: its network built first when the placement just brought it (the sync converges too, without waiting). */
async function servedHere(deps: AdminDeps, vm: Vm): Promise<void> {
  if (deps.inventory.getNetwork(vm.network) !== undefined && deps.statusOf(vm.network)?.state !== 'serving')
    await deps.convergeNetwork(vm.network);
  await deps.vmChangesApplied?.();
}

function vmView(deps: AdminDeps, vm: Vm, host: string) {
  const local = deps.inventory.getVm(vm.id);
  return { ...vmViewOf(deps, local ?? { vm, origin: 'registry' }, false), host };
}

export async function registryCreateVm(
  deps: AdminDeps,
  registry: Registry,
  body: Record<string, unknown>,
  host: string | undefined,
  place: { allowUnknownHost: boolean } = { allowUnknownHost: false },
) {
  const vm = parseModel(vmSchema, vmInput(body));
  const on = host ?? registry.hostId;
  await registry.writer.createVm(vm, on, place);
  if (on === registry.hostId) await servedHere(deps, vm);
  return vmView(deps, vm, on);
}

export async function registryPatchVm(
  deps: AdminDeps,
  registry: Registry,
  id: string,
  body: Record<string, unknown>,
  ifRevision?: number,
  place: { allowUnknownHost: boolean } = { allowUnknownHost: false },
) {
  const { host, ...patch } = body;
  const result = await registry.writer.updateVm(
    id,
    (current) => {
      const merged = vmAsBody(current.vm);
      if (patch['user_data'] !== undefined || patch['user_data_b64'] !== undefined) delete merged['user_data_b64'];
      const vm = parseModel(vmSchema, vmInput(mergePatch(merged, patch)));
      return { vm, host: typeof host === 'string' ? host : current.host };
    },
    ifRevision,
    place,
  );
  if (result.host === registry.hostId) await servedHere(deps, result.vm);
  else if (result.thisHost) await deps.vmChangesApplied?.();
  return vmView(deps, result.vm, result.host);
}

export async function registryDeleteVm(deps: AdminDeps, registry: Registry, id: string, ifRevision?: number) {
  const result = await registry.writer.deleteVm(id, ifRevision);
  if (result.thisHost) await deps.vmChangesApplied?.();
  return { deleted: result.id };
}

export async function registryCreateNetwork(deps: AdminDeps, registry: Registry, network: Network) {
  await registry.writer.createNetwork(network);
  return networkViewOf(deps, deps.inventory.getNetwork(network.id) ?? { network, origin: 'registry' });
}

export async function registryPatchNetwork(
  deps: AdminDeps,
  registry: Registry,
  id: string,
  body: Record<string, unknown>,
  ifRevision?: number,
) {
  const result = await registry.writer.updateNetwork(id, (current) => parseModel(networkSchema, mergePatch(current, body)), ifRevision);
  if (result.thisHost) await deps.convergeNetwork(id);
  return networkViewOf(deps, deps.inventory.getNetwork(id) ?? { network: result.network, origin: 'registry' });
}

export async function registryDeleteNetwork(deps: AdminDeps, registry: Registry, id: string, force: boolean, ifRevision?: number) {
  const result = await registry.writer.deleteNetwork(id, force, ifRevision);
  if (result.thisHost) await deps.converge();
  return { deleted: id, vms_deleted: result.vms.length };
}
