// One etcd watch of a prefix over a bidirectional gRPC stream that survives failures: on a stream
// error or end it reconnects (next endpoint, backoff 100 ms doubling to 1 s) from the revision after
// the last one delivered, so no event is lost or delivered twice. A canceled watch with a compact
// revision means the resume point is gone: handlers.compacted, and the watch stops.

import * as grpc from '@grpc/grpc-js';
import type { KeyValue, Watch, WatchEvent, WatchHandlers } from './etcd-api.js';
import { messageOf } from '../errors.js';

export interface RawKeyValue {
  key: Buffer;
  value: Buffer;
  create_revision: string;
  mod_revision: string;
}

interface RawWatchResponse {
  header?: { revision: string };
  created: boolean;
  canceled: boolean;
  compact_revision: string;
  cancel_reason: string;
  events: { type: number; kv?: RawKeyValue }[];
}

export function toKeyValue(kv: RawKeyValue): KeyValue {
  return {
    key: kv.key.toString('utf8'),
    value: kv.value.toString('utf8'),
    createRevision: Number(kv.create_revision),
    modRevision: Number(kv.mod_revision),
  };
}

export interface WatchTarget {
  /** The Watch service client of each endpoint, in failover order, and its name for messages. */
  clients: readonly { client: grpc.Client; endpoint: string }[];
  key: Buffer;
  rangeEnd: Buffer;
  /**
   * How long to wait for etcd to confirm the watch. grpc-js has no connect timeout: against a hung
   * member (connection accepted, never answered) the stream would wait for ever.
   */
  createTimeoutMs: number;
}

const MIN_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 1000;

export class PrefixWatch implements Watch {
  /** The next revision to deliver: the last delivered + 1. */
  private next: number;
  private stream: grpc.ClientDuplexStream<unknown, RawWatchResponse> | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Runs until etcd confirms the stream's watch (see WatchTarget.createTimeoutMs). */
  private createTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private endpointIndex = 0;
  /** Attempts that failed in a row without the watch being created. */
  private failures = 0;
  private up: boolean | undefined;

  private readonly target: WatchTarget;
  private readonly handlers: WatchHandlers;

  constructor(target: WatchTarget, fromRevision: number, handlers: WatchHandlers) {
    this.target = target;
    this.handlers = handlers;
    this.next = fromRevision;
    this.open();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    clearTimeout(this.createTimer);
    this.stream?.cancel();
    this.stream = undefined;
  }

  private open(): void {
    if (this.closed) return;
    const { client, endpoint } = this.target.clients[this.endpointIndex] as WatchTarget['clients'][number];
    // hasleader: a member cut off from its leader ends the stream instead of staying silent.
    const metadata = new grpc.Metadata();
    metadata.set('hasleader', 'true');
    const watch = (client as unknown as Record<string, (m: grpc.Metadata) => grpc.ClientDuplexStream<unknown, RawWatchResponse>>)['Watch'];
    const stream = (watch as (m: grpc.Metadata) => grpc.ClientDuplexStream<unknown, RawWatchResponse>).call(client, metadata);
    this.stream = stream;
    let ended = false;
    const lost = (reason: string): void => {
      if (ended || this.stream !== stream) return; // an older stream's late error: the current one's timer stays
      clearTimeout(this.createTimer);
      ended = true;
      this.stream = undefined;
      stream.cancel();
      this.retry(`${endpoint}: ${reason}`);
    };
    this.createTimer = setTimeout(
      () => lost(`the watch was not confirmed within ${this.target.createTimeoutMs} ms`),
      this.target.createTimeoutMs,
    );
    stream.on('data', (res: RawWatchResponse) => {
      if (this.stream !== stream) return; // an older stream's late message: the current one's timer stays
      clearTimeout(this.createTimer);
      this.receive(res, lost);
    });
    stream.on('error', (err) => lost(messageOf(err)));
    stream.on('end', () => lost('the watch stream ended'));
    stream.write({ create_request: { key: this.target.key, range_end: this.target.rangeEnd, start_revision: String(this.next) } });
  }

  private receive(res: RawWatchResponse, lost: (reason: string) => void): void {
    if (res.canceled) {
      const compactRevision = Number(res.compact_revision);
      if (compactRevision > 0) {
        this.close();
        this.handlers.compacted(compactRevision);
      } else {
        lost(`watch canceled: ${res.cancel_reason || 'no reason given'}`);
      }
      return;
    }
    if (res.created) {
      this.failures = 0;
      this.report(true);
    }
    const events: WatchEvent[] = [];
    let last = this.next - 1;
    for (const ev of res.events) {
      if (ev.kv === undefined) continue;
      const kv = toKeyValue(ev.kv);
      if (kv.modRevision < this.next) continue; // seen before a reconnect
      events.push(ev.type === 1 ? { type: 'delete', key: kv.key, modRevision: kv.modRevision } : { type: 'put', kv });
      last = Math.max(last, kv.modRevision);
    }
    if (events.length === 0) return;
    // etcd never splits one revision over two responses (fragment is off): the batch is complete.
    this.next = last + 1;
    this.handlers.events(events, last);
  }

  private retry(reason: string): void {
    if (this.closed) return;
    this.failures++;
    // A whole round of endpoints without a created watch: the cluster is unreachable.
    if (this.failures >= this.target.clients.length) this.report(false, reason);
    this.endpointIndex = (this.endpointIndex + 1) % this.target.clients.length;
    const delay = Math.min(MAX_BACKOFF_MS, MIN_BACKOFF_MS * 2 ** Math.max(0, this.failures - 1));
    this.timer = setTimeout(() => this.open(), delay);
  }

  private report(up: boolean, reason?: string): void {
    if (this.up === up) return;
    this.up = up;
    this.handlers.connection(up, reason);
  }
}
