// `imds reload`: the daemon reads its configuration file again and answers with its verdict (what
// SIGHUP does, without the guessing): exit 0 when applied, 2 (CONFIG_INVALID) with the reason when
// refused — nothing changed then. systemd's ExecReload runs it, so `systemctl reload` fails too.
import { Command } from '@commander-js/extra-typings';
import { clientOf } from './network.ts';
import { printJson } from './output.ts';

export function reloadCommand(): Command {
  return new Command('reload')
    .description("reload the daemon's configuration file and wait for its verdict (exit 2 when it refused the file)")
    .option('--json', 'print JSON')
    .action(async (opts, cmd) => {
      const r = await clientOf(cmd).call<{ reloaded: true }>('POST', '/v1/reload');
      if (opts.json) printJson(r);
      else process.stdout.write('configuration reloaded\n');
    });
}
