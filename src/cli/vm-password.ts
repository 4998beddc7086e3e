// `imds vm password ID [--clear]`, `vm password set ID`, `vm password clear ID`: the write-once
// password a guest posts (Nova's os-server-password), read, set by the operator (a VM moved from
// another host keeps it) or cleared. The value is read from stdin or a file, never from argv (where
// `ps` would show it), and never logged.
import type { Command } from '@commander-js/extra-typings';
import { ImdsError } from '../errors.ts';
import { readValue } from './input.ts';
import { clientOf } from './network.ts';
import { emit, JSON_HELP, outputOption } from './output.ts';
import { VM_REF } from './vm-view.ts';

function pathOf(id: string): string {
  return `/v1/vms/${encodeURIComponent(id)}`;
}

export function passwordCommand(parent: Command): void {
  const password = parent
    .command('password')
    .description('print the password the guest posted (encrypted to its key, base64); `set` or `clear` it')
    .argument('<vm>', VM_REF)
    .option('--clear', 'clear it, so the guest may post a new one (as `vm password clear VM`)')
    .addOption(outputOption())
    .option('--json', JSON_HELP)
    .action(async (id, opts, cmd) => {
      const client = clientOf(cmd);
      if (opts.clear) {
        await clearPassword(client, id, opts);
        return;
      }
      const r = await client.call<{ password: string }>('GET', `${pathOf(id)}/password`);
      emit(opts, r, (p) => p.password);
    });
  // Nested one level deeper than main.ts reaches: usage errors must still end as CommanderError (exit 2).
  password
    .command('set')
    .exitOverride()
    .description('set the password the guest reads, as if it had posted it (a VM moved from another host); read from stdin')
    .argument('<vm>', VM_REF)
    .option('--from-file <file>', 'read it from this file instead of stdin')
    .option('--force', 'replace a password already set')
    .addOption(outputOption())
    .option('--json', JSON_HELP)
    .action(async (id, opts, cmd) => {
      const value = readPassword(opts.fromFile);
      await clientOf(cmd).call('PUT', `${pathOf(id)}/password`, { password: value, replace: opts.force === true });
      emit(opts, { set: true }, () => 'password set');
    });
  password
    .command('clear')
    .exitOverride()
    .description('clear the password, so the guest may post a new one')
    .argument('<vm>', VM_REF)
    .addOption(outputOption())
    .option('--json', JSON_HELP)
    .action(async (id, opts, cmd) => clearPassword(clientOf(cmd), id, opts));
}

async function clearPassword(
  client: ReturnType<typeof clientOf>,
  id: string,
  opts: { output?: string | undefined; json?: boolean | undefined },
): Promise<void> {
  await client.call('DELETE', `${pathOf(id)}/password`);
  emit(opts, { cleared: true }, () => 'password cleared');
}

/** The password from a file or stdin, one trailing newline dropped (`echo … |`); never echoed. */
function readPassword(file: string | undefined): string {
  const value = readValue(file === undefined ? '-' : `@${file}`, file === undefined ? 'stdin' : '--from-file')
    .toString('utf8')
    .replace(/\r?\n$/, '');
  if (value === '')
    throw new ImdsError(
      'VALIDATION_FAILED',
      `password: empty (${file === undefined ? 'stdin' : file}); use \`vm password clear\` to remove one`,
      {
        field: 'password',
      },
    );
  return value;
}
