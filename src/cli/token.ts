// `imds token rotate-key`: a new IMDSv2 token key; every token issued so far stops working.
import { Command } from '@commander-js/extra-typings';
import { clientOf } from './client.ts';
import { emit, withOutput } from './output.ts';

export function tokenCommand(): Command {
  const token = new Command('token').description('IMDSv2 session tokens');
  withOutput(
    token
      .command('rotate-key')
      .description('replace the token key (kept in state_dir/token.key): outstanding tokens are refused (401) and guests fetch new ones'),
  ).action(async (opts, cmd) => {
    const r = await clientOf(cmd).call<{ rotated_at: string }>('POST', '/v1/token-key/rotate');
    emit(opts, r, (v) => `token key rotated at ${v.rotated_at}; tokens issued before are no longer accepted`);
  });
  return token;
}
