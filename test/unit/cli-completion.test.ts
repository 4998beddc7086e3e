// `imds completion bash|zsh`: the script is generated from the commander tree, is valid bash, and
// completes commands, subcommands, flags and a flag's choices when bash runs it with COMP_WORDS.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

const MAIN = join(import.meta.dirname, '..', '..', 'src', 'main.ts');
const imds = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', MAIN, ...args], { encoding: 'utf8' });

describe('imds completion', () => {
  let dir: string;
  let script: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'imds-completion-'));
    const r = imds('completion', 'bash');
    assert.equal(r.status, 0, r.stderr);
    script = join(dir, 'imds.bash');
    writeFileSync(script, r.stdout);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** What the script offers for the words typed (the last one is the word being completed). */
  const complete = (...words: string[]): string[] => {
    const program = [
      `source ${JSON.stringify(script)}`,
      `COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')})`,
      `COMP_CWORD=${words.length - 1}`,
      '_imds',
      'printf "%s\\n" "${COMPREPLY[@]}"',
    ].join('\n');
    return execFileSync('bash', ['-c', program], { encoding: 'utf8', cwd: dir })
      .split('\n')
      .filter((w) => w !== '');
  };

  it('prints a bash script that bash accepts (bash -n) and registers _imds for imds', () => {
    execFileSync('bash', ['-n', script]);
    const registered = execFileSync('bash', ['-c', `source ${JSON.stringify(script)}; complete -p imds`], { encoding: 'utf8' });
    assert.match(registered, /complete -F _imds imds/);
  });

  it('completes `imds vm ` to the vm subcommands', () => {
    const words = complete('imds', 'vm', '');
    for (const sub of ['add', 'list', 'show', 'set', 'rm', 'import', 'password', 'configdrive', 'get'])
      assert.ok(words.includes(sub), `${sub} in ${words.join(' ')}`);
    assert.ok(!words.includes('network'), 'top-level commands are not offered after `vm`');
  });

  it('completes top-level commands, a prefix, flags, and past global options with values', () => {
    assert.ok(complete('imds', '').includes('completion'));
    assert.deepEqual(complete('imds', 'net'), ['network']);
    assert.deepEqual(complete('imds', 'vm', 'add', 'x', '--net'), ['--network']);
    assert.ok(complete('imds', '--admin-socket', '/run/x.sock', 'vm', '').includes('show'), 'the socket path is not taken for a command');
  });

  it("offers a flag's choices for its value", () => {
    assert.deepEqual(complete('imds', 'network', 'list', '-o', ''), ['table', 'wide', 'json', 'yaml']);
    assert.deepEqual(complete('imds', 'vm', 'show', 'vm1', '--output', 'y'), ['yaml']);
  });

  it('prints a zsh script from the same tree', () => {
    const r = imds('completion', 'zsh');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^#compdef imds\n/);
    assert.match(r.stdout, /'vm'\) echo 'add list show set rm migrate import password configdrive get help /);
    assert.match(r.stdout, /compdef _imds imds/);
  });

  it('refuses another shell with VALIDATION_FAILED (exit 2)', () => {
    const r = imds('completion', 'fish');
    assert.equal(r.status, 2);
    assert.match(r.stderr, /^imds: VALIDATION_FAILED: shell: "fish" is not bash or zsh/);
  });
});
