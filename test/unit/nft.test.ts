import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parseTable, renderNatTable, tableMatches } from '../../src/netns/nft.ts';

const GOLDEN = new URL('../fixtures/nat-table-8775.nft', import.meta.url);

describe('nft table', () => {
  it('renders the owned table whole, as the golden file', () => {
    const t = renderNatTable({ listenPort: 8775 });
    assert.equal(t.script, readFileSync(GOLDEN, 'utf8'));
    assert.equal(t.ruleCount, 4);
    assert.match(t.script, /^table ip imds \{\}\ndelete table ip imds\ntable ip imds \{/);
  });

  it('changes its hash when the content changes', () => {
    assert.notEqual(renderNatTable({ listenPort: 8775 }).hash, renderNatTable({ listenPort: 8776 }).hash);
  });

  it('recognises the live table from `nft -j` output, and a flushed or foreign one as different', () => {
    const t = renderNatTable({ listenPort: 8775 });
    const live = readFileSync(new URL('../fixtures/nft-list-table.json', import.meta.url), 'utf8').replaceAll('HASH', t.hash);
    assert.ok(tableMatches(parseTable(live), t));
    const flushed = JSON.stringify({ nftables: [{ metainfo: {} }, { table: { family: 'ip', name: 'imds' } }] });
    assert.ok(!tableMatches(parseTable(flushed), t));
    assert.ok(!tableMatches(parseTable(live.replaceAll(t.hash, '0000')), t));
    assert.ok(!tableMatches(undefined, t));
  });
});
