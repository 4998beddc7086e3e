// The mutation check's catalogue (scripts/mutants/catalogue.ts) must keep applying to the tree as
// code moves: every mutant's text occurs exactly once in its file, and every test file it names
// exists. (Running the mutants themselves is scripts/mutants.sh, root, ~30 min.)
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { MUTANTS } from '../../scripts/mutants/catalogue.ts';

const ROOT = new URL('../../', import.meta.url);

describe('mutation catalogue', () => {
  it('has at least ten mutants with distinct names', () => {
    assert.ok(MUTANTS.length >= 10);
    assert.equal(new Set(MUTANTS.map((m) => m.name)).size, MUTANTS.length);
  });

  for (const m of MUTANTS) {
    it(`${m.name} still applies to the tree and names existing tests`, () => {
      for (const e of m.edits) {
        const text = readFileSync(new URL(e.file, ROOT), 'utf8');
        const at = text.indexOf(e.find);
        assert.notEqual(at, -1, `${e.file}: the text to replace is gone`);
        assert.equal(text.indexOf(e.find, at + 1), -1, `${e.file}: the text to replace occurs more than once`);
        assert.notEqual(e.replace, e.find);
      }
      for (const f of m.tests.files) assert.ok(existsSync(new URL(f, ROOT)), `${f} exists`);
    });
  }
});
