import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isImdsError } from '../../src/errors.ts';
import { networkSchema, vmSchema } from '../../src/model/schema.ts';
import { RateLimiter, type RateLimitOptions } from '../../src/security/rate-limit.ts';
import type { CallerLimiter } from '../../src/server/guest-guard.ts';
import { TokenKeys, tokenKeyPath } from '../../src/security/tokens.ts';
import { LoopbackApp } from '../helpers/loopback-app.ts';

/** The token with one signature character changed (always a change: its tail may already be `A`s). */
const withBadSignature = (t: string): string => `${t.slice(0, -5)}${t.at(-5) === 'A' ? 'B' : 'A'}${t.slice(-4)}`;

/**
 * The limiter on a clock the test moves. `RateLimiter.take(key, nowMs)` takes the time as an
 * argument; the guard (`admit`) calls `take(network, source)` and the daemon's limiter reads
 * `performance.now()`, so this one supplies the time instead: the requests on the wire then see
 * exact bucket arithmetic, whatever the machine's load.
 */
class ClockedLimiter implements CallerLimiter {
  now = 0;
  private readonly limiter: RateLimiter;
  constructor(options: RateLimitOptions) {
    this.limiter = new RateLimiter(options);
  }
  take(network: string, source: string): number {
    return this.limiter.take(`${network}|${source}`, this.now);
  }
}

const VM = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const OTHER = '2c5f39cb-3fb2-42e3-994f-1127e4ddb538';

describe('session tokens', () => {
  it('are valid for the VM and network they were issued to, and nothing else', () => {
    const keys = TokenKeys.ephemeral();
    const t = keys.issue('net1', VM, 60, 1_000_000);
    assert.match(t, /^[A-Za-z0-9_-]{50}$/);
    assert.equal(keys.check(t, 'net1', VM, 1_000_000), 'valid');
    assert.equal(keys.check(t, 'net1', VM.toUpperCase(), 1_000_000), 'valid');
    assert.equal(keys.check(t, 'net1', OTHER, 1_000_000), 'invalid');
    assert.equal(keys.check(t, 'net2', VM, 1_000_000), 'invalid');
    assert.equal(keys.check(t, 'net1', VM, 1_060_000), 'expired');
    // It lives at least its TTL whenever in a second it was issued, and at most a second more.
    const late = keys.issue('net1', VM, 1, 1_000_999);
    assert.equal(keys.check(late, 'net1', VM, 1_001_998), 'valid', 'a 1 s token issued at x.999 s is valid 999 ms later');
    assert.equal(keys.check(late, 'net1', VM, 1_002_000), 'expired');
    const early = keys.issue('net1', VM, 1, 1_000_000);
    assert.equal(keys.check(early, 'net1', VM, 1_000_999), 'valid');
    assert.equal(keys.check(early, 'net1', VM, 1_001_000), 'expired');
    assert.equal(TokenKeys.ephemeral().check(t, 'net1', VM, 1_000_000), 'invalid', 'another key');
    const tampered = Buffer.from(t, 'base64url');
    tampered.writeUInt32BE(tampered.readUInt32BE(1) + 3600, 1);
    assert.equal(keys.check(tampered.toString('base64url'), 'net1', VM, 1_000_000), 'invalid', 'a later expiry breaks the MAC');
    for (const junk of ['', 'x', `${t}A`, `${t.slice(0, -1)}=`, 'A'.repeat(5000)])
      assert.equal(keys.check(junk, 'net1', VM), 'invalid', junk.slice(0, 20));
  });

  it('keep their key in the state directory (0600), survive a reload, and all die on rotation', () => {
    const dir = mkdtempSync(join(tmpdir(), 'imds-tokens-'));
    try {
      const keys = TokenKeys.load(dir);
      assert.equal(statSync(tokenKeyPath(dir)).mode & 0o777, 0o600);
      const t = keys.issue('net1', VM, 600);
      assert.equal(TokenKeys.load(dir).check(t, 'net1', VM), 'valid', 'a restarted daemon accepts it');
      const before = readFileSync(tokenKeyPath(dir));
      keys.rotate();
      assert.notDeepEqual(readFileSync(tokenKeyPath(dir)), before);
      assert.equal(keys.check(t, 'net1', VM), 'invalid');
      assert.equal(TokenKeys.load(dir).check(keys.issue('net1', VM, 600), 'net1', VM), 'valid', 'the rotated key is the persisted one');
      writeFileSync(tokenKeyPath(dir), 'short');
      assert.throws(
        () => TokenKeys.load(dir),
        (e) => isImdsError(e, 'STORE_FAILED') && /token\.key is 5 bytes/.test(e.message),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('rate limiter', () => {
  it('lets a burst through, then one request per 1/rate seconds, and says when to come back', () => {
    const r = new RateLimiter({ perSecond: 10, burst: 3 });
    assert.deepEqual(
      [0, 0, 0].map(() => r.take('a', 0)),
      [0, 0, 0],
    );
    assert.equal(r.take('a', 0), 1);
    assert.equal(r.take('b', 0), 0, 'buckets are per caller');
    assert.equal(r.take('a', 100), 0, 'refilled one after 100 ms');
    assert.equal(r.take('a', 100), 1);
    const slow = new RateLimiter({ perSecond: 0.1, burst: 1 });
    slow.take('a', 0);
    assert.equal(slow.take('a', 0), 10);
  });

  it('refills at exactly perSecond, caps at the burst, and a refused request costs nothing', () => {
    const r = new RateLimiter({ perSecond: 1, burst: 5 });
    assert.deepEqual(
      [0, 1, 2, 3, 4].map(() => r.take('a', 0)),
      [0, 0, 0, 0, 0],
      'the burst',
    );
    assert.equal(r.take('a', 0), 1, 'spent: come back in 1 s');
    assert.equal(r.take('a', 999), 1, '0.999 of a token after 999 ms: still refused');
    assert.equal(r.take('a', 1000), 0, 'one token after 1 s, although two requests were refused meanwhile');
    assert.equal(r.take('a', 1000), 1);
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5].map(() => r.take('a', 1_000_000)),
      [0, 0, 0, 0, 0, 1],
      'a long pause refills the burst, no more',
    );
    // Retry-After is the whole seconds until the next token, at least 1.
    const quarter = new RateLimiter({ perSecond: 0.25, burst: 1 });
    assert.equal(quarter.take('a', 0), 0);
    assert.equal(quarter.take('a', 0), 4);
    assert.equal(quarter.take('a', 1000), 3, '0.25 of a token: 3 s to go');
    assert.equal(quarter.take('a', 2500), 2, '0.625: 1.5 s to go, rounded up');
    assert.equal(quarter.take('a', 3999), 1);
    assert.equal(quarter.take('a', 4000), 0);
    const fast = new RateLimiter({ perSecond: 1000, burst: 1 });
    fast.take('a', 0);
    assert.equal(fast.take('a', 0), 1, 'a wait under a second is still Retry-After: 1');
    assert.equal(fast.take('a', 1), 0, 'one token a millisecond');
  });

  it('bounds its memory by dropping idle buckets first', () => {
    const r = new RateLimiter({ perSecond: 1, burst: 2, maxBuckets: 100 });
    for (let i = 0; i < 1000; i++) r.take(`k${i}`, i * 10_000);
    assert.ok(r.size <= 100, String(r.size));
  });
});

for (const fast of [false, true]) {
  describe(`IMDSv2 on the wire (${fast ? 'fast path' : 'Fastify app'})`, () => {
    const app = new LoopbackApp();
    const start = async (extra: Record<string, unknown>) => {
      await app.start(
        [networkSchema.parse({ id: 'net1', cidr: '127.0.0.0/8', service_ip: '127.0.0.2' })],
        [
          vmSchema.parse({
            id: VM,
            network: 'net1',
            ip: '127.0.0.1',
            mac: '52:54:00:12:34:56',
            hostname: 'vm1',
            user_data: 'hello',
            ...extra,
          }),
        ],
        'net1',
        { fast },
      );
    };
    const put = (headers: Record<string, string>, path = '/latest/api/token') => app.fetch(path, { method: 'PUT', headers });
    after(() => app.stop());

    it('issues a token for 1..21600 s that serves the EC2 tree; missing, bad or forwarded requests are refused', async () => {
      await start({});
      const r = await put({ 'x-aws-ec2-metadata-token-ttl-seconds': '21600' });
      assert.equal(r.status, 200);
      assert.equal(r.headers['x-aws-ec2-metadata-token-ttl-seconds'], '21600');
      const token = r.body.toString();
      assert.equal(app.guard.tokens.check(token, 'net1', VM), 'valid');
      assert.equal((await app.fetch('/latest/meta-data/instance-id', { headers: { 'x-aws-ec2-metadata-token': token } })).status, 200);
      assert.equal(
        (await app.fetch('/latest/meta-data/instance-id', { headers: { 'x-aws-ec2-metadata-token': withBadSignature(token) } })).status,
        401,
      );
      assert.equal(
        (await app.fetch('/openstack/latest/meta_data.json', { headers: { 'x-aws-ec2-metadata-token': 'junk' } })).status,
        401,
        'a bad token is refused anywhere',
      );
      assert.equal((await app.fetch('/latest/meta-data/instance-id')).status, 200, 'optional: token-less is fine');
      for (const ttl of [undefined, '0', '21601', '-1', '1.5', 'abc']) {
        assert.equal((await put(ttl === undefined ? {} : { 'x-aws-ec2-metadata-token-ttl-seconds': ttl })).status, 400, `ttl ${ttl}`);
      }
      assert.equal((await put({ 'x-aws-ec2-metadata-token-ttl-seconds': '60', 'x-forwarded-for': '10.0.0.1' })).status, 403);
      assert.equal((await put({ 'x-aws-ec2-metadata-token-ttl-seconds': '60' }, '/2021-01-03/api/token')).status, 403);
      assert.equal((await put({ 'x-aws-ec2-metadata-token-ttl-seconds': '60' }, '/latest/meta-data/')).status, 405);
      assert.equal((await put({}, '/openstack/latest/password')).status, 400, 'the password answers 400 to PUT, as Nova');
      const stats = app.guard.stats;
      assert.ok((stats?.rejections.get('net1')?.get('token_ttl') ?? 0) >= 6);
      assert.equal(stats?.rejections.get('net1')?.get('token_forwarded'), 1);
      assert.ok((stats?.noTokens.get('net1')?.get(VM) ?? 0) >= 1);
      await app.stop();
    });

    it('http_tokens required: the EC2 tree needs a token, the OpenStack tree and / do not', async () => {
      await start({ http_tokens: 'required' });
      assert.equal((await app.fetch('/latest/meta-data/instance-id')).status, 401);
      assert.equal((await app.fetch('/2009-04-04/user-data')).status, 401);
      assert.equal((await app.fetch('/openstack/latest/meta_data.json')).status, 200);
      assert.equal((await app.fetch('/')).status, 200);
      const token = (await put({ 'x-aws-ec2-metadata-token-ttl-seconds': '5' })).body.toString();
      const r = await app.fetch('/latest/user-data', { headers: { 'x-aws-ec2-metadata-token': token } });
      assert.equal(r.status, 200);
      assert.equal(r.body.toString(), 'hello');
      await app.stop();
    });

    it('http_endpoint disabled: 403 for everything', async () => {
      await start({ http_endpoint: 'disabled' });
      for (const path of ['/', '/openstack/latest/meta_data.json', '/latest/meta-data/'])
        assert.equal((await app.fetch(path)).status, 403, path);
      assert.equal((await put({ 'x-aws-ec2-metadata-token-ttl-seconds': '5' })).status, 403);
      await app.stop();
    });

    it('rate limit: 429 with Retry-After past the burst, on a clock the test moves', async () => {
      const limiter = new ClockedLimiter({ perSecond: 1, burst: 5 });
      app.guard = { ...app.guard, limiter };
      await start({});
      const refusedBefore = app.guard.stats?.rejections.get('net1')?.get('rate_limited') ?? 0;
      const fetch = async (): Promise<[number, string | string[] | undefined]> => {
        const r = await app.fetch('/openstack/latest/meta_data.json');
        return [r.status, r.headers['retry-after']];
      };
      const burst: [number, string | string[] | undefined][] = [];
      for (let i = 0; i < 8; i++) burst.push(await fetch());
      assert.deepEqual(
        burst,
        [
          [200, undefined],
          [200, undefined],
          [200, undefined],
          [200, undefined],
          [200, undefined],
          [429, '1'],
          [429, '1'],
          [429, '1'],
        ],
        'five (the burst), then 429 with Retry-After: 1',
      );
      limiter.now = 999;
      assert.deepEqual(await fetch(), [429, '1'], 'not yet a token after 999 ms');
      limiter.now = 1000;
      assert.deepEqual(await fetch(), [200, undefined], 'one token after 1 s');
      assert.deepEqual(await fetch(), [429, '1']);
      // A slower rate: the header carries the computed wait, not a constant.
      const slow = new ClockedLimiter({ perSecond: 0.25, burst: 1 });
      app.guard.limiter = slow;
      assert.deepEqual(await fetch(), [200, undefined]);
      assert.deepEqual(await fetch(), [429, '4']);
      slow.now = 2500;
      assert.deepEqual(await fetch(), [429, '2'], '0.625 of a token: 1.5 s to go, rounded up');
      assert.equal((app.guard.stats?.rejections.get('net1')?.get('rate_limited') ?? 0) - refusedBefore, 7, 'every 429 counted');
      app.guard = { ...app.guard, limiter: undefined };
    });
  });
}
