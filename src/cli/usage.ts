// Commander's parse errors (unknown option, missing argument, bad choice) as the CLI's own errors:
// VALIDATION_FAILED (exit 2) naming the flag or argument, with the help command to run.
import type { Command, CommanderError } from '@commander-js/extra-typings';
import { ImdsError } from '../errors.ts';

/** The field a commander message is about: the long flag of `'-o, --output <format>'`, or the argument's name. */
export function usageFieldOf(message: string): string | undefined {
  const quoted = /'([^']+)'/.exec(message)?.[1];
  if (quoted === undefined || /^(unknown command|too many arguments)/.test(message)) return undefined;
  if (!quoted.startsWith('-')) return quoted;
  const flags = quoted.split(/[ ,]+/).filter((f) => f.startsWith('-'));
  return flags.find((f) => f.startsWith('--')) ?? flags[0];
}

/** `imds vm show` for the command that failed to parse. */
function commandPath(cmd: { name(): string; parent: unknown }): string {
  const names: string[] = [];
  for (let c: { name(): string; parent: unknown } | null = cmd; c !== null; c = c.parent as typeof c) names.unshift(c.name());
  return names.join(' ');
}

export function usageError(err: CommanderError, cmd: Command<unknown[], Record<string, unknown>>): ImdsError {
  const message = err.message
    .replace(/^error: /, '')
    .replace(/\n/g, ' ')
    .trim();
  const field = usageFieldOf(message);
  return new ImdsError('VALIDATION_FAILED', `${message} (run ${commandPath(cmd)} --help for usage)`, {
    ...(field === undefined ? {} : { field }),
    details: { usage: err.code },
  });
}
