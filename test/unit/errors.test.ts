import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ERROR_CODES, exitCodeOf, httpStatusOf, ImdsError, listProblems, MAX_LISTED_PROBLEMS, type ErrorCode } from '../../src/errors.ts';

interface DocumentedCode {
  code: string;
  exit: number;
  /** undefined: `-` in the table (a code only the CLI raises). */
  http: number | undefined;
}

/** Every row of the table in docs/errors.md: | `CODE` | Exit | HTTP | Meaning | What to do |. */
function documentedCodes(): DocumentedCode[] {
  const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
  const header = doc.split('\n').find((line) => line.startsWith('| Code |'));
  assert.equal(header, '| Code | Exit | HTTP | Meaning | What to do |', 'the table has the columns this test reads');
  const rows = doc.split('\n').filter((line) => line.startsWith('| `'));
  return rows.map((row) => {
    const m = /^\| `([A-Z_]+)` \| (\d+) \| (\d{3}|-) \| [^|]+ \| [^|]+ \|$/.exec(row);
    assert.ok(m !== null, `docs/errors.md: a row does not read | \`CODE\` | exit | HTTP or - | meaning | what to do |: ${row}`);
    const [, code = '', exit = '', http = ''] = m;
    return { code, exit: Number(exit), http: http === '-' ? undefined : Number(http) };
  });
}

const isCode = (code: string): code is ErrorCode => Object.hasOwn(ERROR_CODES, code);

describe('error catalogue', () => {
  const documented = documentedCodes();
  const byCode = new Map(documented.map((d) => [d.code, d]));

  it('documents each code once', () => {
    assert.equal(byCode.size, documented.length, 'a code is documented twice');
  });

  it('documents every code of the catalogue, with its exit and HTTP status', () => {
    for (const [code, spec] of Object.entries(ERROR_CODES)) {
      const row = byCode.get(code);
      assert.ok(row !== undefined, `${code} is not documented in docs/errors.md`);
      assert.equal(row.exit, spec.exit, `${code}: docs/errors.md says exit ${row.exit}, the catalogue ${spec.exit}`);
      const http = 'http' in spec ? spec.http : undefined;
      assert.equal(row.http, http, `${code}: docs/errors.md says HTTP ${row.http ?? '-'}, the catalogue ${http ?? '-'}`);
    }
  });

  it('documents no code the catalogue does not have', () => {
    for (const { code } of documented) assert.ok(isCode(code), `docs/errors.md names unknown code ${code}`);
  });

  it('exitCodeOf and httpStatusOf answer what docs/errors.md says', () => {
    for (const { code, exit, http } of documented) {
      assert.ok(isCode(code), code);
      assert.equal(exitCodeOf(new ImdsError(code, 'x')), exit, `${code}: exit status`);
      // A CLI-only code never reaches the admin API; were it raised there, it would be a 500.
      assert.equal(httpStatusOf(code), http ?? 500, `${code}: HTTP status`);
    }
    assert.equal(exitCodeOf(new Error('x')), 1, 'anything else thrown exits 1');
    assert.equal(exitCodeOf('x'), 1);
  });
});

describe('listProblems', () => {
  const format = (n: number): string => `problem ${n}`;

  it('lists every problem up to the limit', () => {
    const all = Array.from({ length: MAX_LISTED_PROBLEMS }, (_, i) => i);
    assert.deepEqual(listProblems(all, format), all.map(format));
    assert.deepEqual(listProblems([], format), []);
  });

  it('lists the first ones, then counts the rest', () => {
    const all = Array.from({ length: MAX_LISTED_PROBLEMS + 5 }, (_, i) => i);
    const lines = listProblems(all, format);
    assert.equal(lines.length, MAX_LISTED_PROBLEMS + 1);
    assert.deepEqual(lines.slice(0, MAX_LISTED_PROBLEMS), all.slice(0, MAX_LISTED_PROBLEMS).map(format));
    assert.equal(lines.at(-1), '… and 5 more');
  });
});
