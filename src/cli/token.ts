// `imds token rotate-key`: a new IMDSv2 token key; every token issued so far stops working.
import { Command } from '@commander-js/extra-typings';
import { clientOf } from './network.ts';
import { printJson } from './output.ts';

export function tokenCommand(): Command {
  const token = new Command('token').description('IMDSv2 session tokens');
  token
    .command('rotate-key')
    .description('replace the token key (kept in state_dir/token.key): outstanding tokens are refused (401) and guests fetch new ones')
    .option('--json', 'print JSON')
    .action(async (opts, cmd) => {
      const r = await clientOf(cmd).call<{ rotated_at: string }>('POST', '/v1/token-key/rotate');
      if (opts.json) printJson(r);
      else process.stdout.write(`token key rotated at ${r.rotated_at}; tokens issued before are no longer accepted\n`);
    });
  return token;
}
