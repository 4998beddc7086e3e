import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { nftEventMatters, nftEventTable, nftSetElementEvent, repairKinds } from '../../src/controller/drift-watch.ts';

/** An nfnetlink message: nfgenmsg, then attributes (type, NUL-terminated string). */
function nftMessage(msgType: number, attrs: [number, string][]): { type: number; data: Buffer } {
  const parts = [Buffer.from([2, 0, 0, 0])];
  for (const [type, value] of attrs) {
    const body = Buffer.from(`${value}\0`);
    const head = Buffer.alloc(4);
    head.writeUInt16LE(4 + body.length, 0);
    head.writeUInt16LE(type, 2);
    const pad = Buffer.alloc((4 - ((4 + body.length) % 4)) % 4);
    parts.push(head, body, pad);
  }
  return { type: (10 << 8) | msgType, data: Buffer.concat(parts) };
}

describe('drift watch', () => {
  it('reads the table an nftables event is about', () => {
    assert.equal(
      nftEventTable(
        nftMessage(6, [
          [1, 'imds-net1'],
          [2, 'prerouting'],
        ]),
      ),
      'imds-net1',
      'a rule',
    );
    assert.equal(nftEventTable(nftMessage(2, [[1, 'imds']])), 'imds', 'a table');
    assert.equal(nftEventTable(nftMessage(16, [])), undefined, 'a generation message names no table');
    assert.equal(nftEventTable({ type: (1 << 8) | 6, data: Buffer.alloc(8) }), undefined, 'not nftables');
  });

  it('tells structural events from set-element events (guest sets are checked apart) and ignores generations', () => {
    for (const t of [0, 2, 3, 5, 6, 8, 9, 11]) assert.equal(nftEventMatters(nftMessage(t, [[1, 'imds']])), true, `type ${t}`);
    for (const t of [12, 14, 15]) assert.equal(nftEventMatters(nftMessage(t, [[1, 'imds']])), false, `type ${t}`);
    assert.equal(nftEventMatters({ type: (1 << 8) | 2, data: Buffer.alloc(8) }), false, 'another subsystem');
    for (const t of [12, 14]) assert.equal(nftSetElementEvent(nftMessage(t, [[1, 'imds']])), true, `type ${t}`);
    for (const t of [0, 2, 6, 9, 11, 15]) assert.equal(nftSetElementEvent(nftMessage(t, [[1, 'imds']])), false, `type ${t}`);
    assert.equal(nftSetElementEvent({ type: (1 << 8) | 12, data: Buffer.alloc(8) }), false, 'another subsystem');
    assert.equal(
      nftEventTable(
        nftMessage(14, [
          [1, 'imds-net1'],
          [2, 'guests'],
        ]),
      ),
      'imds-net1',
      'an element names its table',
    );
  });

  it('names the kinds of damage a repair fixed from its steps', () => {
    assert.deepEqual(
      repairKinds([
        { kind: 'netns-add', where: 'imds-net1', why: 'namespace missing' },
        { kind: 'ip', where: 'host', why: 'veth missing' },
        { kind: 'ip', where: 'imds-net1', why: 'namespace links and addresses' },
        { kind: 'nft', where: 'imds-net1', why: 'nft table missing' },
        { kind: 'nft', where: 'host', why: 'bridge table missing' },
      ]),
      ['namespace', 'host_links', 'namespace_links', 'nft_table', 'bridge_table'],
    );
    assert.deepEqual(repairKinds([]), []);
  });
});
