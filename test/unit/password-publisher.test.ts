// The publisher of guests' posted passwords to the registry: retried while etcd refuses, ended by the
// registry's own answer (already set, VM gone) or by the operator's clear (cancel). Pure timing with
// short retry delays; the etcd write is a function the test controls.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { ImdsError } from '../../src/errors.ts';
import { PasswordPublisher } from '../../src/registry/password-publisher.ts';
import { until } from '../helpers/wait.ts';

const log = pino({ level: 'silent' });

function setup(answers: (() => Promise<unknown>)[]) {
  const calls: string[] = [];
  const publisher = new PasswordPublisher({
    publish: (vmId, value) => {
      calls.push(`${vmId}=${value}`);
      const next = answers.shift();
      return next === undefined ? Promise.resolve() : next();
    },
    log,
    retryMs: { first: 2, max: 8 },
  });
  return { publisher, calls };
}

const unavailable = () => Promise.reject(new ImdsError('REGISTRY_UNAVAILABLE', 'etcd down'));

describe('password publisher', () => {
  it('publishes at once, and retries while the registry is unavailable until it is published', async () => {
    const { publisher, calls } = setup([unavailable, unavailable, unavailable]);
    publisher.post('a', 'pw');
    assert.equal(publisher.isPending('a'), true);
    await until('published', () => (publisher.isPending('a') ? undefined : true), 2000);
    assert.deepEqual(calls, ['a=pw', 'a=pw', 'a=pw', 'a=pw']);
    publisher.close();
  });

  it('stops when the registry holds a password already, or the VM left it', async () => {
    const { publisher, calls } = setup([
      () => Promise.reject(new ImdsError('ALREADY_EXISTS', 'set')),
      () => Promise.reject(new ImdsError('NOT_FOUND', 'gone')),
    ]);
    publisher.post('a', 'pw');
    publisher.post('b', 'pw');
    await until('both ended', () => (publisher.size === 0 ? true : undefined), 2000);
    await new Promise((r) => setTimeout(r, 30));
    assert.deepEqual(calls, ['a=pw', 'b=pw'], 'no retry after either answer');
  });

  it('drops a password the operator cleared meanwhile, and publishes nothing after close', async () => {
    const { publisher, calls } = setup(Array.from({ length: 100 }, () => unavailable)); // etcd stays down
    publisher.post('a', 'pw');
    await until('retried once', () => (calls.length >= 2 ? true : undefined), 2000);
    assert.equal(publisher.cancel('a'), true);
    assert.equal(publisher.isPending('a'), false);
    assert.equal(publisher.cancel('a'), false, 'nothing waits any more');
    const seen = calls.length;
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(calls.length, seen);
    publisher.post('b', 'x');
    publisher.close();
    publisher.post('c', 'y');
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(publisher.size, 0);
    assert.ok(!calls.includes('c=y'));
  });

  it('keeps publishing whatever the VM does on this host meanwhile (migrated away: the password moves with it)', async () => {
    const { publisher, calls } = setup([unavailable, unavailable, unavailable]);
    publisher.post('a', 'pw'); // the placement then drops the VM here: nothing tells the publisher but a clear
    await until('published', () => (publisher.isPending('a') ? undefined : true), 2000);
    assert.deepEqual(calls, ['a=pw', 'a=pw', 'a=pw', 'a=pw']);
  });
});
