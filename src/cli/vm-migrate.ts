// `imds vm migrate VM --to HOST` (registry only): the VM's host changes in one compared write to etcd;
// the destination's daemon serves it and the source's stops, each as soon as its watch delivers the write.
// A destination that never registered (a typo) is refused unless --allow-unknown-host. The command
// returns once the daemon it talks to applied the write (docs/registry.md, "Writes").
import type { Command } from '@commander-js/extra-typings';
import { clientOf } from './client.ts';
import { emit, JSON_HELP, outputOption } from './output.ts';
import { VM_REF } from './vm-view.ts';
import { ifRevisionOption, withIfRevision } from './if-revision.ts';
import { allowUnknownHostOption, withAllowUnknownHost } from './host.ts';

export function migrateVmCommand(parent: Command): void {
  parent
    .command('migrate')
    .description('move a VM to another hypervisor (with a registry): its host_id in the registry changes, its password goes with it')
    .argument('<vm>', VM_REF)
    .requiredOption('--to <host_id>', "the destination host (its daemon's host_id)")
    .addOption(ifRevisionOption())
    .addOption(allowUnknownHostOption())
    .addOption(outputOption())
    .option('--json', JSON_HELP)
    .action(async (id, opts, cmd) => {
      const v = await clientOf(cmd).call<{ id: string; host?: string }>(
        'PATCH',
        withAllowUnknownHost(withIfRevision(`/v1/vms/${encodeURIComponent(id)}`, opts.ifRevision), opts.allowUnknownHost),
        { host: opts.to },
      );
      emit(opts, v, (u) => `vm ${u.id} migrated to ${u.host ?? opts.to}`);
    });
}
