// The etcd client of the registry (issue 18): EtcdApi over @grpc/grpc-js with etcd's own protos
// (src/registry/etcd-proto.ts). Why not the `etcd3` package: it loses watch events when a stream
// drops during a catch-up and hides compact_revision; the watch is where imds needs to be exact.
//
// One channel per endpoint. Unary calls go to the endpoint that answered last and fail over to the
// next on UNAVAILABLE (a write only when it never left); each call has a deadline. Failures become
// REGISTRY_UNAVAILABLE (docs/errors.md); a failed compare is TxnResult.succeeded = false.

import type * as grpc from '@grpc/grpc-js';
import { ImdsError } from '../errors.js';
import type { Compare, EtcdApi, KeyValue, Op, RangeResult, TxnResult, Watch, WatchHandlers } from './etcd-api.js';
import {
  CHANNEL_OPTIONS,
  credentialsFor,
  isServiceError,
  isUnavailable,
  neverSent,
  parseEndpoints,
  prefixEnd,
  registryError,
  unary,
} from './etcd-grpc.js';
import type { EtcdTls } from './etcd-grpc.js';
import { etcdServices } from './etcd-proto.js';
import { PrefixWatch, toKeyValue } from './etcd-watch.js';
import type { RawKeyValue } from './etcd-watch.js';

export type { EtcdTls } from './etcd-grpc.js';

export interface EtcdClientOptions {
  /** `host:port`, `http://host:port` or `https://host:port`; tried in order, failing over. */
  endpoints: readonly string[];
  tls?: EtcdTls;
  /** Deadline of each unary call (not of a watch). Default 5 s. */
  callTimeoutMs?: number;
  /** Keys per Range page in rangePrefix. Default 1,000. */
  pageSize?: number;
}

interface Member {
  endpoint: string;
  kv: grpc.Client;
  watch: grpc.Client;
  lease: grpc.Client;
}

interface RangeResponse {
  header: { revision: string };
  kvs: RawKeyValue[];
  more: boolean;
}

interface TxnResponse {
  header: { revision: string };
  succeeded: boolean;
}

const COMPARE_EQUAL = 0;
const COMPARE_LESS = 2;
const TARGET_CREATE = 1;
const TARGET_MOD = 2;

export class EtcdClient implements EtcdApi {
  private readonly members: Member[];
  private readonly timeoutMs: number;
  private readonly pageSize: number;
  private readonly watches = new Set<Watch>();
  /** The member that answered last: calls start there. */
  private preferred = 0;

  constructor(options: EtcdClientOptions) {
    const { KV, Watch, Lease } = etcdServices();
    this.timeoutMs = options.callTimeoutMs ?? 5000;
    this.pageSize = options.pageSize ?? 1000;
    this.members = parseEndpoints(options.endpoints, options.tls).map(({ target, secure }) => {
      const creds = credentialsFor(secure, options.tls);
      return {
        endpoint: target,
        kv: new KV(target, creds, CHANNEL_OPTIONS),
        watch: new Watch(target, creds, CHANNEL_OPTIONS),
        lease: new Lease(target, creds, CHANNEL_OPTIONS),
      };
    });
  }

  async rangePrefix(prefix: string): Promise<RangeResult> {
    // A compaction between two pages removes the revision they read at: read again from the start.
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.rangePages(prefix);
      } catch (err) {
        const compacted = err instanceof ImdsError && err.details?.['grpcCode'] === 'OUT_OF_RANGE';
        if (!compacted || attempt === 3) throw err;
      }
    }
  }

  /** Pages of pageSize keys: the first fixes the revision, the later ones read at it. */
  private async rangePages(prefix: string): Promise<RangeResult> {
    const key = Buffer.from(prefix, 'utf8');
    const rangeEnd = prefixEnd(key);
    const kvs: KeyValue[] = [];
    let revision = 0;
    let from = key;
    for (;;) {
      const req = { key: from, range_end: rangeEnd, limit: String(this.pageSize), revision: String(revision) };
      const res = await this.call<RangeResponse>('Range', req, `a read of ${prefix}`, true);
      if (revision === 0) revision = Number(res.header.revision);
      for (const kv of res.kvs) kvs.push(toKeyValue(kv));
      const last = res.kvs.at(-1);
      if (!res.more || last === undefined) return { kvs, revision };
      from = Buffer.concat([last.key, Buffer.from([0])]);
    }
  }

  async get(key: string): Promise<KeyValue | undefined> {
    const res = await this.call<RangeResponse>('Range', { key: Buffer.from(key, 'utf8') }, `a read of ${key}`, true);
    const kv = res.kvs[0];
    return kv === undefined ? undefined : toKeyValue(kv);
  }

  async txn(compares: readonly Compare[], ops: readonly Op[]): Promise<TxnResult> {
    const req = {
      compare: compares.map(compareOf),
      success: ops.map((op) =>
        'put' in op
          ? { request_put: { key: Buffer.from(op.put, 'utf8'), value: Buffer.from(op.value, 'utf8'), lease: op.lease ?? '0' } }
          : { request_delete_range: { key: Buffer.from(op.delete, 'utf8') } },
      ),
      failure: [],
    };
    const res = await this.call<TxnResponse>('Txn', req, 'a transaction', false);
    return { succeeded: res.succeeded, revision: Number(res.header.revision) };
  }

  async grantLease(ttlSeconds: number): Promise<string> {
    const req = { TTL: String(ttlSeconds), ID: '0' };
    const res = await this.call<{ ID: string; error: string }>('LeaseGrant', req, 'a lease grant', false, 'lease');
    if (res.error !== '') throw new ImdsError('INTERNAL', `etcd refused a lease: ${res.error}`);
    return res.ID;
  }

  /** One renewal on a stream of its own (opened, one request, one answer, closed): the remaining TTL, 0 when expired. */
  async keepAliveLease(id: string): Promise<number> {
    let lastErr: unknown;
    for (let i = 0; i < this.members.length; i++) {
      const index = (this.preferred + i) % this.members.length;
      const member = this.members[index] as Member;
      try {
        const ttl = await keepAliveOnce(member.lease, id, this.timeoutMs);
        this.preferred = index;
        return ttl;
      } catch (err) {
        lastErr = registryError(err, 'a lease renewal', member.endpoint);
        if (!(isServiceError(err) && isUnavailable(err))) throw lastErr;
      }
    }
    throw lastErr;
  }

  async revokeLease(id: string): Promise<void> {
    await this.call('LeaseRevoke', { ID: id }, 'a lease revocation', true, 'lease');
  }

  watchPrefix(prefix: string, fromRevision: number, handlers: WatchHandlers): Watch {
    const key = Buffer.from(prefix, 'utf8');
    const clients = this.members.map((_, i) => this.members[(this.preferred + i) % this.members.length] as Member);
    const inner = new PrefixWatch(
      {
        clients: clients.map((m) => ({ client: m.watch, endpoint: m.endpoint })),
        key,
        rangeEnd: prefixEnd(key),
        createTimeoutMs: this.timeoutMs,
      },
      fromRevision,
      handlers,
    );
    const watch: Watch = {
      close: () => {
        inner.close();
        this.watches.delete(watch);
      },
    };
    this.watches.add(watch);
    return watch;
  }

  close(): Promise<void> {
    for (const w of [...this.watches]) w.close();
    for (const m of this.members) {
      m.kv.close();
      m.watch.close();
      m.lease.close();
    }
    return Promise.resolve();
  }

  /** Tries each member from the preferred one; moves on after UNAVAILABLE (a write only if it never left). */
  private async call<Res>(method: string, req: unknown, what: string, idempotent: boolean, service: 'kv' | 'lease' = 'kv'): Promise<Res> {
    let lastErr: unknown;
    for (let i = 0; i < this.members.length; i++) {
      const index = (this.preferred + i) % this.members.length;
      const member = this.members[index] as Member;
      try {
        const res = await unary<unknown, Res>(member[service], method, req, this.timeoutMs);
        this.preferred = index;
        return res;
      } catch (err) {
        const retry = isServiceError(err) && (idempotent ? isUnavailable(err) : neverSent(err));
        lastErr = registryError(err, what, member.endpoint, !idempotent && !neverSent(err));
        if (!retry) throw lastErr;
      }
    }
    throw lastErr;
  }
}

/** A compare as etcd takes it; a prefix compare holds for every key of the range (and for none). */
function compareOf(c: Compare): Record<string, unknown> {
  const key = Buffer.from(c.key, 'utf8');
  if ('absent' in c) return { key, result: COMPARE_EQUAL, target: TARGET_CREATE, create_revision: '0' };
  if ('prefix' in c)
    return { key, range_end: prefixEnd(key), result: COMPARE_LESS, target: TARGET_MOD, mod_revision: String(c.unchangedSince + 1) };
  return { key, result: COMPARE_EQUAL, target: TARGET_MOD, mod_revision: String(c.modRevision) };
}

/** LeaseKeepAlive is a bidirectional stream: one request, the first answer (its TTL), then the stream is closed. */
function keepAliveOnce(client: grpc.Client, id: string, timeoutMs: number): Promise<number> {
  const open = (client as unknown as Record<string, (options: grpc.CallOptions) => grpc.ClientDuplexStream<unknown, { TTL: string }>>)[
    'LeaseKeepAlive'
  ];
  if (open === undefined) throw new Error('no gRPC method LeaseKeepAlive');
  return new Promise((resolve, reject) => {
    const stream = open.call(client, { deadline: Date.now() + timeoutMs });
    let settled = false;
    const settle = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      fn();
      stream.cancel();
    };
    stream.on('data', (res: { TTL: string }) => settle(() => resolve(Number(res.TTL))));
    stream.on('error', (err: Error) => settle(() => reject(err)));
    stream.on('end', () => settle(() => reject(new Error('the lease renewal stream ended without an answer'))));
    stream.write({ ID: id });
  });
}
