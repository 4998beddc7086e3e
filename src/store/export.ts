// What `imds export` writes and `imds vm import` reads back: every network and VM as declared (no
// state, no counters), sorted (networks by id, VMs by network then id) so that two exports of the
// same records are the same document. User data as base64 (the CLI turns text back into text);
// passwords only when asked for.
import type { Network, Vm } from '../model/schema.ts';

export type ExportedVm = Omit<Vm, 'user_data'> & { user_data_b64?: string; password?: string };

export interface ExportDocument {
  networks: Network[];
  vms: ExportedVm[];
}

const byId = (a: { id: string }, b: { id: string }): number => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** `passwords`: include them (secrets); undefined leaves them out. */
export function exportDocument(networks: readonly Network[], vms: readonly Vm[], passwords?: ReadonlyMap<string, string>): ExportDocument {
  const sortedVms = [...vms].sort((a, b) => (a.network < b.network ? -1 : a.network > b.network ? 1 : byId(a, b)));
  return {
    networks: [...networks].sort(byId),
    vms: sortedVms.map((vm) => {
      const { user_data, ...spec } = vm;
      const password = passwords?.get(vm.id);
      return {
        ...spec,
        ...(user_data === undefined ? {} : { user_data_b64: user_data.toString('base64') }),
        ...(password === undefined || password === '' ? {} : { password }),
      };
    }),
  };
}
