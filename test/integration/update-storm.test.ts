// VM changes during a storm (issue 16's atomicity rule, for whichever data plane answers): guests ask
// for their meta_data.json as fast as they can, each request on a new connection, while the admin
// API rewrites every VM's metadata again and again. Every answer must be one VM's complete, correct
// document — the caller's own (its uuid), parseable whole, with a generation that was written — and
// no guest may see a generation go back once it has seen a newer one (a change, once served, stays).
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { AdminClient } from '../../src/cli/client.ts';
import { useSandbox, type Guest, type Sandbox } from '../helpers/sandbox.ts';

const GUESTS = 8;
const vmId = (i: number): string => `5a7e0000-0000-4000-8000-${String(i).padStart(12, '0')}`;

/**
 * Runs in a guest: GETs on new connections for MS ms; prints, per answer, its status, the uuid and
 * the meta.gen it carried, or why it could not be read.
 */
const READER = `
const http = require('http');
const ms = Number(process.argv[1]);
const until = Date.now() + ms;
const seen = [];
function once() {
  if (Date.now() > until) { console.log(JSON.stringify(seen)); return; }
  const req = http.get({ host: '169.254.169.254', path: '/openstack/latest/meta_data.json', agent: false, timeout: 10000 }, (res) => {
    const parts = []; res.on('data', (c) => parts.push(c));
    res.on('end', () => {
      const body = Buffer.concat(parts).toString();
      let doc; try { doc = JSON.parse(body); } catch { seen.push({ status: res.statusCode, bad: body.slice(0, 200) }); return once(); }
      seen.push({
        status: res.statusCode, uuid: doc.uuid, gen: Number(doc.meta && doc.meta.gen), length: body.length,
        declared: Number(res.headers['content-length']),
      });
      once();
    });
  });
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', (e) => { seen.push({ error: e.code || e.message }); setTimeout(once, 5); });
}
once();
`;

interface Seen {
  status?: number;
  uuid?: string;
  gen?: number;
  length?: number;
  declared?: number;
  bad?: string;
  error?: string;
}

describe('VM changes while guests storm', () => {
  const current = useSandbox({ before, after, afterEach });
  let sb: Sandbox;
  before(() => {
    sb = current();
  });

  it('every answer is the caller’s own complete document, of a generation written, never older than one seen', async () => {
    const net = { id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' };
    const vms = Array.from({ length: GUESTS }, (_, i) => ({
      id: vmId(i),
      network: 'net1',
      ip: `198.51.100.${10 + i}`,
      mac: `52:54:00:00:11:${(0x10 + i).toString(16)}`,
      hostname: `storm${i}`,
      meta: { gen: '0' },
    }));
    await sb.startDaemon(sb.writeConfig(sb.config({ log_level: 'info', rate_limit_per_second: 0, networks: [net], vms })));
    const guests: Guest[] = [];
    for (const [i, vm] of vms.entries())
      guests.push(await sb.addGuest(`s${i}`, { bridge: 'imdsb-net1', ip: vm.ip, prefix: 24, mac: vm.mac, metadataVia: '198.51.100.2' }));
    const client = new AdminClient(sb.adminSocket());
    const readers = guests.map((g) => g.exec([process.execPath, '-e', READER, '6000'], { timeoutMs: 60_000 }));
    // The writer: generation after generation, every VM, one admin call each (a new document and
    // a new user data, so the whole entry changes), until the readers are done.
    let gen = 0;
    let writing = true;
    const writer = (async () => {
      while (writing) {
        gen++;
        for (const vm of vms)
          await client.call('PATCH', `/v1/vms/${vm.id}`, {
            meta: { gen: String(gen), pad: 'x'.repeat(gen % 97) },
            user_data: `#gen ${gen}\n`,
          });
      }
    })();
    const results = await Promise.all(readers);
    writing = false;
    await writer;
    let answers = 0;
    for (const [i, r] of results.entries()) {
      const seen = JSON.parse(r.stdout) as Seen[];
      let newest = 0;
      for (const s of seen) {
        assert.equal(s.error, undefined, `guest ${i}: a request failed: ${JSON.stringify(s)}`);
        assert.equal(s.bad, undefined, `guest ${i}: an answer that is not one whole document: ${JSON.stringify(s)}`);
        assert.equal(s.status, 200, `guest ${i}: ${JSON.stringify(s)}`);
        assert.equal(s.uuid, vmId(i), `guest ${i} got another VM's document`);
        assert.equal(s.length, s.declared, `guest ${i}: the body is not as long as its content-length`);
        assert.ok(
          Number.isInteger(s.gen) && (s.gen as number) >= 0 && (s.gen as number) <= gen,
          `guest ${i}: generation ${s.gen} was never written`,
        );
        assert.ok((s.gen as number) >= newest, `guest ${i}: generation ${s.gen} after ${newest}: a change went back`);
        newest = s.gen as number;
        answers++;
      }
      assert.ok(newest > 0, `guest ${i} never saw a change (it read ${seen.length} answers)`);
    }
    process.stdout.write(`# measured: ${answers} answers to ${GUESTS} guests while ${gen} generations of ${GUESTS} VMs were written\n`);
    assert.ok(answers > GUESTS * 50, `the guests read too little to mean anything: ${answers}`);
    assert.ok(gen > 5, `too few generations were written: ${gen}`);
  });
});
