// The C request reader (native/http_head.c, issue 16's data plane) against the JS fast path it
// replaces: parseHead from src/server/fast-path.ts with onData's CRLFCRLF search and MAX_FAST_HEAD
// is the reference, and any difference is a bug in the C. A hand-written table covers each branch;
// a seeded random test mutates the table's heads (bytes 0-255) and compares the two (no root).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { requireAddon } from '../../src/netns/addon.ts';
import { parseHead } from '../../src/server/fast-path.ts';

type Result =
  | { status: 'incomplete' | 'handover' }
  | { status: 'ok'; method: 'GET' | 'HEAD'; target: string; keepAlive: boolean; token?: string; headLength: number };

// MAX_FAST_HEAD is module-private in fast-path.ts; the test below checks it still says 8192.
const MAX = 8192;
const CRLFCRLF = Buffer.from('\r\n\r\n');

/**
 * What the JS fast path makes of the bytes read so far. onData hands a head with no CRLFCRLF over at
 * once; the C reader waits instead while a CRLFCRLF could still start at or before MAX (the JS would
 * take the whole head, read in one piece), so "incomplete" is exactly that.
 */
function reference(buf: Buffer): Result {
  const end = buf.indexOf(CRLFCRLF);
  if (end < 0) {
    let k = Math.min(3, buf.length);
    while (k > 0 && !buf.subarray(buf.length - k).equals(CRLFCRLF.subarray(0, k))) k--;
    return { status: buf.length - k <= MAX ? 'incomplete' : 'handover' };
  }
  if (end > MAX) return { status: 'handover' };
  const head = parseHead(buf.toString('latin1', 0, end));
  if (head === undefined) return { status: 'handover' };
  const { method, target, keepAlive, token } = head;
  return { status: 'ok', method, target, keepAlive, ...(token === undefined ? {} : { token }), headLength: end + 4 };
}

const native = (buf: Buffer): Result => requireAddon().parseHttpHead(buf);
const latin1 = (s: string): Buffer => Buffer.from(s, 'latin1');
/** A complete head: the lines, then CRLFCRLF. */
const h = (s: string): string => `${s}\r\n\r\n`;
const pad = (n: number): string => 'a'.repeat(n);
/** A complete head whose CRLFCRLF starts at offset `at`. */
const sized = (at: number): string => h(`GET / HTTP/1.1\r\nX-Pad: ${pad(at - 'GET / HTTP/1.1\r\nX-Pad: '.length)}`);

type Case = [head: string, expected: Result['status'] | { keepAlive?: boolean; token?: string | undefined; target?: string }];
const CASES: Case[] = [
  // methods, versions, the request line
  [h('GET / HTTP/1.1'), { keepAlive: true }],
  [h('HEAD / HTTP/1.0'), { keepAlive: false }],
  [h('GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\nAccept: */*'), { target: '/latest/meta-data/' }],
  [h('POST / HTTP/1.1'), 'handover'],
  [h('get / HTTP/1.1'), 'handover'],
  [h('GETS / HTTP/1.1'), 'handover'],
  [h('OPTIONS * HTTP/1.1'), 'handover'],
  [h('GET / HTTP/2.0'), 'handover'],
  [h('GET / HTTP/1.2'), 'handover'],
  [h('GET / http/1.1'), 'handover'],
  [h('GET / HTTP/1.1 '), 'handover'],
  [h('GET /a b HTTP/1.1'), 'handover'],
  [h('GET  / HTTP/1.1'), 'handover'],
  [h(' GET / HTTP/1.1'), 'handover'],
  [h('GET / HTTP/1.1\r'), 'handover'],
  [h('GET / HTTP/1.1\n'), 'handover'],
  [h('GET\t/ HTTP/1.1'), 'handover'],
  [h('GET'), 'handover'],
  [h('GET /'), 'handover'],
  [h(''), 'handover'],
  // targets
  [h('GET http://169.254.169.254/ HTTP/1.1'), 'handover'],
  [h('GET * HTTP/1.1'), 'handover'],
  [h('GET /!"#$%&\'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~ HTTP/1.1'), { target: '/!"#$%&\'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~' }],
  [h('GET /\x01 HTTP/1.1'), 'handover'],
  [h('GET /\x7f HTTP/1.1'), 'handover'],
  [h('GET /\x80 HTTP/1.1'), 'handover'],
  [h('GET /\xe9 HTTP/1.1'), 'handover'],
  [h('GET /\xa0 HTTP/1.1'), 'handover'],
  [h('GET /\x00 HTTP/1.1'), 'handover'],
  [h('GET /a\rb HTTP/1.1'), 'handover'],
  [h('GET /%00/../x HTTP/1.1'), { target: '/%00/../x' }],
  // odd lines: obs-fold, no colon, separators and latin1 in names, bare CR and LF
  [h('GET / HTTP/1.1\r\n folded: value'), 'handover'],
  [h('GET / HTTP/1.1\r\nA: b\r\n\tfolded'), 'handover'],
  [h('GET / HTTP/1.1\r\nno colon'), 'handover'],
  [h('GET / HTTP/1.1\r\nnocolon'), 'handover'],
  [h('GET / HTTP/1.1\r\nBad Header: x'), 'handover'],
  [h('GET / HTTP/1.1\r\nHost : x'), 'handover'],
  [h('GET / HTTP/1.1\r\nHost\t: x'), 'handover'],
  [h('GET / HTTP/1.1\r\nA(b): x'), 'handover'],
  [h('GET / HTTP/1.1\r\nA/b: x'), 'handover'],
  [h('GET / HTTP/1.1\r\nA"b: x'), 'handover'],
  [h('GET / HTTP/1.1\r\nA\x00b: x'), 'handover'],
  [h('GET / HTTP/1.1\r\nA\x7fb: x'), 'handover'],
  [h('GET / HTTP/1.1\r\n\xc9tag: x'), 'handover'],
  [h('GET / HTTP/1.1\r\n\xa0: x'), 'handover'],
  [h("GET / HTTP/1.1\r\n!#$%&'*+-.^_`|~09AZaz: x"), { keepAlive: true }],
  [h('GET / HTTP/1.1\r\n:empty-name'), 'handover'], // node:http answers 400
  [h('GET / HTTP/1.1\r\n:'), 'handover'],
  [h('GET / HTTP/1.1\r\nA:'), { keepAlive: true }],
  [h('GET / HTTP/1.1\r\nA::b'), { keepAlive: true }],
  [h('GET / HTTP/1.1\r\nA: b: c'), { keepAlive: true }],
  [h('GET / HTTP/1.1\r\nA: \x00\x01\x7f\x80\xff \t'), 'handover'], // controls: node:http answers 400
  [h('GET / HTTP/1.1\r\nA: \x01'), 'handover'],
  [h('GET / HTTP/1.1\r\nA: \x7f'), 'handover'],
  [h('GET / HTTP/1.1\r\nA: \x80\xff \t'), { keepAlive: true }],
  [h('GET / HTTP/1.1\r\nX: a\nY: b'), 'handover'],
  [h('GET / HTTP/1.1\r\nX: a\rY: b'), 'handover'],
  [h('GET / HTTP/1.1\r\nX: a\r'), 'handover'],
  [h('GET / HTTP/1.1\r\nX: a\r\n\r'), 'handover'],
  [h('GET / HTTP/1.1\r\nX: a\n'), 'handover'],
  [h('GET / HTTP/1.1\r\nX: a\r\r'), 'handover'],
  [h('GET / HTTP/1.1\r\n\r'), 'handover'],
  [h('GET / HTTP/1.1\r\n\n'), 'handover'],
  [h('GET / HTTP/1.1\r\nX: a\r\n'), { keepAlive: true }],
  // bodies, upgrades, expectations
  [h('GET / HTTP/1.1\r\nContent-Length: 0'), { keepAlive: true }],
  [h('GET / HTTP/1.1\r\ncontent-length:0'), 'ok'],
  [h('GET / HTTP/1.1\r\nCONTENT-LENGTH: \t0 \t'), 'ok'],
  [h('GET / HTTP/1.1\r\nContent-Length: \xa00\x0b\x0c'), 'handover'],
  [h('GET / HTTP/1.1\r\nContent-Length: \t0 '), 'ok'],
  [h('GET / HTTP/1.1\r\nContent-Length: \x850'), 'handover'],
  [h('GET / HTTP/1.1\r\nContent-Length: \x1c0'), 'handover'],
  [h('GET / HTTP/1.1\r\nContent-Length: 5'), 'handover'],
  [h('GET / HTTP/1.1\r\nContent-Length: 00'), 'handover'],
  [h('GET / HTTP/1.1\r\nContent-Length: +0'), 'handover'],
  [h('GET / HTTP/1.1\r\nContent-Length: 0, 0'), 'handover'],
  [h('GET / HTTP/1.1\r\nContent-Length:'), 'handover'],
  [h('GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0'), 'handover'],
  [h('GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 1'), 'handover'],
  [h('GET / HTTP/1.1\r\nContent-Length-X: 5'), 'ok'],
  [h('GET / HTTP/1.1\r\nX-Content-Length: 5'), 'ok'],
  [h('POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 3'), 'handover'],
  [h('GET / HTTP/1.1\r\nTransfer-Encoding: chunked'), 'handover'],
  [h('GET / HTTP/1.1\r\ntransfer-encoding:'), 'handover'],
  [h('GET / HTTP/1.1\r\nTransfer-Encodings: chunked'), 'ok'],
  [h('GET / HTTP/1.1\r\nUpgrade: websocket'), 'handover'],
  [h('GET / HTTP/1.1\r\nUPGRADE:h2c'), 'handover'],
  [h('GET / HTTP/1.1\r\nUpgrade-Insecure-Requests: 1'), 'ok'],
  [h('GET / HTTP/1.1\r\nExpect: 100-continue'), 'handover'],
  [h('GET / HTTP/1.1\r\nExpectation: x'), 'ok'],
  // connection: close, keep-alive, lists, one header only, HTTP/1.0's default
  [h('GET / HTTP/1.1\r\nConnection: close'), { keepAlive: false }],
  [h('GET / HTTP/1.1\r\nConnection: CLOSE'), { keepAlive: false }],
  [h('GET / HTTP/1.1\r\nconnection:close'), { keepAlive: false }],
  [h('GET / HTTP/1.1\r\nConnection: keep-alive, close'), { keepAlive: false }],
  [h('GET / HTTP/1.1\r\nConnection: close , TE'), { keepAlive: false }],
  [h('GET / HTTP/1.1\r\nConnection: ,\t close\t,'), { keepAlive: false }],
  [h('GET / HTTP/1.1\r\nConnection: \xa0close'), { keepAlive: true }], // as node:http: NBSP is no HTTP whitespace
  [h('GET / HTTP/1.1\r\nConnection: \x85close'), { keepAlive: true }],
  [h('GET / HTTP/1.1\r\nConnection: closed'), { keepAlive: true }],
  [h('GET / HTTP/1.1\r\nConnection: clos\xc9'), { keepAlive: true }],
  [h('GET / HTTP/1.1\r\nConnection: close\xc0'), { keepAlive: true }],
  [h('GET / HTTP/1.1\r\nConnection: "close"'), { keepAlive: true }],
  [h('GET / HTTP/1.1\r\nConnection: TE, Upgrade'), { keepAlive: true }],
  [h('GET / HTTP/1.1\r\nConnection:'), { keepAlive: true }],
  [h('GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close'), 'handover'],
  [h('GET / HTTP/1.1\r\nConnection: TE\r\nConnection: close'), 'handover'],
  [h('GET / HTTP/1.1\r\nConnections: close'), { keepAlive: true }],
  [h('GET / HTTP/1.1\r\nProxy-Connection: close'), { keepAlive: true }],
  [h('GET / HTTP/1.0'), { keepAlive: false }],
  [h('GET / HTTP/1.0\r\nConnection: Keep-Alive'), { keepAlive: true }],
  [h('GET / HTTP/1.0\r\nConnection: keep-alive ,x'), { keepAlive: true }],
  [h('GET / HTTP/1.0\r\nConnection: keep-alive, close'), { keepAlive: false }],
  [h('GET / HTTP/1.0\r\nConnection: keepalive'), { keepAlive: false }],
  [h('GET / HTTP/1.0\r\nConnection: keep-alive\xa0'), { keepAlive: false }],
  [h('HEAD / HTTP/1.0\r\nConnection: x\r\nConnection: keep-alive'), 'handover'],
  // the session token: case, spaces, repeats, its ttl sibling
  [h('GET / HTTP/1.1\r\nX-aws-ec2-metadata-token: AbC-_1'), { token: 'AbC-_1' }],
  [h('GET / HTTP/1.1\r\nX-aws-ec2-metadata-token:  AbC-_1 \t'), { token: 'AbC-_1' }],
  [h('GET / HTTP/1.1\r\nx-aws-ec2-metadata-token:\ta b\t'), { token: 'a b' }],
  [h('GET / HTTP/1.1\r\nX-AWS-EC2-METADATA-TOKEN:'), { token: '' }],
  [h('GET / HTTP/1.1\r\nX-aws-ec2-metadata-token:  \t '), { token: '' }],
  [h('GET / HTTP/1.1\r\nX-aws-ec2-metadata-token: \xa0t\xa0'), { token: '\xa0t\xa0' }],
  [h('GET / HTTP/1.1\r\nX-aws-ec2-metadata-token: t\x0b'), 'handover'], // a control character
  [h('GET / HTTP/1.1\r\nX-aws-ec2-metadata-token: \xc9T\xff'), { token: '\xc9T\xff' }],
  [h('GET / HTTP/1.1\r\nX-aws-ec2-metadata-token: a\r\nx-aws-ec2-metadata-token: b'), { token: 'a, b' }],
  [
    h('GET / HTTP/1.1\r\nX-aws-ec2-metadata-token: a\r\nHost: x\r\nX-aws-ec2-metadata-token:\r\nX-aws-ec2-metadata-token: c '),
    { token: 'a, , c' },
  ],
  [h('GET / HTTP/1.1\r\nx-aws-ec2-metadata-token-ttl-seconds: 60'), { token: undefined }],
  [h('GET / HTTP/1.1\r\nx-aws-ec2-metadata-toke: a'), { token: undefined }],
  [h('GET / HTTP/1.1\r\nx-aws-ec2-metadata-token : a'), 'handover'],
  [h('GET / HTTP/1.1\r\nX-aws-ec2-metadata-token: a\r\nTransfer-Encoding: chunked'), 'handover'],
  // where the head ends: MAX_FAST_HEAD, pipelined requests, pieces
  [sized(MAX), 'ok'],
  [sized(MAX + 1), 'handover'],
  [sized(MAX - 1), 'ok'],
  [sized(MAX).slice(0, MAX), 'incomplete'],
  [sized(MAX).slice(0, MAX + 1), 'incomplete'],
  [sized(MAX).slice(0, MAX + 2), 'incomplete'],
  [sized(MAX).slice(0, MAX + 3), 'incomplete'],
  [sized(MAX + 1).slice(0, MAX), 'incomplete'],
  [sized(MAX + 1).slice(0, MAX + 1), 'handover'],
  [sized(MAX + 1).slice(0, MAX + 2), 'handover'],
  [`${sized(MAX).slice(0, MAX)}\r\n\rx`, 'handover'],
  [`${pad(MAX)}\r\n\r`, 'incomplete'],
  [`${pad(MAX + 1)}\r\n\r`, 'handover'],
  [`${pad(MAX + 1)}\r\n\r\n`, 'handover'],
  [pad(MAX), 'incomplete'],
  [pad(MAX + 1), 'handover'],
  [pad(100_000), 'handover'],
  [`${h('GET /a HTTP/1.1')}GET /b HTTP/1.1\r\n\r\n`, { target: '/a' }],
  [`${h('GET /a HTTP/1.1')}POST`, { target: '/a' }],
  [`GET / HTTP/1.1\r\nA: b\r\n\r\n\r\n`, 'ok'],
  [`GET / HTTP/1.1\r\n\r\n\r\n`, 'ok'],
  ['', 'incomplete'],
  ['G', 'incomplete'],
  ['GET / HTTP/1.1', 'incomplete'],
  ['GET / HTTP/1.1\r', 'incomplete'],
  ['GET / HTTP/1.1\r\n', 'incomplete'],
  ['GET / HTTP/1.1\r\n\r', 'incomplete'],
  ['GET / HTTP/1.1\r\nHost: x\r\n', 'incomplete'],
  ['POST / HTTP/1.1\r\n', 'incomplete'],
  ['\r\n\r\n', 'handover'],
];

describe('C request reader (native/http_head.c) against the JS fast path', () => {
  it('reads MAX_FAST_HEAD as 8192 in src/server/fast-path.ts', () => {
    const source = readFileSync(new URL('../../src/server/fast-path.ts', import.meta.url), 'utf8');
    assert.match(source, /\nconst MAX_FAST_HEAD = 8192;\n/);
  });

  it('agrees on each hand-written head, and each is what the table says', () => {
    for (const [head, expected] of CASES) {
      const buf = latin1(head);
      const want = reference(buf);
      const label = JSON.stringify(head.length > 120 ? `${head.slice(0, 60)}…(${head.length})…${head.slice(-40)}` : head);
      assert.deepEqual(native(buf), want, label);
      if (typeof expected === 'string') {
        assert.equal(want.status, expected, label);
        continue;
      }
      assert.equal(want.status, 'ok', label);
      if (want.status !== 'ok') continue;
      for (const [key, value] of Object.entries(expected)) assert.deepEqual(want[key as keyof typeof want], value, `${label}: ${key}`);
    }
  });

  it('gives incomplete for every piece of a head, then what it gives whole', () => {
    for (const [head] of CASES) {
      const buf = latin1(head);
      const whole = native(buf);
      const step = buf.length > 300 ? 97 : 1;
      for (let n = 0; n < buf.length; n += step) {
        const piece = native(buf.subarray(0, n));
        if (piece.status !== 'incomplete') assert.deepEqual(piece, whole, `${JSON.stringify(head.slice(0, 80))} cut at ${n}`);
      }
    }
  });

  it('throws a TypeError on anything but a Buffer', () => {
    assert.throws(() => requireAddon().parseHttpHead('GET / HTTP/1.1\r\n\r\n' as unknown as Buffer), TypeError);
  });

  it('agrees on 20,000 heads mutated from the table (seeded; bytes 0-255)', () => {
    const rand = mulberry32(0x16c0ffee);
    const pick = <T>(a: readonly T[]): T => a[Math.floor(rand() * a.length)] as T;
    const seeds = CASES.map(([head]) => latin1(head)).filter((b) => b.length < 2 * MAX);
    const taken = seeds.filter((b) => reference(b).status === 'ok');
    let ok = 0;
    for (let i = 0; i < 20_000; i++) {
      const buf = mutate(pick(rand() < 0.7 ? taken : seeds), rand, pick);
      const label = `#${i} ${JSON.stringify(buf.toString('latin1').slice(0, 200))}`;
      const want = reference(buf);
      if (want.status === 'ok') ok++;
      assert.deepEqual(native(buf), want, label);
      const cut = buf.subarray(0, Math.floor(rand() * (buf.length + 1)));
      assert.deepEqual(native(cut), reference(cut), `${label} cut at ${cut.length}`);
    }
    // The mutations keep enough heads on the fast path for the comparison to mean something.
    assert.ok(ok > 3000, `only ${ok} of 20,000 were taken`);
  });
});

/** A small seeded PRNG (mulberry32): the same heads on every run. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PIECES = [
  '\r\n',
  '\r',
  '\n',
  ' ',
  '\t',
  ':',
  ',',
  '\xa0',
  '\x0b',
  '\x85',
  '\xc0',
  '\xde',
  '\xff',
  '\x00',
  '0',
  '/',
  '\r\n\r\n',
  'GET ',
  'HEAD ',
  ' HTTP/1.0',
  ' HTTP/1.1',
  'close',
  'keep-alive',
  'CLOSE',
  'Keep-Alive',
  '\r\nContent-Length: 0',
  '\r\nContent-Length: 1',
  '\r\nConnection: close',
  '\r\nConnection: keep-alive',
  '\r\nX-aws-ec2-metadata-token: ',
  '\r\nx-aws-ec2-metadata-token:',
  '\r\nTransfer-Encoding: chunked',
  '\r\nUpgrade: x',
  '\r\nExpect: 100-continue',
  '\r\nHost: 169.254.169.254',
  '\r\n:',
  '\r\n ',
];

/** One to four edits: a byte changed, inserted or removed; a piece inserted; a stretch repeated or cut; case flipped. */
function mutate(seed: Buffer, rand: () => number, pick: <T>(a: readonly T[]) => T): Buffer {
  let b = Buffer.from(seed);
  const at = (): number => Math.floor(rand() * (b.length + 1));
  for (let n = rand() < 0.6 ? 1 : 2 + Math.floor(rand() * 3); n > 0; n--) {
    const i = at();
    switch (Math.floor(rand() * 8)) {
      case 0:
        if (i < b.length) b[i] = Math.floor(rand() * 256);
        break;
      case 1:
        b = Buffer.concat([b.subarray(0, i), Buffer.from([Math.floor(rand() * 256)]), b.subarray(i)]);
        break;
      case 2:
        b = Buffer.concat([b.subarray(0, i), b.subarray(i + 1 + Math.floor(rand() * 3))]);
        break;
      case 3:
      case 4:
        b = Buffer.concat([b.subarray(0, i), latin1(pick(PIECES)), b.subarray(i)]);
        break;
      case 5: {
        const j = Math.min(b.length, i + Math.floor(rand() * 40));
        b = Buffer.concat([b.subarray(0, j), b.subarray(i, j), b.subarray(j)]);
        break;
      }
      case 6:
        b = b.subarray(0, Math.max(i, b.length - Math.floor(rand() * 6)));
        break;
      default:
        if (i < b.length) b[i] = (b[i] as number) ^ 0x20;
    }
  }
  return b;
}
