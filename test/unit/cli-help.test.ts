// Help on every flag and argument: the whole command tree is walked, so a flag added without a
// description fails here. Every command that prints a result takes -o and --json.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Command } from '@commander-js/extra-typings';
import { buildProgram } from '../../src/cli/program.ts';

type Any = Command<unknown[], Record<string, unknown>, Record<string, unknown>>;

function walk(cmd: Any, path: string[] = []): { path: string; cmd: Any }[] {
  const here = [...path, cmd.name()];
  return [{ path: here.join(' '), cmd }, ...cmd.commands.flatMap((c) => walk(c, here))];
}

/** Commands that print no result document: the daemon, completion scripts, the config drive image, the export file; groups. */
const NO_RESULT = new Set([
  'imds',
  'imds serve',
  'imds completion',
  'imds vm configdrive',
  'imds export',
  'imds network',
  'imds vm',
  'imds vm password',
  'imds store',
  'imds token',
  'imds host',
]);

describe('the command tree', () => {
  const all = walk(buildProgram());

  it('has a description on every command, flag and argument', () => {
    const missing: string[] = [];
    for (const { path, cmd } of all) {
      if (cmd.description() === '') missing.push(path);
      for (const o of cmd.options) if (o.description === '') missing.push(`${path} ${o.flags}`);
      for (const a of cmd.registeredArguments) if (a.description === '') missing.push(`${path} <${a.name()}>`);
    }
    assert.deepEqual(missing, []);
  });

  it('takes -o FORMAT and --json on every command that prints a result', () => {
    const printing = all.filter(({ path }) => !NO_RESULT.has(path));
    assert.ok(printing.length >= 20, `${printing.length} commands`);
    for (const { path, cmd } of printing) {
      const output = cmd.options.find((o) => o.long === '--output');
      assert.deepEqual(output?.argChoices, ['table', 'wide', 'json', 'yaml'], path);
      assert.ok(
        cmd.options.some((o) => o.long === '--json'),
        `${path} --json`,
      );
    }
  });

  it('defaults --config of check, plan and down to the packaged file; serve needs it', () => {
    for (const name of ['check', 'plan', 'down']) {
      const cmd = all.find((c) => c.path === `imds ${name}`)?.cmd;
      assert.equal(cmd?.options.find((o) => o.long === '--config')?.defaultValue, '/etc/imds/imds.yaml', name);
    }
    assert.equal(all.find((c) => c.path === 'imds serve')?.cmd.options.find((o) => o.long === '--config')?.mandatory, true);
  });
});
