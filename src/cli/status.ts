// `imds status`: the daemon and every network's state.
import { Command } from '@commander-js/extra-typings';
import { clientOf, printNetworks } from './network.ts';
import { printFields, printJson } from './output.ts';

export function statusCommand(): Command {
  return new Command('status')
    .description('show the daemon and the state of every network (exit 1 when a network is degraded)')
    .option('--json', 'print JSON')
    .action(async (opts, cmd) => {
      const s = await clientOf(cmd).call<{ daemon: Record<string, unknown>; networks: Parameters<typeof printNetworks>[0]; vms: number }>(
        'GET',
        '/v1/status',
      );
      if (opts.json) printJson(s);
      else {
        printFields({ ...s.daemon, vms: s.vms });
        process.stdout.write('\n');
        printNetworks(s.networks);
      }
      if (s.networks.some((n) => n.state !== 'serving')) process.exitCode = 1;
    });
}
