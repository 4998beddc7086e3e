// `imds restart`: without systemd, the daemon starts its successor (the same command line: after an
// upgrade, the new code), hands it every listening socket — guests that connect meanwhile wait in
// the kernel's backlog — and stops once the successor is ready. Under systemd: `systemctl restart
// imds` (its file-descriptor store does the same).
import { Command } from '@commander-js/extra-typings';
import { clientOf } from './client.ts';
import { emit, withOutput } from './output.ts';

export function restartCommand(): Command {
  return withOutput(
    new Command('restart').description(
      'without systemd: replace the running daemon by a new one with no gap for guests (under systemd: systemctl restart imds)',
    ),
  ).action(async (opts, cmd) => {
    const r = await clientOf(cmd, true).call<{ successor: number }>('POST', '/v1/restart');
    emit(opts, r, (v) => `restarted: the new daemon (pid ${v.successor}) serves`);
  });
}
