// imds doctor's readers of kernel JSON (captured output of bridge, ip and nft) and its printed form.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { formatReport } from '../../src/cli/doctor.ts';
import { parseAgeingSeconds, parseCounters, parseFdb, parseNeighbours } from '../../src/doctor/parse.ts';

describe('doctor readers', () => {
  it('reads the ports of a bridge forwarding table, not the devices own entries', () => {
    const fdb = parseFdb(
      '[{"mac":"33:33:00:00:00:01","ifname":"brx","flags":["self"],"state":"permanent"},' +
        '{"mac":"e6:a1:60:5a:ec:27","ifname":"va","flags":[],"master":"brx","state":"permanent"},' +
        '{"mac":"52:54:00:00:00:0A","ifname":"tap0","flags":[],"master":"brx","state":""},' +
        '{"mac":"33:33:00:00:00:01","ifname":"va","flags":["self"],"state":"permanent"}]',
    );
    assert.deepEqual(fdb, [
      { mac: 'e6:a1:60:5a:ec:27', port: 'va', master: 'brx', state: 'permanent' },
      { mac: '52:54:00:00:00:0a', port: 'tap0', master: 'brx', state: '' },
    ]);
    assert.deepEqual(parseFdb(''), []);
  });

  it('reads neighbours, resolved or not (IPv4 only)', () => {
    assert.deepEqual(
      parseNeighbours(
        '[{"dst":"192.0.2.5","lladdr":"52:54:00:00:00:01","state":["REACHABLE"]},{"dst":"192.0.2.6","state":["INCOMPLETE"]},' +
          '{"dst":"fe80::1","lladdr":"52:54:00:00:00:01","state":["STALE"]}]',
      ),
      [
        { ip: '192.0.2.5', mac: '52:54:00:00:00:01', state: ['REACHABLE'] },
        { ip: '192.0.2.6', mac: undefined, state: ['INCOMPLETE'] },
      ],
    );
  });

  it("reads a bridge's ageing time in seconds", () => {
    assert.equal(parseAgeingSeconds('[{"ifname":"brx","linkinfo":{"info_kind":"bridge","info_data":{"ageing_time":30000}}}]'), 300);
    assert.equal(parseAgeingSeconds('[{"ifname":"eth0"}]'), undefined);
    assert.equal(parseAgeingSeconds(''), undefined);
  });

  it("reads the namespace table's rule counters and its named counter", () => {
    const live = readFileSync(new URL('../fixtures/nft-list-table.json', import.meta.url), 'utf8').replace(
      '"counter": {"packets": 0, "bytes": 0}}, {"dnat"',
      '"counter": {"packets": 12, "bytes": 720}}, {"dnat"',
    );
    const c = parseCounters(
      live.replace(
        '"name": "spoofed", "table": "imds", "handle": 5, "packets": 0',
        '"name": "spoofed", "table": "imds", "handle": 5, "packets": 3',
      ),
    );
    assert.deepEqual(c.rules, [
      { chain: 'prerouting', action: 'dnat', packets: 12 },
      { chain: 'input', action: 'drop', packets: 0 },
    ]);
    assert.deepEqual([...c.named], [['spoofed', 3]]);
  });

  it('prints ✓ and ✗ with the evidence, the fix under a failed hop, and a verdict', () => {
    const text = formatReport({
      ok: false,
      hops: [
        { name: 'bridge', ok: true, detail: 'imdsb-net1 is up', fix: null },
        { name: 'neighbour', ok: false, detail: 'saw it from 52:54:00:00:00:ff', fix: 'imds vm set X --mac 52:54:00:00:00:ff' },
      ],
    });
    assert.equal(
      text,
      '✓ bridge     imdsb-net1 is up\n✗ neighbour  saw it from 52:54:00:00:00:ff\n' +
        '             fix: imds vm set X --mac 52:54:00:00:00:ff\n1 of 2 hops fail: neighbour\n',
    );
    assert.equal(formatReport({ ok: true, hops: [] }), 'no networks to check\n');
  });
});
