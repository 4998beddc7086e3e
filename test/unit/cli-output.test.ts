// The CLI's one renderer (-o table|wide|json|yaml), its error line and JSON error document, and
// commander's parse errors turned into VALIDATION_FAILED naming the flag.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { argvWantsJson, checkOutputFile, errorDocument, errorLine, formatOf, OUTPUT_FORMATS, render, table } from '../../src/cli/output.ts';
import { usageFieldOf } from '../../src/cli/usage.ts';
import { parseConfig } from '../../src/config.ts';
import { ImdsError, isImdsError } from '../../src/errors.ts';

const MAIN = join(import.meta.dirname, '..', '..', 'src', 'main.ts');

const rows = [
  { id: 'net1', cidr: '198.51.100.0/24', origin: 'api' },
  { id: 'net22', cidr: '203.0.113.0/24', origin: 'config' },
];
const text = (data: typeof rows, wide: boolean): string =>
  table(data, { ID: (r) => r.id, CIDR: (r) => r.cidr }, wide, { ORIGIN: (r) => r.origin });

describe('render', () => {
  it('gives the same data as JSON and YAML, and a table for people', () => {
    assert.deepEqual(JSON.parse(render(rows, 'json', text)), rows);
    assert.deepEqual(parse(render(rows, 'yaml', text)), rows);
    assert.equal(render(rows, 'table', text), 'ID     CIDR\nnet1   198.51.100.0/24\nnet22  203.0.113.0/24\n');
  });

  it('adds the wide columns under -o wide only', () => {
    const wide = render(rows, 'wide', text).split('\n');
    assert.match(wide[0] as string, /^ID\s+CIDR\s+ORIGIN$/);
    assert.match(wide[2] as string, /^net22\s+203\.0\.113\.0\/24\s+config$/);
    assert.doesNotMatch(render(rows, 'table', text), /ORIGIN/);
  });

  it('ends a sentence with one newline', () => {
    assert.equal(
      render({ id: 'x' }, 'table', (d) => `network ${d.id} deleted`),
      'network x deleted\n',
    );
  });

  it('takes --json as -o json, and table by default', () => {
    assert.equal(formatOf({ json: true }), 'json');
    assert.equal(formatOf({ json: true, output: 'yaml' }), 'json');
    assert.equal(formatOf({ output: 'yaml' }), 'yaml');
    assert.equal(formatOf({}), 'table');
  });
});

describe('errors', () => {
  it('are a JSON document with code, message, field, reason and exit status', () => {
    const err = new ImdsError('VALIDATION_FAILED', '--clear: "x" is not one of gateway, mtu', { field: '--clear', details: { a: 1 } });
    assert.deepEqual(errorDocument(err), {
      error: {
        code: 'VALIDATION_FAILED',
        message: '--clear: "x" is not one of gateway, mtu',
        field: '--clear',
        reason: '"x" is not one of gateway, mtu',
        exit: 2,
        details: { a: 1 },
      },
    });
    assert.deepEqual(errorDocument(new Error('boom')), { error: { code: 'INTERNAL', message: 'boom', reason: 'boom', exit: 1 } });
  });

  it('name the field once: not after a message that names it already', () => {
    assert.equal(errorLine(new ImdsError('NOT_FOUND', 'no VM x', { field: 'id' })), 'imds: NOT_FOUND: no VM x (field id)\n');
    assert.equal(
      errorLine(new ImdsError('VALIDATION_FAILED', '--mtu: "a" is not a whole number', { field: '--mtu' })),
      'imds: VALIDATION_FAILED: --mtu: "a" is not a whole number\n',
    );
  });

  it("imds check: every problem names its own field, and the first problem's field is not pinned to the last line", () => {
    const yaml = [
      'networks:',
      '  - { id: net1, cidr: 198.51.100.0/24, service_ip: 198.51.100.2 }',
      'vms:',
      '  - { id: 1b4e28ba-2fa1-11d2-883f-0016d3cca427, network: net1, ip: 198.51.101.10, mac: "52:54:00:12:34:56", hostname: vm1 }',
      '  - { id: 1b4e28ba-2fa1-11d2-883f-0016d3cca428, network: net3, ip: 198.51.100.11, mac: "52:54:00:12:34:57", hostname: vm2 }',
    ].join('\n');
    let caught: unknown;
    try {
      parseConfig(yaml, 'imds.yaml');
    } catch (err) {
      caught = err;
    }
    assert.ok(isImdsError(caught, 'CONFIG_INVALID'));
    const lines = errorLine(caught).trimEnd().split('\n');
    assert.match(lines[1] as string, /imds\.yaml:4: vms\[0\]\.ip: 198\.51\.101\.10 is outside network "net1"/);
    assert.equal((lines[2] as string).trim(), 'imds.yaml:5: vms[1].network: unknown network "net3"');
    assert.equal(lines.length, 3);
  });

  it('are JSON when the command line asks for JSON, however it is spelled', () => {
    for (const argv of [
      ['status', '--json'],
      ['status', '-o', 'json'],
      ['status', '-ojson'],
      ['status', '--output=json'],
      ['vm', 'list', '--output', 'json'],
    ])
      assert.equal(argvWantsJson(argv), true, argv.join(' '));
    for (const argv of [
      ['status'],
      ['status', '-o', 'yaml'],
      ['vm', 'configdrive', 'x', '-o', 'json'],
      ['export', '-o', 'json'],
      ['--admin-socket', '/tmp/a.sock', 'export', '--output=json'],
      ['vm', 'add', '--', '--json'],
    ])
      assert.equal(argvWantsJson(argv), false, argv.join(' '));
    assert.equal(argvWantsJson(['vm', 'show', 'export', '-o', 'json']), true, 'a VM named export is no export command');
  });

  it("export's -o names a file: a file named like an output format is refused, naming the option", () => {
    for (const name of OUTPUT_FORMATS) {
      assert.throws(
        () => checkOutputFile(name, 'its format is --format yaml|json'),
        (err: unknown) =>
          isImdsError(err) &&
          err.code === 'VALIDATION_FAILED' &&
          err.field === '--output' &&
          errorLine(err).startsWith(`imds: VALIDATION_FAILED: --output: "${name}" is an output format's name`) &&
          err.message.includes(`-o ./${name}`),
      );
    }
    checkOutputFile('./json', '');
    checkOutputFile('export.json', '');
  });

  it('export and vm configdrive refuse -o json before they call the daemon (exit 2, nothing written)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'imds-unit-'));
    try {
      for (const argv of [
        ['export', '-o', 'json'],
        ['vm', 'configdrive', 'vm1', '-o', 'yaml'],
      ]) {
        // A socket path nothing listens on: reaching the daemon would fail with another error.
        const r = spawnSync(
          process.execPath,
          ['--import', import.meta.resolve('tsx'), MAIN, '--admin-socket', join(dir, 'none.sock'), ...argv],
          {
            encoding: 'utf8',
            cwd: dir,
          },
        );
        assert.equal(r.status, 2, `${argv.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, /^imds: VALIDATION_FAILED: --output: "(json|yaml)" is an output format's name/, argv.join(' '));
        assert.deepEqual(readdirSync(dir), [], 'no file written');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("commander's parse errors", () => {
  it('name the flag or argument they are about', () => {
    assert.equal(usageFieldOf("unknown option '--bogus'"), '--bogus');
    assert.equal(usageFieldOf("required option '--cidr <cidr>' not specified"), '--cidr');
    assert.equal(
      usageFieldOf("option '-o, --output <format>' argument 'xml' is invalid. Allowed choices are table, wide, json, yaml."),
      '--output',
    );
    assert.equal(usageFieldOf("missing required argument 'vm'"), 'vm');
    assert.equal(usageFieldOf("unknown command 'nope'"), undefined);
    assert.equal(usageFieldOf("too many arguments for 'show'. Expected 1 argument but got 2."), undefined);
  });
});
