import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { renderBridgeGuestElements, renderBridgeTable } from '../../src/bridge/bridge-table.ts';
import {
  parseCounterPackets,
  parseRuleset,
  parseTable,
  renderInnerGuestElements,
  renderNatTable,
  tableMatches,
} from '../../src/netns/nft.ts';

const GOLDEN = new URL('../fixtures/nat-table-8775.nft', import.meta.url);

describe('nft table', () => {
  it('renders the owned table whole, as the golden file', () => {
    const t = renderNatTable({ listenPort: 8775 });
    assert.equal(t.script, readFileSync(GOLDEN, 'utf8'));
    assert.equal(t.ruleCount, 5);
    assert.deepEqual(t.sets, ['vm_ips', 'guests']);
    assert.match(t.script, /ip saddr @vm_ips ether saddr \. ip saddr != @guests counter name "spoofed" drop/);
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

describe('bridge table', () => {
  const MAC = '02:11:22:33:44:55';

  it("steers each network's guest metadata traffic to imds0 by MAC, from one dispatch rule, and fences the uplinks", () => {
    const t = renderBridgeTable({
      table: 'imds-interception',
      innerMac: MAC,
      networks: [
        { id: 'n2', uplink: 'ens5' },
        { id: 'n1', uplink: 'ens4' },
        { id: 'n3', uplink: undefined },
      ],
    });
    assert.equal(t.family, 'bridge');
    assert.deepEqual(t.sets, ['guests_n1', 'guests_n2', 'guests_n3']);
    assert.match(
      t.script,
      /^table bridge imds-interception \{\}\ndelete table bridge imds-interception\ntable bridge imds-interception \{/,
    );
    assert.match(t.script, /set guests_n1 \{\n\s+type ether_addr \. ipv4_addr;/);
    // The base chain tests the destination before anything else; only metadata frames not sent to imds0 jump.
    const lines = t.script.split('\n');
    const from = lines.indexOf('  chain prerouting {');
    const rules = lines.slice(from + 2, lines.indexOf('  }', from));
    assert.deepEqual(
      rules.map((r) => r.trim().replace(/ comment .*/, '')),
      [
        'arp daddr ip 169.254.169.254 iifname { "ens4", "ens5" } counter drop',
        'ip daddr 169.254.169.254 iifname { "ens4", "ens5" } counter drop',
        'ip daddr 169.254.169.254 tcp dport 80 ether daddr != 02:11:22:33:44:55 jump steer',
      ],
    );
    // One steering rule per network, in id order, each looking up its own set.
    const steer = [...t.script.matchAll(/ether saddr \. ip saddr @(guests_\w+) ether daddr set 02:11:22:33:44:55 counter accept/g)].map(
      (m) => m[1],
    );
    assert.deepEqual(steer, ['guests_n1', 'guests_n2', 'guests_n3']);
    assert.match(t.script, /chain steer \{\n {4}ether saddr/, 'steer is a regular chain (no hook)');
    assert.match(t.script, /iifname "imdsv-\*" oifname \{ "ens4", "ens5" \} counter drop/);
    assert.match(t.script, /oifname "imdsv-\*" iifname \{ "ens4", "ens5" \} counter drop/);
    assert.match(t.script, /arp daddr ip 169\.254\.169\.254 oifname \{ "ens4", "ens5" \} counter drop/);
    assert.equal(t.ruleCount, 3 + 3 + 3);
  });

  it('has no uplink rules and no forward chain without an uplink; its hash follows the networks', () => {
    const t = renderBridgeTable({ table: 'imds-interception', innerMac: MAC, networks: [{ id: 'n1', uplink: undefined }] });
    assert.doesNotMatch(t.script, /forward|iifname/);
    assert.equal(t.ruleCount, 2);
    const other = (networks: { id: string; uplink: string | undefined }[]) =>
      renderBridgeTable({ table: 'imds-interception', innerMac: MAC, networks }).hash;
    assert.notEqual(t.hash, other([{ id: 'n1', uplink: 'ens4' }]));
    assert.notEqual(
      t.hash,
      other([
        { id: 'n1', uplink: undefined },
        { id: 'n2', uplink: undefined },
      ]),
    );
    assert.equal(
      other([
        { id: 'n2', uplink: undefined },
        { id: 'n1', uplink: undefined },
      ]),
      other([
        { id: 'n1', uplink: undefined },
        { id: 'n2', uplink: undefined },
      ]),
      'the order networks are declared in does not matter',
    );
  });

  it("replaces one network's guest set whole, deduplicated, in chunks of 1000", () => {
    const guests = Array.from({ length: 2500 }, (_, i) => ({
      mac: `52:54:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
      ip: `198.51.100.${i % 250}`,
    }));
    const script = renderBridgeGuestElements('imds-interception', 'n1', [...guests, guests[0] as (typeof guests)[number]]);
    const lines = script.trimEnd().split('\n');
    assert.equal(lines[0], 'flush set bridge imds-interception guests_n1');
    assert.equal(lines.length, 4);
    assert.equal((script.match(/ \. /g) ?? []).length, 2500);
    assert.equal(renderBridgeGuestElements('imds-interception', 'n1', []), 'flush set bridge imds-interception guests_n1\n');
  });

  it('reads every table, its rules and its set elements from one `nft -j list ruleset`', () => {
    const t = renderBridgeTable({ table: 'imds-n1', innerMac: MAC, networks: [{ id: 'n1', uplink: undefined }] });
    const rule = (table: string, comment?: string) => ({
      rule: { family: 'bridge', table, chain: 'prerouting', handle: 3, ...(comment === undefined ? {} : { comment }), expr: [] },
    });
    const json = JSON.stringify({
      nftables: [
        { metainfo: {} },
        { table: { family: 'bridge', name: 'imds-n1' } },
        {
          set: {
            family: 'bridge',
            table: 'imds-n1',
            name: 'guests_n1',
            type: ['ether_addr', 'ipv4_addr'],
            elem: [{ concat: ['52:54:00:00:00:01', '198.51.100.11'] }],
          },
        },
        rule('imds-n1', `imds:${t.hash}`),
        rule('imds-n1', `imds:${t.hash}`),
        { table: { family: 'bridge', name: 'other' } },
        rule('other'),
      ],
    });
    const tables = parseRuleset(json);
    const mine = tables.get('bridge imds-n1');
    assert.ok(mine);
    assert.ok(tableMatches(mine, t));
    assert.deepEqual([...(mine.sets.get('guests_n1') ?? [])], ['52:54:00:00:00:01 . 198.51.100.11']);
    assert.equal(tables.get('bridge other')?.ruleCount, 1);
    // The same table without its set is not the desired one.
    const noSet = parseRuleset(
      JSON.stringify({
        nftables: [{ table: { family: 'bridge', name: 'imds-n1' } }, rule('imds-n1', `imds:${t.hash}`), rule('imds-n1', `imds:${t.hash}`)],
      }),
    );
    assert.ok(!tableMatches(noSet.get('bridge imds-n1'), t));
  });
});

describe('namespace guest sets and the spoof counter', () => {
  it('replaces the address set and the pair set together, in one script', () => {
    const script = renderInnerGuestElements([
      { mac: '52:54:00:00:00:0B', ip: '198.51.100.11' },
      { mac: '52:54:00:00:00:0a', ip: '198.51.100.10' },
    ]);
    assert.equal(
      script,
      'flush set ip imds vm_ips\nadd element ip imds vm_ips { 198.51.100.10, 198.51.100.11 }\n' +
        'flush set ip imds guests\nadd element ip imds guests { 52:54:00:00:00:0a . 198.51.100.10, 52:54:00:00:00:0b . 198.51.100.11 }\n',
    );
    assert.equal(renderInnerGuestElements([]), 'flush set ip imds vm_ips\nflush set ip imds guests\n');
  });

  it('reads the packets of a named counter', () => {
    const json = JSON.stringify({
      nftables: [{ metainfo: {} }, { counter: { family: 'ip', name: 'spoofed', table: 'imds', handle: 5, packets: 7, bytes: 420 } }],
    });
    assert.equal(parseCounterPackets(json), 7);
    assert.equal(parseCounterPackets(JSON.stringify({ nftables: [{ metainfo: {} }] })), undefined);
  });
});
