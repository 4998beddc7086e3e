// The registry's etcd client (src/registry/etcd-client.ts) against a real 3-member etcd cluster,
// as root: the members run in a sandbox's hypervisor namespace on 127.0.0.1..3, and this test
// process moves its main thread into that namespace (the native addon's enterNetns) so that the
// client's sockets open there; it moves back before cleanup. The client is loaded from dist/ (the
// build), which proves the embedded protos ship with it: run `npm run build` first.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, before, describe, it } from 'node:test';
import type * as NativeAddon from 'imds-netns';
import type { EtcdClient as EtcdClientType, EtcdClientOptions } from '../../src/registry/etcd-client.ts';
import type { WatchEvent } from '../../src/registry/etcd-api.ts';
import { EtcdCluster } from '../helpers/etcd-cluster.ts';
import { Sandbox, sleep } from '../helpers/sandbox.ts';
import { until } from '../helpers/wait.ts';

const addon = createRequire(import.meta.url)('imds-netns') as typeof NativeAddon;
const { EtcdClient } = (await import(new URL('../../dist/registry/etcd-client.js', import.meta.url).href)) as {
  EtcdClient: new (options: EtcdClientOptions) => EtcdClientType;
};

/** What a watch handed over, for assertions. */
class Recorder {
  readonly events: WatchEvent[] = [];
  readonly connections: { up: boolean; reason?: string }[] = [];
  readonly compactions: number[] = [];
  readonly handlers = {
    events: (events: WatchEvent[]): void => void this.events.push(...events),
    compacted: (rev: number): void => void this.compactions.push(rev),
    connection: (up: boolean, reason?: string): void => void this.connections.push({ up, ...(reason === undefined ? {} : { reason }) }),
  };
  keys(): string[] {
    return this.events.map((e) => (e.type === 'put' ? e.kv.key : e.key));
  }
  revisions(): number[] {
    return this.events.map((e) => (e.type === 'put' ? e.kv.modRevision : e.modRevision));
  }
}

function assertExactlyOnce(keys: readonly string[], expected: readonly string[]): void {
  const counts = new Map<string, number>();
  for (const k of keys) counts.set(k, (counts.get(k) ?? 0) + 1);
  const missing = expected.filter((k) => !counts.has(k));
  const doubled = [...counts].filter(([, n]) => n > 1).map(([k]) => k);
  assert.deepEqual({ missing, doubled, total: keys.length }, { missing: [], doubled: [], total: expected.length });
}

function assertIncreasing(revisions: readonly number[]): void {
  for (let i = 1; i < revisions.length; i++) {
    assert.ok((revisions[i] as number) > (revisions[i - 1] as number), `revision ${revisions[i]} after ${revisions[i - 1]} at ${i}`);
  }
}

/** A create-only put that is retried until etcd answers (a retry that finds the key means the first went through). */
async function putUntilAcknowledged(client: EtcdClientType, key: string, value: string): Promise<void> {
  for (;;) {
    try {
      await client.txn([{ key, absent: true }], [{ put: key, value }]);
      return;
    } catch (err) {
      if ((err as { code?: string }).code !== 'REGISTRY_UNAVAILABLE') throw err;
      await sleep(50);
    }
  }
}

/** A sandbox with an etcd cluster in its hypervisor namespace, this thread inside that namespace. */
function useCluster(tls: boolean): () => { sb: Sandbox; cluster: EtcdCluster } {
  let sb: Sandbox | undefined;
  let cluster: EtcdCluster | undefined;
  let saved: number | undefined;
  before(async () => {
    sb = new Sandbox();
    await sb.setup();
    cluster = await EtcdCluster.start({ netns: sb.hv, tls });
    saved = addon.enterNetns(`/run/netns/${sb.hv}`);
  });
  after(async () => {
    try {
      if (saved !== undefined) addon.restoreNetns(saved);
      await cluster?.cleanup();
    } finally {
      await sb?.cleanup();
    }
  });
  return () => {
    if (sb === undefined || cluster === undefined) throw new Error('cluster not started');
    return { sb, cluster };
  };
}

describe('etcd client against a 3-member cluster', () => {
  const env = useCluster(false);
  let client: EtcdClientType;
  before(() => {
    client = new EtcdClient({ endpoints: env().cluster.endpoints, callTimeoutMs: 3000 });
  });
  after(() => client.close());

  it('a create-only transaction succeeds once; the second leaves the value alone', async () => {
    const first = await client.txn([{ key: '/t/create/a', absent: true }], [{ put: '/t/create/a', value: 'one' }]);
    const second = await client.txn([{ key: '/t/create/a', absent: true }], [{ put: '/t/create/a', value: 'two' }]);
    assert.deepEqual([first.succeeded, second.succeeded], [true, false]);
    assert.equal((await client.get('/t/create/a'))?.value, 'one');
    assert.equal(await client.get('/t/create/none'), undefined);
  });

  it('a mod-revision compare succeeds on the revision read and fails on a stale one', async () => {
    await client.txn([], [{ put: '/t/mod/a', value: 'v1' }]);
    const read = await client.get('/t/mod/a');
    assert.ok(read !== undefined);
    const update = await client.txn([{ key: '/t/mod/a', modRevision: read.modRevision }], [{ put: '/t/mod/a', value: 'v2' }]);
    const stale = await client.txn([{ key: '/t/mod/a', modRevision: read.modRevision }], [{ put: '/t/mod/a', value: 'v3' }]);
    assert.deepEqual([update.succeeded, stale.succeeded], [true, false]);
    const now = await client.get('/t/mod/a');
    assert.deepEqual([now?.value, now?.modRevision, now?.createRevision], ['v2', update.revision, read.createRevision]);
    const removed = await client.txn([{ key: '/t/mod/a', modRevision: update.revision }], [{ delete: '/t/mod/a' }]);
    assert.equal(removed.succeeded, true);
    assert.equal(await client.get('/t/mod/a'), undefined);
  });

  it('a prefix compare holds while no key under the prefix was created or changed since a revision, and for an empty prefix', async () => {
    const empty = await client.txn([{ key: '/t/pfx-none/', prefix: true, unchangedSince: 1 }], [{ put: '/t/pfx-mark', value: '0' }]);
    assert.equal(empty.succeeded, true, 'no key under the prefix: holds');
    await client.txn([], [{ put: '/t/pfx/a', value: '1' }]);
    const read = (await client.rangePrefix('/t/pfx/')).revision;
    const guard = { key: '/t/pfx/', prefix: true as const, unchangedSince: read };
    await client.txn([], [{ put: '/t/pfx0', value: 'outside the prefix' }]);
    assert.equal((await client.txn([guard], [{ put: '/t/pfx-mark', value: '1' }])).succeeded, true, 'a write outside the prefix: holds');
    await client.txn([], [{ put: '/t/pfx/b', value: 'created' }]);
    assert.equal((await client.txn([guard], [{ put: '/t/pfx-mark', value: '2' }])).succeeded, false, 'a key created under it: fails');
    const again = (await client.rangePrefix('/t/pfx/')).revision;
    await client.txn([], [{ put: '/t/pfx/a', value: 'changed' }]);
    assert.equal(
      (await client.txn([{ ...guard, unchangedSince: again }], [{ put: '/t/pfx-mark', value: '3' }])).succeeded,
      false,
      'a key changed: fails',
    );
    assert.equal((await client.get('/t/pfx-mark'))?.value, '1');
  });

  it('rangePrefix reads 2,000 keys (more than 4 MiB, the default gRPC message limit) whole, at one revision', async () => {
    const value = 'x'.repeat(2200);
    let last = 0;
    for (let b = 0; b < 20; b++) {
      const ops = Array.from({ length: 100 }, (_, k) => ({ put: `/t/big/${String(b * 100 + k).padStart(5, '0')}`, value }));
      last = (await client.txn([], ops)).revision;
    }
    await client.txn([], [{ put: '/t/big0', value: 'outside the prefix' }]);
    for (const pageSize of [1000, 333]) {
      const paged = new EtcdClient({ endpoints: env().cluster.endpoints, pageSize });
      try {
        const { kvs, revision } = await paged.rangePrefix('/t/big/');
        assert.equal(kvs.length, 2000);
        assert.ok(kvs.reduce((n, kv) => n + kv.value.length, 0) > 4 << 20);
        assert.deepEqual(
          kvs.map((kv) => kv.key),
          Array.from({ length: 2000 }, (_, i) => `/t/big/${String(i).padStart(5, '0')}`),
        );
        assert.ok(revision > last, `revision ${revision} after the last write ${last}`);
      } finally {
        await paged.close();
      }
    }
  });

  it('a watch delivers in order and resumes, nothing lost or doubled, across the leader SIGKILLed and restarted', async () => {
    const { cluster } = env();
    const start = (await client.txn([], [{ put: '/t/marker', value: 'start' }])).revision + 1;
    // The watch and the writes start on the leader, so that killing it drops the watch stream.
    const leader = await cluster.leader();
    const endpoints = cluster.endpoints;
    const onLeader = new EtcdClient({ endpoints: [endpoints[leader - 1] as string, ...endpoints.filter((_, i) => i !== leader - 1)] });
    const rec = new Recorder();
    const watch = onLeader.watchPrefix('/t/w/', start, rec.handlers);
    const keys = Array.from({ length: 600 }, (_, i) => `/t/w/${String(i).padStart(4, '0')}`);
    try {
      const writes = (async (): Promise<void> => {
        for (const k of keys) await putUntilAcknowledged(onLeader, k, k);
      })();
      await until('200 events', () => (rec.events.length >= 200 ? true : undefined), 30_000);
      await cluster.killMember(leader);
      await until('400 events with the leader down', () => (rec.events.length >= 400 ? true : undefined), 60_000);
      cluster.startMember(leader);
      await writes;
      await until('every key watched', () => (rec.events.length >= keys.length ? true : undefined), 30_000);
      await cluster.waitHealthy();
      await sleep(300); // a doubled event would arrive now
      assertExactlyOnce(rec.keys(), keys);
      assertIncreasing(rec.revisions());
      assert.ok(rec.events.every((e) => e.type === 'put' && e.kv.value === e.kv.key));
      assert.deepEqual(rec.connections[0], { up: true }, 'the watch was created');
    } finally {
      watch.close();
      await onLeader.close();
    }
  });

  it('a stream dropped during a catch-up of 3,000 revisions resumes after the last event delivered, not the header revision', async () => {
    const { cluster } = env();
    const start = (await client.txn([], [{ put: '/t/marker', value: 'catch-up' }])).revision + 1;
    const keys = Array.from({ length: 3000 }, (_, i) => `/t/cu/${String(i).padStart(4, '0')}`);
    for (const k of keys) await client.txn([], [{ put: k, value: k }]);
    const victim = 1 + ((await cluster.leader()) % cluster.size); // a follower: the writes above are done
    const endpoints = cluster.endpoints;
    const onVictim = new EtcdClient({ endpoints: [endpoints[victim - 1] as string, ...endpoints.filter((_, i) => i !== victim - 1)] });
    const rec = new Recorder();
    let firstBatch = 0;
    let killed: Promise<void> | undefined;
    const watch = onVictim.watchPrefix('/t/cu/', start, {
      ...rec.handlers,
      events: (events) => {
        rec.events.push(...events);
        if (killed === undefined) {
          firstBatch = events.length;
          killed = cluster.killMember(victim); // etcd sends a catch-up in batches of at most 1,000 revisions
        }
      },
    });
    try {
      await until('the first batch', () => (killed === undefined ? undefined : true), 30_000);
      await killed;
      // A key written after the kill: once it is seen, everything before it has been delivered (or lost).
      await putUntilAcknowledged(client, '/t/cu/~end', 'end');
      await until('the key written after the kill', () => (rec.keys().includes('/t/cu/~end') ? true : undefined), 60_000);
      await sleep(300);
      assert.ok(firstBatch < keys.length, `the catch-up came in batches (first: ${firstBatch})`);
      assertExactlyOnce(rec.keys(), [...keys, '/t/cu/~end']);
      assertIncreasing(rec.revisions());
    } finally {
      watch.close();
      await onVictim.close();
      cluster.startMember(victim);
      await cluster.waitHealthy();
    }
  });

  it('all members down: calls fail with REGISTRY_UNAVAILABLE, connection(false); back: connection(true) and the watch catches up', async () => {
    const { cluster } = env();
    const start = (await client.txn([], [{ put: '/t/marker', value: 'outage' }])).revision + 1;
    const rec = new Recorder();
    const watch = client.watchPrefix('/t/o/', start, rec.handlers);
    try {
      await client.txn([], [{ put: '/t/o/before', value: '1' }]);
      await until('the watch up', () => (rec.connections.at(-1)?.up === true && rec.events.length === 1 ? true : undefined), 10_000);
      for (let i = 1; i <= cluster.size; i++) await cluster.stopMember(i);
      const began = Date.now();
      await assert.rejects(client.get('/t/o/before'), (err: { code?: string; message?: string }) => {
        assert.equal(err.code, 'REGISTRY_UNAVAILABLE', err.message);
        return true;
      });
      await assert.rejects(client.txn([], [{ put: '/t/o/during', value: '1' }]), { code: 'REGISTRY_UNAVAILABLE' });
      assert.ok(Date.now() - began < 3000, 'refused connections fail without waiting for the 3 s deadline');
      await until('connection(false)', () => (rec.connections.at(-1)?.up === false ? true : undefined), 15_000);
      assert.match(rec.connections.at(-1)?.reason ?? '', /127\.0\.0\.\d:2379/);
      for (let i = 1; i <= cluster.size; i++) cluster.startMember(i);
      await cluster.waitHealthy();
      await cluster.ctl(['put', '/t/o/after-etcdctl', '2']);
      await putUntilAcknowledged(client, '/t/o/after', '3');
      await until('connection(true)', () => (rec.connections.at(-1)?.up === true ? true : undefined), 15_000);
      await until('the watch caught up', () => (rec.events.length >= 3 ? true : undefined), 15_000);
      await sleep(300);
      assert.deepEqual(rec.keys(), ['/t/o/before', '/t/o/after-etcdctl', '/t/o/after']);
      assert.deepEqual(
        rec.connections.map((c) => c.up),
        [true, false, true],
      );
    } finally {
      watch.close();
    }
  });

  it('all members hung (SIGSTOP): calls end at their deadline with REGISTRY_UNAVAILABLE, keepalive reports the watch down; SIGCONT: back', async () => {
    const { cluster } = env();
    const start = (await client.txn([], [{ put: '/t/marker', value: 'hung' }])).revision + 1;
    const rec = new Recorder();
    const watch = client.watchPrefix('/t/h/', start, rec.handlers);
    try {
      await client.txn([], [{ put: '/t/h/before', value: '1' }]);
      await until('the watch up', () => (rec.connections.at(-1)?.up === true && rec.events.length === 1 ? true : undefined), 10_000);
      for (let i = 1; i <= cluster.size; i++) cluster.pauseMember(i, true);
      try {
        await assert.rejects(client.txn([], [{ put: '/t/h/during', value: '1' }]), (err: { code?: string; message?: string }) => {
          assert.equal(err.code, 'REGISTRY_UNAVAILABLE', err.message);
          assert.match(err.message ?? '', /Deadline exceeded|DEADLINE_EXCEEDED|Connection dropped|keepalive/i);
          assert.match(err.message ?? '', /may still have been applied/, 'a write that left may commit after SIGCONT: the error says so');
          return true;
        });
        await until('connection(false) through keepalive', () => (rec.connections.at(-1)?.up === false ? true : undefined), 30_000);
      } finally {
        for (let i = 1; i <= cluster.size; i++) cluster.pauseMember(i, false);
      }
      await cluster.waitHealthy();
      await putUntilAcknowledged(client, '/t/h/after', '2');
      await until(
        'connection(true) and the event',
        () => (rec.connections.at(-1)?.up === true && rec.events.length >= 2 ? true : undefined),
        30_000,
      );
      await sleep(300);
      // The refused write's outcome is unknown by design (it was sent; the hung leader may commit it after
      // SIGCONT): the watch must report exactly what etcd holds, in order, nothing lost or repeated.
      const held = (await cluster.ctl(['get', '--prefix', '/t/h/', '--keys-only'])).split('\n').filter((l) => l !== '');
      assert.ok(held.includes('/t/h/before') && held.includes('/t/h/after'), held.join(' '));
      assert.deepEqual([...rec.keys()].sort(), held, 'every key etcd holds, each once');
      assert.equal(rec.keys()[0], '/t/h/before');
    } finally {
      watch.close();
    }
  });

  it("keeps an idle watch on one endpoint for 25 s: its keepalive stays within etcd's minimum (no GOAWAY too_many_pings)", async () => {
    const { cluster } = env();
    // One endpoint, so that a stream etcd ends shows as connection(false) instead of a silent move to another member.
    const single = new EtcdClient({ endpoints: [cluster.endpoints[0] as string] });
    const rec = new Recorder();
    const start = (await single.txn([], [{ put: '/t/idle/a', value: '1' }])).revision;
    const watch = single.watchPrefix('/t/idle/', start, rec.handlers);
    try {
      await until('the watch up', () => (rec.events.length === 1 ? true : undefined), 10_000);
      await sleep(25_000); // etcd (min time 5 s) ended a 2 s-ping stream after ~8 s; pings every 10 s need two rounds here
      await single.txn([], [{ put: '/t/idle/b', value: '2' }]);
      await until('the event after the idle time', () => (rec.events.length === 2 ? true : undefined), 10_000);
      assert.deepEqual(
        rec.connections.map((c) => c.up),
        [true],
        `no drop while idle: ${JSON.stringify(rec.connections)}`,
      );
    } finally {
      watch.close();
      await single.close();
    }
  });

  it('a watch from a compacted revision calls compacted() with the compact revision and stops', async () => {
    const { cluster } = env();
    const from = (await client.txn([], [{ put: '/t/c/a', value: '1' }])).revision;
    await client.txn([], [{ put: '/t/c/b', value: '2' }]);
    const compactedAt = await cluster.compact();
    assert.ok(compactedAt > from);
    const rec = new Recorder();
    const watch = client.watchPrefix('/t/c/', from, rec.handlers);
    try {
      await until('compacted()', () => (rec.compactions.length > 0 ? true : undefined), 10_000);
      assert.deepEqual(rec.compactions, [compactedAt]);
      await client.txn([], [{ put: '/t/c/later', value: '3' }]);
      await sleep(300);
      assert.deepEqual(rec.events, []);
      const fresh = await client.rangePrefix('/t/c/');
      assert.deepEqual(
        fresh.kvs.map((kv) => kv.key),
        ['/t/c/a', '/t/c/b', '/t/c/later'],
      );
    } finally {
      watch.close();
    }
  });
});

describe('etcd client over TLS (client certificates required)', () => {
  const env = useCluster(true);

  it('works with the CA and the client certificate, watch included', async () => {
    const { cluster } = env();
    const tls = cluster.tls as NonNullable<EtcdCluster['tls']>;
    const client = new EtcdClient({ endpoints: cluster.endpoints, tls: { ca: tls.ca, cert: tls.cert, key: tls.key } });
    try {
      const rec = new Recorder();
      const put = await client.txn([{ key: '/tls/a', absent: true }], [{ put: '/tls/a', value: 'secure' }]);
      assert.equal(put.succeeded, true);
      const watch = client.watchPrefix('/tls/', put.revision, rec.handlers);
      await until('the event over TLS', () => (rec.events.length === 1 ? true : undefined), 10_000);
      watch.close();
      assert.deepEqual(rec.keys(), ['/tls/a']);
      assert.equal((await client.get('/tls/a'))?.value, 'secure');
    } finally {
      await client.close();
    }
  });

  it('without the client certificate, calls fail with REGISTRY_UNAVAILABLE naming the certificate', async () => {
    const { cluster } = env();
    const tls = cluster.tls as NonNullable<EtcdCluster['tls']>;
    const client = new EtcdClient({ endpoints: cluster.endpoints, tls: { ca: tls.ca }, callTimeoutMs: 3000 });
    try {
      await assert.rejects(client.get('/tls/a'), (err: { code?: string; message?: string }) => {
        assert.equal(err.code, 'REGISTRY_UNAVAILABLE', err.message);
        assert.match(err.message ?? '', /certificate/i);
        return true;
      });
    } finally {
      await client.close();
    }
  });

  it('a plain-text endpoint with TLS configured is refused as a configuration error', () => {
    assert.throws(() => new EtcdClient({ endpoints: ['http://127.0.0.1:2379'], tls: { ca: '/nonexistent' } }), {
      code: 'CONFIG_INVALID',
    });
  });
});
