// The command tree of `imds`: every command, its arguments and flags (main.ts runs it; the
// completion scripts and a unit test walk it).
import { Command } from '@commander-js/extra-typings';
import { completionCommand } from './completion.ts';
import { doctorCommand } from './doctor.ts';
import { exportCommand } from './export.ts';
import { hostCommand } from './host.ts';
import { registerKernelCommands } from './kernel.ts';
import { networkCommand } from './network.ts';
import { reloadCommand } from './reload.ts';
import { restartCommand } from './restart.ts';
import { statusCommand } from './status.ts';
import { storeCommand } from './store.ts';
import { tokenCommand } from './token.ts';
import { vmCommand } from './vm.ts';
import { VERSION } from '../version.ts';

export function buildProgram(): Command {
  const program = new Command('imds')
    .description('host-side instance metadata service (OpenStack and EC2 metadata for cloud-init and cloudbase-init)')
    .version(VERSION, '-V, --version', 'print the version')
    .helpOption('-h, --help', 'show help for a command')
    .option('--admin-socket <path>', "the daemon's admin socket (default: $IMDS_ADMIN_SOCKET or /run/imds/admin.sock)")
    .option(
      '--timeout <seconds>',
      "how long to wait for the daemon's answer (default: $IMDS_TIMEOUT, else 30; 300 for network add/set/rm, vm import, reload, restart; 0: no limit)",
    );
  registerKernelCommands(program);
  for (const sub of [
    networkCommand(),
    vmCommand(),
    hostCommand(),
    statusCommand(),
    reloadCommand(),
    restartCommand(),
    tokenCommand(),
    doctorCommand(),
    storeCommand(),
    exportCommand(),
  ])
    program.addCommand(sub);
  program.addCommand(completionCommand(program));
  return program;
}
