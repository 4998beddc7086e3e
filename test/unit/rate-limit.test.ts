// The per-caller rate limiter's state as doctor reads it (peek: tokens left and requests refused,
// nothing taken), in the JS limiter and in the native data plane's (the addon's buckets).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { requireAddon } from '../../src/netns/addon.ts';
import { callerLimiter, RateLimiter } from '../../src/security/rate-limit.ts';

describe('rate limiter state', () => {
  it('JS: peek shows tokens left (refilled to now) and refusals, and takes nothing', () => {
    const limiter = new RateLimiter({ perSecond: 2, burst: 3 });
    assert.equal(limiter.peek('net1|a', 0), undefined, 'no bucket before the first request');
    for (let i = 0; i < 3; i++) assert.equal(limiter.take('net1|a', 0), 0);
    assert.equal(limiter.take('net1|a', 0), 1);
    assert.equal(limiter.take('net1|a', 0), 1);
    assert.deepEqual(limiter.peek('net1|a', 0), { tokens: 0, refused: 2 });
    assert.deepEqual(limiter.peek('net1|a', 250), { tokens: 0.5, refused: 2 }, 'refilled to now');
    assert.deepEqual(limiter.peek('net1|a', 250), { tokens: 0.5, refused: 2 }, 'a peek takes nothing');
    assert.deepEqual(limiter.peek('net1|a', 10_000), { tokens: 3, refused: 2 }, 'never past the burst');
    const caller = callerLimiter(new RateLimiter({ perSecond: 1, burst: 1 }));
    caller.take('net1', '198.51.100.10');
    caller.take('net1', '198.51.100.10');
    assert.equal(caller.peek('net1', '198.51.100.10')?.refused, 1);
    assert.equal(caller.peek('net2', '198.51.100.10'), undefined, 'one bucket per (network, address)');
  });

  it('native: dpRatePeek reads the loop’s bucket of a caller without taking from it', () => {
    const addon = requireAddon();
    addon.dpRateLimit(1, 2, 1000);
    const ip = 0xc6336415; // 198.51.100.21
    assert.equal(addon.dpRatePeek(7, ip), undefined);
    assert.equal(addon.dpRateTake(7, ip), 0);
    assert.equal(addon.dpRateTake(7, ip), 0);
    assert.ok(addon.dpRateTake(7, ip) >= 1);
    const state = addon.dpRatePeek(7, ip);
    assert.ok(state !== undefined && state.tokens < 1 && state.refused === 1, JSON.stringify(state));
    assert.equal(addon.dpRatePeek(7, ip)?.refused, 1, 'a peek refuses nothing');
    assert.equal(addon.dpRatePeek(8, ip), undefined, 'per network slot');
    addon.dpRateLimit(0, 0, 1000);
    assert.equal(addon.dpRatePeek(7, ip), undefined, 'no limit: no state');
  });
});
