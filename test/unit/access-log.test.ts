// The access log's line format, its rate limit and summary line, a file reopened after a rename
// (logrotate), journal lines whatever log_level is; the unknown-caller line (once per address a
// minute, with the MAC) and the neighbour table reader it uses.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { createLogger, setLogLevel } from '../../src/log.ts';
import { macInArpTable } from '../../src/netns/neighbours.ts';
import { accessLine, AccessLog, LineBudget, type RequestRecord } from '../../src/server/access-log.ts';
import { RequestLog } from '../../src/server/request-log.ts';
import { OncePerKey, UnknownCallerLog } from '../../src/server/unknown-callers.ts';

function capture(): { out: Writable; lines: () => Record<string, unknown>[] } {
  let text = '';
  const out = new Writable({
    write(chunk: Buffer, _enc, done) {
      text += chunk.toString();
      done();
    },
  });
  return {
    out,
    lines: () =>
      text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

const AT = Date.parse('2026-12-02T18:00:00.250Z');
const record = (over: Partial<RequestRecord> = {}): RequestRecord => ({
  at: AT,
  network: 'net1',
  vm: '1b4e28ba-2fa1-11d2-883f-0016d3cca427',
  src: '198.51.100.10',
  method: 'GET',
  path: '/openstack/latest/meta_data.json',
  status: 200,
  bytes: 1234,
  ms: 0.4567,
  ...over,
});

const dir = mkdtempSync(join(tmpdir(), 'imds-access-log-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('access log line', () => {
  it('has the documented fields, in order, on one line', () => {
    const line = accessLine(record());
    assert.ok(line.endsWith('\n') && line.indexOf('\n') === line.length - 1);
    const parsed = JSON.parse(line) as Record<string, unknown>;
    assert.deepEqual(Object.keys(parsed), ['time', 'network', 'vm', 'src', 'method', 'path', 'status', 'bytes', 'ms']);
    assert.deepEqual(parsed, {
      time: '2026-12-02T18:00:00.250Z',
      network: 'net1',
      vm: '1b4e28ba-2fa1-11d2-883f-0016d3cca427',
      src: '198.51.100.10',
      method: 'GET',
      path: '/openstack/latest/meta_data.json',
      status: 200,
      bytes: 1234,
      ms: 0.46,
    });
  });

  it('writes null for a caller that is no VM, and escapes what could break a line', () => {
    const parsed = JSON.parse(accessLine(record({ vm: undefined, path: '/a\nb\r\u0000"' }))) as Record<string, unknown>;
    assert.equal(parsed['vm'], null);
    assert.equal(parsed['path'], '/a\nb\r\u0000"');
    assert.equal(accessLine(record({ path: '/a\nb' })).split('\n').length, 2);
    assert.equal((JSON.parse(accessLine(record({ path: `/${'x'.repeat(5000)}` }))) as { path: string }).path.length, 1024);
  });
});

describe('LineBudget', () => {
  it('lets perSecond lines through in each second and counts the rest until the second is over', () => {
    const b = new LineBudget(3);
    const t = 10_000;
    assert.deepEqual(
      [0, 1, 2, 3, 4].map((i) => b.take(t + i)),
      [true, true, true, false, false],
    );
    assert.equal(b.takeSuppressed(t + 500), 0, 'still counting in the same second');
    assert.equal(b.take(t + 1000), true, 'a new second');
    assert.equal(b.takeSuppressed(t + 1000), 2);
    assert.equal(b.takeSuppressed(t + 3000), 0, 'reported once');
    b.lost(7);
    assert.equal(b.takeSuppressed(t + 1500, true), 7);
  });

  it('with 0, lets everything through', () => {
    const b = new LineBudget(0);
    for (let i = 0; i < 10_000; i++) assert.equal(b.take(0), true);
    assert.equal(b.takeSuppressed(5000, true), 0);
  });
});

describe('AccessLog', () => {
  it('appends to a file, summarises what the limit suppressed, and reopens the path after a rename', async () => {
    const path = join(dir, 'access.log');
    const log = createLogger({ destination: capture().out, journald: false });
    const access = new AccessLog(log);
    access.configure(path, 2);
    for (let i = 0; i < 5; i++) access.write(record({ path: `/p${i}` }), AT);
    access.write(record({ path: '/next-second' }), AT + 1000);
    await tick();
    const first = readFileSync(path, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(
      first.map((l) => l['path'] ?? `suppressed ${String(l['suppressed'])}`),
      ['/p0', '/p1', 'suppressed 3', '/next-second'],
    );
    assert.equal(first[2]?.['limit_per_second'], 2);
    renameSync(path, `${path}.1`);
    access.write(record({ path: '/to-the-old-file' }), AT + 1001);
    access.configure(path, 2); // what a reload does
    access.write(record({ path: '/to-the-new-file' }), AT + 2000);
    await tick();
    assert.match(readFileSync(`${path}.1`, 'utf8'), /to-the-old-file/);
    assert.doesNotMatch(readFileSync(`${path}.1`, 'utf8'), /to-the-new-file/);
    assert.match(readFileSync(path, 'utf8'), /to-the-new-file/);
    access.close();
  });

  it('refuses a file it cannot open, naming access_log, and keeps the running log', () => {
    const access = new AccessLog(createLogger({ destination: capture().out, journald: false }));
    const path = join(dir, 'kept.log');
    access.configure(path, 0);
    assert.throws(() => access.configure(join(dir, 'no-such-dir', 'a.log'), 0), /access_log: cannot open .*no-such-dir/);
    assert.equal(access.on, true);
    access.close();
    assert.equal(access.on, false);
  });

  it('journal: pino lines at info even when log_level is warn, also after a reload changed the level', () => {
    const { out, lines } = capture();
    const log = createLogger({ level: 'warn', destination: out, journald: false });
    const access = new AccessLog(log);
    access.configure('journal', 0);
    access.write(record());
    setLogLevel(log, 'error');
    access.write(record({ status: 404 }));
    const got = lines();
    assert.deepEqual(
      got.map((l) => [l['msg'], l['level'], l['component'], l['status'], l['src'], l['bytes']]),
      [
        ['access', 30, 'access', 200, '198.51.100.10', 1234],
        ['access', 30, 'access', 404, '198.51.100.10', 1234],
      ],
    );
    access.close();
  });

  it('off: nothing is written and the native loop is asked for unknown callers only', () => {
    const { out, lines } = capture();
    const log = createLogger({ level: 'info', destination: out, journald: false });
    const access = new AccessLog(log);
    access.configure('off', 0);
    const requests = new RequestLog(log, access, new UnknownCallerLog(log, { macOf: () => undefined }));
    assert.equal(requests.nativeMode(), 1);
    assert.equal(requests.wants(true), false);
    assert.equal(requests.wants(false), true);
    requests.completed(record());
    assert.deepEqual(lines(), []);
    access.configure('journal', 0);
    assert.equal(requests.nativeMode(), 2);
    access.close();
  });
});

describe('unknown callers', () => {
  it('OncePerKey: once per key per interval, counting the requests between', () => {
    const once = new OncePerKey(60_000, 2);
    assert.equal(once.take('a', 0), 1);
    assert.equal(once.take('a', 1000), 0);
    assert.equal(once.take('a', 2000), 0);
    assert.equal(once.take('b', 2000), 1);
    assert.equal(once.take('c', 3000), 0, 'full: a new key waits until an old one expires');
    assert.equal(once.take('a', 60_000), 3, 'the two in between and this one');
    assert.equal(once.take('c', 63_000), 1, 'b expired and made room');
  });

  it('logs at info with the address, the MAC (looked up only for a line written) and the count', () => {
    const { out, lines } = capture();
    const log = createLogger({ level: 'info', destination: out, journald: false });
    const lookups: string[] = [];
    const unknown = new UnknownCallerLog(log, {
      macOf: (network, src) => {
        lookups.push(`${network} ${src}`);
        return '52:54:00:00:00:99';
      },
    });
    const requests = new RequestLog(log, undefined, unknown);
    const stranger = { vm: undefined, src: '198.51.100.99', status: 404 };
    requests.completed(record(stranger));
    requests.completed(record(stranger));
    requests.completed(record({ ...stranger, src: '169.254.169.254' })); // the daemon's own probe
    requests.completed(record({ ...stranger, src: '198.51.100.98', status: 429 })); // rate-limited: not reported
    requests.completed(record()); // a VM
    const got = lines();
    assert.equal(got.length, 1);
    assert.deepEqual(
      [got[0]?.['level'], got[0]?.['network'], got[0]?.['src'], got[0]?.['mac'], got[0]?.['requests'], got[0]?.['status']],
      [30, 'net1', '198.51.100.99', '52:54:00:00:00:99', 1, 404],
    );
    assert.deepEqual(lookups, ['net1 198.51.100.99']);
  });

  it('reads a MAC from /proc/net/arp only for a resolved entry', () => {
    const table = [
      'IP address       HW type     Flags       HW address            Mask     Device',
      '198.51.100.99    0x1         0x2         52:54:00:AA:BB:CC     *        imds0',
      '198.51.100.98    0x1         0x0         00:00:00:00:00:00     *        imds0',
      '',
    ].join('\n');
    assert.equal(macInArpTable(table, '198.51.100.99'), '52:54:00:aa:bb:cc');
    assert.equal(macInArpTable(table, '198.51.100.98'), undefined);
    assert.equal(macInArpTable(table, '198.51.100.9'), undefined, 'no prefix match');
  });
});
