// The etcd client's pure parts: endpoints, key ranges, error mapping, and the watch's resume logic
// against fake streams (the real cluster: test/integration/etcd-client.test.ts).
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { WatchEvent } from '../../src/registry/etcd-api.ts';
import { neverSent, parseEndpoints, prefixEnd, registryError } from '../../src/registry/etcd-grpc.ts';
import { etcdServices } from '../../src/registry/etcd-proto.ts';
import { PrefixWatch } from '../../src/registry/etcd-watch.ts';
import { until } from '../helpers/wait.ts';

function serviceError(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(`${code} ${grpc.status[code]}: ${details}`), { code, details, metadata: new grpc.Metadata() });
}

describe('etcd endpoints and ranges', () => {
  it('takes host:port and http(s)://host:port; TLS makes a bare host:port secure', () => {
    assert.deepEqual(parseEndpoints(['127.0.0.1:2379', 'http://etcd-a:2379', 'https://etcd-b:2379/'], undefined), [
      { target: '127.0.0.1:2379', secure: false },
      { target: 'etcd-a:2379', secure: false },
      { target: 'etcd-b:2379', secure: true },
    ]);
    assert.deepEqual(parseEndpoints(['10.0.0.1:2379'], { ca: '/ca.pem' }), [{ target: '10.0.0.1:2379', secure: true }]);
  });

  it('refuses no endpoint, a malformed one (naming it), and http:// with TLS', () => {
    assert.throws(() => parseEndpoints([], undefined), { code: 'CONFIG_INVALID', field: 'registry.etcd.endpoints' });
    assert.throws(() => parseEndpoints(['127.0.0.1:2379', 'etcd-a'], undefined), {
      code: 'CONFIG_INVALID',
      field: 'registry.etcd.endpoints[1]',
    });
    assert.throws(() => parseEndpoints(['http://127.0.0.1:2379'], {}), { code: 'CONFIG_INVALID', field: 'registry.etcd.endpoints[0]' });
  });

  it('the range end of a prefix is the prefix with its last byte below 0xff raised', () => {
    assert.deepEqual(prefixEnd(Buffer.from('/imds/')), Buffer.from('/imds0'));
    assert.deepEqual(prefixEnd(Buffer.from([0x61, 0xff, 0xff])), Buffer.from([0x62]));
    assert.deepEqual(prefixEnd(Buffer.from([0xff])), Buffer.from([0]));
  });
});

describe('etcd errors', () => {
  it('UNAVAILABLE and DEADLINE_EXCEEDED are REGISTRY_UNAVAILABLE, naming the endpoint and the reason', () => {
    for (const code of [grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]) {
      const err = registryError(serviceError(code, 'No connection established'), 'a read of /imds/', '127.0.0.1:2379');
      assert.equal(err.code, 'REGISTRY_UNAVAILABLE');
      assert.match(err.message, /a read of \/imds\/ via 127\.0\.0\.1:2379\): No connection established/);
    }
  });

  it('anything else etcd refuses is INTERNAL with its words', () => {
    const err = registryError(
      serviceError(grpc.status.INVALID_ARGUMENT, 'etcdserver: duplicate key given in txn request'),
      'a transaction',
      'e:1',
    );
    assert.equal(err.code, 'INTERNAL');
    assert.match(err.message, /duplicate key/);
  });

  it('only a request that never left may be retried elsewhere when it writes', () => {
    assert.equal(neverSent(serviceError(grpc.status.UNAVAILABLE, 'No connection established. Last error: connect ECONNREFUSED')), true);
    assert.equal(neverSent(serviceError(grpc.status.UNAVAILABLE, 'Connection dropped')), false);
    assert.equal(neverSent(serviceError(grpc.status.DEADLINE_EXCEEDED, 'Deadline exceeded')), false);
  });

  it('the embedded protos load: KV (Range, Put, DeleteRange, Txn) and Watch', () => {
    const { KV, Watch } = etcdServices();
    assert.deepEqual(Object.keys(KV.service).sort(), ['DeleteRange', 'Put', 'Range', 'Txn']);
    assert.equal(Watch.service['Watch']?.path, '/etcdserverpb.Watch/Watch');
    assert.equal(KV.service['Txn']?.path, '/etcdserverpb.KV/Txn');
  });
});

/** A fake Watch client: each call opens a stream the test drives. */
class FakeStream extends EventEmitter {
  readonly written: unknown[] = [];
  canceled = false;
  write(req: unknown): boolean {
    this.written.push(req);
    return true;
  }
  cancel(): void {
    this.canceled = true;
  }
}

function fakeTarget(streams: FakeStream[], endpoints = 2, createTimeoutMs = 5000) {
  const clients = Array.from({ length: endpoints }, (_, i) => ({
    endpoint: `e${i}`,
    client: {
      Watch: () => {
        const s = new FakeStream();
        streams.push(s);
        return s;
      },
    } as unknown as grpc.Client,
  }));
  return { clients, key: Buffer.from('/p/'), rangeEnd: Buffer.from('/p0'), createTimeoutMs };
}

const put = (key: string, rev: number) => ({
  type: 0,
  kv: { key: Buffer.from(key), value: Buffer.from('v'), create_revision: String(rev), mod_revision: String(rev) },
});
const response = (fields: Record<string, unknown>) => ({
  created: false,
  canceled: false,
  compact_revision: '0',
  cancel_reason: '',
  events: [],
  ...fields,
});
const startOf = (s: FakeStream | undefined): string =>
  (s?.written[0] as { create_request: { start_revision: string } }).create_request.start_revision;

describe('a resuming watch (fake streams)', () => {
  it('reconnects on the next endpoint from the revision after the last delivered, drops what it saw, reports up and down', async () => {
    const streams: FakeStream[] = [];
    const got: WatchEvent[] = [];
    const connections: boolean[] = [];
    const watch = new PrefixWatch(fakeTarget(streams), 10, {
      events: (evs) => void got.push(...evs),
      compacted: () => assert.fail('not compacted'),
      connection: (up) => void connections.push(up),
    });
    assert.equal(startOf(streams[0]), '10');
    streams[0]?.emit('data', response({ created: true }));
    streams[0]?.emit('data', response({ events: [put('/p/a', 10), put('/p/b', 11), put('/p/c', 11)] }));
    streams[0]?.emit('error', serviceError(grpc.status.UNAVAILABLE, 'Connection dropped'));
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(streams.length, 2);
    assert.equal(startOf(streams[1]), '12');
    streams[1]?.emit('error', serviceError(grpc.status.UNAVAILABLE, 'No connection established'));
    assert.deepEqual(connections, [true, false], 'a whole round of endpoints failed');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(startOf(streams[2]), '12');
    streams[2]?.emit('data', response({ created: true }));
    streams[2]?.emit('data', response({ events: [put('/p/c', 11), put('/p/d', 12)] })); // a replayed event is dropped
    assert.deepEqual(connections, [true, false, true]);
    assert.deepEqual(
      got.map((e) => (e.type === 'put' ? `${e.kv.key}@${e.kv.modRevision}` : e.key)),
      ['/p/a@10', '/p/b@11', '/p/c@11', '/p/d@12'],
    );
    watch.close();
    assert.equal(streams[2]?.canceled, true);
  });

  it('a stream etcd never confirms (a hung member) is given up after createTimeoutMs and the next endpoint tried', async () => {
    const streams: FakeStream[] = [];
    const connections: boolean[] = [];
    const watch = new PrefixWatch(fakeTarget(streams, 2, 50), 7, {
      events: () => undefined,
      compacted: () => undefined,
      connection: (up) => void connections.push(up),
    });
    await until('two unconfirmed streams', () => (streams.length >= 2 && connections.length > 0 ? true : undefined), 10_000, 10);
    watch.close();
    assert.ok(streams.length >= 2, `reopened (${streams.length} streams)`);
    assert.equal(streams[0]?.canceled, true);
    assert.deepEqual(connections, [false], 'two endpoints unconfirmed: down');
    assert.ok(streams.every((s) => startOf(s) === '7'));
  });

  it("an old stream's late message or error does not stop the current stream's confirmation timer", async () => {
    const streams: FakeStream[] = [];
    const watch = new PrefixWatch(fakeTarget(streams, 2, 100), 7, {
      events: () => undefined,
      compacted: () => undefined,
      connection: () => undefined,
    });
    streams[0]?.emit('data', response({ created: true }));
    streams[0]?.emit('error', serviceError(grpc.status.UNAVAILABLE, 'Connection dropped'));
    await until('a second stream', () => (streams.length >= 2 ? true : undefined), 10_000, 5);
    streams[0]?.emit('data', response({ events: [] })); // late, from the stream given up
    streams[0]?.emit('error', serviceError(grpc.status.CANCELLED, 'Cancelled on client'));
    // The second stream is never confirmed: it must still be given up and a third opened.
    await until('a third stream', () => (streams.length >= 3 ? true : undefined), 10_000, 5);
    watch.close();
    assert.equal(streams[1]?.canceled, true);
  });

  it('a cancel with a compact revision calls compacted() once and stops for good', async () => {
    const streams: FakeStream[] = [];
    const compacted: number[] = [];
    new PrefixWatch(fakeTarget(streams), 3, {
      events: () => assert.fail('no events'),
      compacted: (r) => void compacted.push(r),
      connection: () => undefined,
    });
    streams[0]?.emit('data', response({ created: true }));
    streams[0]?.emit('data', response({ canceled: true, compact_revision: '42' }));
    streams[0]?.emit('end');
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(compacted, [42]);
    assert.equal(streams.length, 1, 'no reconnect after a compaction');
  });
});
