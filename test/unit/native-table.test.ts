// The native data plane's table (src/server/native-table.ts) and route keys (native/http_head.c
// imds_route_key) against the resolver node:http answers with (guest-api.ts answerGet), which is
// the reference: every route of a VM's table must give answerGet's status, type and bytes, and a
// target the C turns into a key must mean, to answerGet, what the key means (no root).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { networkSchema, vmSchema } from '../../src/model/schema.ts';
import { requireAddon } from '../../src/netns/addon.ts';
import { answerGet, normalisePath } from '../../src/server/guest-api.ts';
import { vmTable, type TableResponse } from '../../src/server/native-table.ts';
import { buildVmEntry, type VmEntry } from '../../src/store/metadata-index.ts';
import { CLOUD_INIT_SEQUENCE } from '../../bench/lib/topology.ts';

const net = networkSchema.parse({ id: 'net1', cidr: '192.0.2.0/24', service_ip: '192.0.2.2' });
const SEED = 'S'.repeat(684);
const SEED_FIELD = /"random_seed": "[A-Za-z0-9+/=]{684}"/;

function entry(fields: Record<string, unknown>): VmEntry {
  return buildVmEntry(vmSchema.parse({ network: 'net1', hostname: 'vm', ...fields }), net, { dhcpDomain: 'novalocal' });
}

const VMS: [string, VmEntry][] = [
  [
    'user data, a key, a floating IP',
    entry({
      id: '1b4e28ba-2fa1-11d2-883f-0016d3cca427',
      ip: '192.0.2.10',
      mac: '52:54:00:12:34:56',
      user_data: '#cloud-config\nhostname: a\n',
      public_keys: { k1: 'ssh-ed25519 AAAA k1' },
      public_ipv4: '203.0.113.7',
    }),
  ],
  ['nothing optional', entry({ id: '2c5f39cb-3fb2-42e3-994f-1127e4ddb538', ip: '192.0.2.11', mac: '52:54:00:12:34:57' })],
];

/** The bytes a response gives, the seed (when it has one) written as SEED. */
function bodyOf(r: TableResponse): string {
  const parts = r.segments.map((s) => s.bytes.toString('latin1'));
  if (r.seedAt !== undefined) parts.splice(r.seedAt, 0, SEED);
  return parts.join('');
}

describe('native table', () => {
  for (const [name, vm] of VMS) {
    it(`${name}: every route answers as answerGet does`, () => {
      const { responses, routes } = vmTable(vm);
      assert.ok(routes.size > 60, `${routes.size} routes`);
      const wrong: string[] = [];
      for (const [key, at] of routes) {
        const r = responses[at] as TableResponse;
        const ref = answerGet(vm, key, () => '', 'GET');
        let expected = ref.body.toString('latin1');
        if (r.seedAt !== undefined) {
          assert.match(expected, SEED_FIELD, `${key}: the reference has a seed where the table has one`);
          expected = expected.replace(SEED_FIELD, `"random_seed": "${SEED}"`);
        }
        if (r.status !== ref.status || r.type !== ref.type || bodyOf(r) !== expected)
          wrong.push(`${key}: ${r.status} ${r.type} ${JSON.stringify(bodyOf(r).slice(0, 80))} vs ${ref.status} ${ref.type}`);
      }
      assert.deepEqual(wrong, []);
    });
  }

  it("holds every path of cloud-init's boot (the storm is answered natively) and never the password", () => {
    const { routes } = vmTable(VMS[0]?.[1] as VmEntry);
    const native = requireAddon();
    for (const path of CLOUD_INIT_SEQUENCE) {
      const key = native.routeKey(path);
      assert.ok(key !== undefined && routes.has(key), `${path} (key ${key})`);
    }
    assert.ok(![...routes.keys()].some((k) => k.endsWith('/password')));
  });

  it('shares the bytes many VMs have, keeps the rest per VM', () => {
    const a = vmTable(VMS[0]?.[1] as VmEntry);
    const b = vmTable(VMS[1]?.[1] as VmEntry);
    const seg = (t: typeof a, key: string, i = 0) => t.responses[t.routes.get(key) as number]?.segments[i];
    assert.equal(seg(a, '/openstack')?.bytes, seg(b, '/openstack')?.bytes, 'one listing Buffer');
    assert.equal(seg(a, '/openstack')?.shared, true);
    assert.equal(seg(a, '/openstack/latest/meta_data.json', 2)?.shared, true, 'the tail after the seed');
    assert.equal(seg(a, '/openstack/latest/meta_data.json', 0)?.shared, false, "the VM's own fields");
    assert.equal(seg(a, '/latest/meta-data/instance-id')?.shared, false);
  });
});

describe('route keys', () => {
  const native = requireAddon();
  const vm = VMS[0]?.[1] as VmEntry;
  const same = (a: string, b: string): boolean => {
    const x = answerGet(vm, a, () => '', 'GET');
    const y = answerGet(vm, b, () => '', 'GET');
    return x.status === y.status && x.type === y.type && (a.includes('meta_data.json') || x.body.equals(y.body));
  };

  it('drop the query and one trailing slash; hand over escapes, dot and empty segments', () => {
    const cases: [string, string | undefined][] = [
      ['/', '/'],
      ['/?x=1', '/'],
      ['/openstack/', '/openstack'],
      ['/openstack/latest/meta_data.json?a/b', '/openstack/latest/meta_data.json'],
      ['/latest/meta-data/', '/latest/meta-data'],
      ['/1.0/meta-data', '/1.0/meta-data'],
      ['/latest//meta-data', undefined],
      ['//', undefined],
      ['/latest/./meta-data', undefined],
      ['/latest/../openstack', undefined],
      ['/.hidden', undefined],
      ['/latest/meta%2ddata', undefined],
      ['?x', undefined],
      ['', undefined],
    ];
    for (const [target, key] of cases) assert.equal(native.routeKey(target), key, target);
  });

  it('a key means to answerGet what its target does (seeded random targets)', () => {
    let seed = 7;
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const pieces = ['/', 'openstack', 'latest', '2013-04-04', 'meta_data.json', 'meta-data', 'public-keys', '0', 'openssh-key', '.', '..'];
    const extra = ['?', '%2f', '%41', '#', 'x', '//', '/'];
    let accepted = 0;
    for (let i = 0; i < 5000; i++) {
      let target = '/';
      const n = 1 + random(7);
      for (let j = 0; j < n; j++)
        target += (j > 0 ? '/' : '') + (random(5) === 0 ? extra[random(extra.length)] : pieces[random(pieces.length)]);
      if (random(3) === 0) target += '/';
      const key = native.routeKey(target);
      if (key === undefined) continue;
      accepted++;
      assert.ok(same(normalisePath(target), key), `${target} -> ${key}`);
    }
    assert.ok(accepted > 1000, `${accepted} of 5000 targets had a key`);
  });
});
