// `imds doctor [VM | --network NET]`: the path a guest's request takes, hop by hop, as the daemon
// reads it from the kernel now: ✓ or ✗ with the evidence and the fix. Exit 1 when a hop fails;
// `-o json` (`--json`) prints {ok, hops: [{name, ok, detail, fix}]}.
import { Command } from '@commander-js/extra-typings';
import type { DoctorReport } from '../doctor/hop.ts';
import { ImdsError } from '../errors.ts';
import { clientOf } from './client.ts';
import { emit, withOutput } from './output.ts';

/** The report as people read it: one line per hop, the fix under each failed one, a verdict. */
export function formatReport(report: DoctorReport): string {
  const width = Math.max(0, ...report.hops.map((h) => h.name.length));
  const lines: string[] = [];
  for (const h of report.hops) {
    lines.push(`${h.ok ? '✓' : '✗'} ${h.name.padEnd(width)}  ${h.detail}`);
    if (!h.ok && h.fix !== null) lines.push(`  ${' '.repeat(width)}  fix: ${h.fix}`);
  }
  const failed = report.hops.filter((h) => !h.ok).map((h) => h.name);
  if (report.hops.length === 0) lines.push('no networks to check');
  else
    lines.push(
      failed.length === 0
        ? `all ${report.hops.length} hops pass`
        : `${failed.length} of ${report.hops.length} hops fail: ${failed.join(', ')}`,
    );
  return `${lines.join('\n')}\n`;
}

export function doctorCommand() {
  return withOutput(
    new Command('doctor')
      .description(
        "check the path a guest's request takes, hop by hop, from the kernel's real state: one VM's path, one network's hops " +
          "(--network), or every network's (no argument); exit 1 when a hop fails",
      )
      .argument('[vm]', 'the VM: its id, host name, name, address, MAC or NET/REF (docs/cli.md, naming a VM)')
      .option('--network <id>', 'check this network (network-level hops only)'),
  ).action(async (vm, opts, cmd) => {
    if (vm !== undefined && opts.network !== undefined)
      throw new ImdsError('VALIDATION_FAILED', 'give a VM or --network, not both', { field: 'network' });
    const query =
      vm !== undefined ? `?vm=${encodeURIComponent(vm)}` : opts.network !== undefined ? `?network=${encodeURIComponent(opts.network)}` : '';
    const report = await clientOf(cmd).call<DoctorReport>('GET', `/v1/doctor${query}`);
    emit(opts, report, formatReport);
    if (!report.ok) process.exitCode = 1;
  });
}
