// Per-VM contact: what the JS paths see and what the native loop's drains add, merged by time; the
// ring of recent requests; the records of VMs that are gone pruned; and the file that carries the
// counts across a restart (src/daemon/contact-file.ts).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { ContactBook, RECENT_PATH_MAX, RECENT_SIZE } from '../../src/contact.ts';
import { CONTACT_FILE, ContactFile, parseContacts } from '../../src/daemon/contact-file.ts';
import { createLogger } from '../../src/log.ts';
import { Stats } from '../../src/stats.ts';

const counts = (book: ContactBook, id: string) => {
  const c = book.get(id);
  if (c === undefined) return undefined;
  const { recent: _recent, ...rest } = c;
  return rest;
};

describe('ContactBook', () => {
  it('counts requests and keeps the first and the last contact with its status, from both sides', () => {
    const book = new ContactBook();
    book.seen('a', 200, 1000);
    book.seen('a', 404, 2000);
    assert.deepEqual(counts(book, 'a'), { requests: 2, firstSeen: 1000, lastSeen: 2000, lastStatus: 404 });
    // The native loop's drain: earlier and later requests than the JS saw.
    book.merge('a', { requests: 3, firstSeen: 500, lastSeen: 1500, lastStatus: 200 });
    assert.deepEqual(counts(book, 'a'), { requests: 5, firstSeen: 500, lastSeen: 2000, lastStatus: 404 });
    book.merge('a', { requests: 1, firstSeen: 2500, lastSeen: 2500, lastStatus: 429 });
    assert.deepEqual(counts(book, 'a'), { requests: 6, firstSeen: 500, lastSeen: 2500, lastStatus: 429 });
    book.merge('b', { requests: 1, firstSeen: 10, lastSeen: 10, lastStatus: 200 });
    assert.equal(book.get('b')?.requests, 1);
  });

  it('keeps the last requests in a ring, newest first: method and path from the JS side, summaries from the native loop', () => {
    const book = new ContactBook();
    assert.deepEqual(book.recent('a'), []);
    book.seen('a', 200, 1);
    assert.equal(book.get('a')?.recent, undefined, 'no ring before a request with a path: VMs that never asked cost nothing');
    book.answered('a', 200, 'GET', '/openstack/latest/meta_data.json', 1000);
    book.merge('a', { requests: 27, firstSeen: 1001, lastSeen: 1500, lastStatus: 200 });
    book.answered('a', 401, 'PUT', '/latest/api/token', 2000);
    book.answered('a', 200, 'PROPFIND', `/${'x'.repeat(400)}`, 3000);
    const recent = book.recent('a');
    assert.deepEqual(recent.slice(1), [
      { at: 2000, status: 401, method: 'PUT', path: '/latest/api/token', requests: 1, by: 'node' },
      { at: 1500, status: 200, requests: 27, by: 'native' },
      { at: 1000, status: 200, method: 'GET', path: '/openstack/latest/meta_data.json', requests: 1, by: 'node' },
    ]);
    assert.equal(recent[0]?.method, 'OTHER', 'methods beyond the usual ones are not kept as sent');
    assert.equal(recent[0]?.path?.length, RECENT_PATH_MAX + 1, 'a long path is cut');
    assert.equal(book.get('a')?.requests, 31);
    for (let i = 0; i < 20; i++) book.answered('a', 200, 'GET', `/p${i}`, 4000 + i);
    const full = book.recent('a');
    assert.equal(full.length, RECENT_SIZE, 'bounded');
    assert.deepEqual(
      full.map((r) => r.path),
      Array.from({ length: RECENT_SIZE }, (_, k) => `/p${19 - k}`),
    );
  });

  it('forgets the VMs that are gone, not those that moved to another network', () => {
    const stats = new Stats();
    const book = stats.contacts;
    book.seen('kept', 200, 1);
    book.seen('gone', 200, 1);
    stats.forgetVms(
      [
        { id: 'gone', network: 'net1' },
        { id: 'kept', network: 'net1' },
      ],
      (id) => id === 'kept',
    );
    assert.equal(book.get('gone'), undefined);
    assert.equal(book.get('kept')?.requests, 1);
  });

  it("restores an earlier run's counts into this run's (a hand-over: both answered requests), dropping VMs that are gone", () => {
    const book = new ContactBook();
    book.seen('a', 404, 5000); // this run, before the file was read
    const v = book.version;
    const taken = book.restore(
      [
        ['a', 10, 1000, 4000, 200],
        ['b', 2, 100, 200, 200],
        ['gone', 5, 1, 2, 200],
      ],
      (id) => id !== 'gone',
    );
    assert.equal(taken, 2);
    assert.ok(book.version > v);
    assert.deepEqual(counts(book, 'a'), { requests: 11, firstSeen: 1000, lastSeen: 5000, lastStatus: 404 });
    assert.deepEqual(counts(book, 'b'), { requests: 2, firstSeen: 100, lastSeen: 200, lastStatus: 200 });
    assert.equal(book.get('gone'), undefined);
    assert.deepEqual(book.records().sort(), [
      ['a', 11, 1000, 5000, 404],
      ['b', 2, 100, 200, 200],
    ]);
  });
});

describe('ContactFile', () => {
  const dirs: string[] = [];
  after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  const lines: { level: string; msg: string }[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(JSON.parse(chunk.toString()) as { level: string; msg: string });
      done();
    },
  });
  const log = createLogger({ level: 'info', destination });
  const dir = (): string => {
    const d = mkdtempSync(join(tmpdir(), 'imds-contact-'));
    dirs.push(d);
    return d;
  };
  const fileOf = (stateDir: string, stats: Stats, exists: (id: string) => boolean = () => true) =>
    new ContactFile({ stateDir, stats, exists, log, predecessor: () => undefined, intervalMs: 3_600_000 });

  it('survives a restart: written when it changed and at stop, read back at start, gone VMs dropped', async () => {
    const stateDir = dir();
    const first = new Stats();
    const a = fileOf(stateDir, first);
    a.start(); // no file yet: a first start, nothing logged as wrong
    first.contacts.answered('vm-a', 200, 'GET', '/openstack', 1000);
    first.contacts.merge('vm-b', { requests: 28, firstSeen: 900, lastSeen: 1100, lastStatus: 200 });
    await a.flush();
    const written = readFileSync(join(stateDir, CONTACT_FILE), 'utf8');
    assert.deepEqual(parseContacts(written).sort(), [
      ['vm-a', 1, 1000, 1000, 200],
      ['vm-b', 28, 900, 1100, 200],
    ]);
    assert.doesNotMatch(written, /openstack/, 'the ring (paths) is not persisted');
    first.contacts.seen('vm-a', 404, 2000);
    await a.close();
    const second = new Stats();
    const b = fileOf(stateDir, second, (id) => id !== 'vm-b');
    b.start();
    assert.deepEqual(second.contacts.records(), [['vm-a', 2, 1000, 2000, 404]]);
    await b.close();
  });

  it('a corrupt or foreign file is logged and ignored (never fatal), then replaced', async () => {
    for (const text of ['{"format":1,"vms":[["x",1,2]]}', 'not json', '{"format":9,"vms":[]}']) {
      const stateDir = dir();
      writeFileSync(join(stateDir, CONTACT_FILE), text);
      lines.length = 0;
      const stats = new Stats();
      const f = fileOf(stateDir, stats);
      f.start();
      assert.equal(stats.contacts.size, 0);
      assert.ok(
        lines.some((l) => l.msg.includes('malformed')),
        text,
      );
      stats.contacts.seen('vm-a', 200, 1);
      await f.close();
      assert.deepEqual(parseContacts(readFileSync(join(stateDir, CONTACT_FILE), 'utf8')), [['vm-a', 1, 1, 1, 200]]);
    }
  });

  it('a successor reads the file only once the daemon it replaces has exited, and writes nothing before', async () => {
    const stateDir = dir();
    writeFileSync(join(stateDir, CONTACT_FILE), '{"format":1,"written_at":"x","vms":[["vm-a",5,1,2,200]]}');
    const predecessor = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    const exited = new Promise((resolve) => predecessor.once('exit', resolve));
    const stats = new Stats();
    const f = new ContactFile({ stateDir, stats, exists: () => true, log, intervalMs: 3_600_000, predecessor: () => predecessor.pid });
    f.start();
    stats.contacts.seen('vm-a', 404, 10); // answered by the successor meanwhile
    await f.flush();
    assert.equal(stats.contacts.get('vm-a')?.requests, 1, 'not read while the predecessor runs');
    assert.match(readFileSync(join(stateDir, CONTACT_FILE), 'utf8'), /"vm-a",5,/, 'and not overwritten either');
    predecessor.kill();
    await exited;
    const deadline = Date.now() + 5000;
    while (stats.contacts.get('vm-a')?.requests === 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(stats.contacts.records(), [['vm-a', 6, 1, 10, 404]], 'read once it exited: both runs counted, once each');
    await f.close();
    assert.deepEqual(parseContacts(readFileSync(join(stateDir, CONTACT_FILE), 'utf8')), [['vm-a', 6, 1, 10, 404]]);
  });

  it('a successor stopped before its predecessor exited writes nothing', async () => {
    const stateDir = dir();
    writeFileSync(join(stateDir, CONTACT_FILE), '{"format":1,"written_at":"x","vms":[["vm-a",5,1,2,200]]}');
    const stats = new Stats();
    const f = new ContactFile({ stateDir, stats, exists: () => true, log, intervalMs: 3_600_000, predecessor: () => process.pid });
    f.start();
    stats.contacts.seen('vm-b', 200, 10);
    await f.close();
    assert.match(readFileSync(join(stateDir, CONTACT_FILE), 'utf8'), /"vm-a",5,/);
  });
});
