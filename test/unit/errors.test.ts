import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ERROR_CODES, exitCodeOf, ImdsError } from '../../src/errors.ts';

describe('error catalogue', () => {
  const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
  const documented = new Set([...doc.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1] ?? ''));

  it('documents every code in docs/errors.md', () => {
    for (const code of Object.keys(ERROR_CODES)) assert.ok(documented.has(code), `${code} is not documented`);
  });

  it('documents no code that does not exist', () => {
    for (const code of documented) assert.ok(code in ERROR_CODES, `docs/errors.md names unknown code ${code}`);
  });

  it('maps codes to documented exit statuses', () => {
    assert.equal(exitCodeOf(new ImdsError('CONFIG_INVALID', 'x')), 2);
    assert.equal(exitCodeOf(new ImdsError('DAEMON_RUNNING', 'x')), 3);
    assert.equal(exitCodeOf(new ImdsError('COMMAND_FAILED', 'x')), 1);
    assert.equal(exitCodeOf(new Error('x')), 1);
  });
});
