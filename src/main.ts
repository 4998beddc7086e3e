// Entry point: argv -> command. The only module that ends the process.
import { Command, CommanderError } from '@commander-js/extra-typings';
import { exportCommand } from './cli/export.ts';
import { registerKernelCommands } from './cli/kernel.ts';
import { networkCommand } from './cli/network.ts';
import { reloadCommand } from './cli/reload.ts';
import { restartCommand } from './cli/restart.ts';
import { statusCommand } from './cli/status.ts';
import { storeCommand } from './cli/store.ts';
import { tokenCommand } from './cli/token.ts';
import { vmCommand } from './cli/vm.ts';
import { exitCodeOf, ImdsError, messageOf } from './errors.ts';
import { VERSION } from './version.ts';

const program = new Command('imds')
  .description('host-side instance metadata service (OpenStack and EC2 metadata for cloud-init and cloudbase-init)')
  .version(VERSION)
  .exitOverride()
  .showHelpAfterError('(run with --help for usage)')
  .option('--admin-socket <path>', "the daemon's admin socket (default: $IMDS_ADMIN_SOCKET or /run/imds/admin.sock)");

registerKernelCommands(program);
const storeCommands = () => [storeCommand(), exportCommand()];
for (const sub of [networkCommand(), vmCommand(), statusCommand(), reloadCommand(), restartCommand(), tokenCommand(), ...storeCommands()]) {
  sub.exitOverride();
  for (const c of sub.commands) c.exitOverride();
  program.addCommand(sub);
}

// A reader that stops early (`imds status | head`) is not an error of the CLI's: exit quietly. The
// daemon (`serve`) is left alone: its stdout is the journal.
if (!process.argv.includes('serve'))
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
  });

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode === 0 ? 0 : 2;
  } else {
    const code = err instanceof ImdsError ? err.code : 'INTERNAL';
    const field =
      err instanceof ImdsError && err.field !== undefined && !messageOf(err).startsWith(err.field) ? ` (field ${err.field})` : '';
    process.stderr.write(`imds: ${code}: ${messageOf(err)}${field}\n`);
    if (process.env['IMDS_DEBUG'] && err instanceof Error) process.stderr.write(`${err.stack ?? ''}\n`);
    process.exitCode = exitCodeOf(err);
  }
}
