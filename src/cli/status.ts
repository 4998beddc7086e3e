// `imds status`: the daemon and every network's state.
import { Command } from '@commander-js/extra-typings';
import { clientOf } from './client.ts';
import { networksTable } from './network.ts';
import { emit, fields, withOutput } from './output.ts';

export function statusCommand(): Command {
  return withOutput(
    new Command('status').description(
      'show the daemon and the state of every network (exit 1 when a network is degraded or the registry is unreachable)',
    ),
  ).action(async (opts, cmd) => {
    const s = await clientOf(cmd).call<{ daemon: Record<string, unknown>; networks: Parameters<typeof networksTable>[0]; vms: number }>(
      'GET',
      '/v1/status',
    );
    emit(opts, s, (v, wide) => `${fields({ ...v.daemon, vms: v.vms })}\n${networksTable(v.networks, wide)}`);
    if (s.networks.some((n) => n.state !== 'serving')) process.exitCode = 1;
    // With a registry: disconnected is degraded (the local copy serves, writes are refused).
    const registry = s.daemon['registry'] as { connected?: boolean } | undefined;
    if (registry?.connected === false) process.exitCode = 1;
  });
}
