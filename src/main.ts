// Entry point: argv -> command. The only module that ends the process.
import { CommanderError, type Command } from '@commander-js/extra-typings';
import { argvWantsJson, errorDocument, errorLine } from './cli/output.ts';
import { buildProgram } from './cli/program.ts';
import { usageError } from './cli/usage.ts';
import { exitCodeOf } from './errors.ts';

const program = buildProgram();

/** The command a parse error came from, for the hint `imds vm show --help`. */
let failedCommand: Command<unknown[], Record<string, unknown>> = program;
(function quiet(cmd: Command<unknown[], Record<string, unknown>>): void {
  // Commander's own error lines are replaced by `imds: CODE: message` (or JSON) below.
  cmd.exitOverride((err) => {
    failedCommand = cmd;
    throw err;
  });
  cmd.configureOutput({ outputError: () => undefined });
  for (const c of cmd.commands) quiet(c);
})(program);

// A reader that stops early (`imds status | head`) is not an error of the CLI's: exit quietly. The
// daemon (`serve`) is left alone: its stdout is the journal.
if (!process.argv.includes('serve'))
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
  });

try {
  await program.parseAsync(process.argv);
} catch (caught) {
  let err: unknown = caught;
  if (caught instanceof CommanderError) {
    // --help, --version: done; a command group without its subcommand printed its help on stderr.
    if (caught.exitCode === 0 || caught.code === 'commander.help') {
      process.exitCode = caught.exitCode === 0 ? 0 : 2;
      err = undefined;
    } else err = usageError(caught, failedCommand);
  }
  if (err !== undefined) {
    if (argvWantsJson(process.argv.slice(2))) process.stderr.write(`${JSON.stringify(errorDocument(err))}\n`);
    else process.stderr.write(errorLine(err));
    if (process.env['IMDS_DEBUG'] && err instanceof Error) process.stderr.write(`${err.stack ?? ''}\n`);
    process.exitCode = exitCodeOf(err);
  }
}
