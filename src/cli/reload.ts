// `imds reload`: the daemon reads its configuration file again and answers with its verdict (what
// SIGHUP does, without the guessing): exit 0 when applied, 2 (CONFIG_INVALID) with the reason when
// refused — nothing changed then. systemd's ExecReload runs it, so `systemctl reload` fails too.
import { Command } from '@commander-js/extra-typings';
import { clientOf } from './client.ts';
import { emit, withOutput } from './output.ts';

export function reloadCommand(): Command {
  return withOutput(
    new Command('reload').description("reload the daemon's configuration file and wait for its verdict (exit 2 when it refused the file)"),
  ).action(async (opts, cmd) => {
    const r = await clientOf(cmd, true).call<{ reloaded: true }>('POST', '/v1/reload');
    emit(opts, r, () => 'configuration reloaded');
  });
}
