// The etcd operations the registry needs (issue 18), as one small typed interface: the client
// (src/registry/etcd-client.ts, gRPC) implements it; the registry's sync and writes use only it.
// Revisions are bigint-free numbers (etcd's int64 revisions stay far below 2^53 in practice).
// Every method rejects with ImdsError REGISTRY_UNAVAILABLE when no endpoint answers in time; a lost
// compare is not an error here (TxnResult.succeeded false): the caller raises REGISTRY_CONFLICT.

export interface KeyValue {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
}

/**
 * One compare of a transaction: the key absent (create-only), its mod revision equal to one read,
 * or (`prefix`) no key under `key` written after revision `unchangedSince` (none created, none changed).
 */
export type Compare =
  { key: string; absent: true } | { key: string; modRevision: number } | { key: string; prefix: true; unchangedSince: number };

/** A put may be attached to a lease (its id, a decimal string: lease ids use all 64 bits): the key goes when the lease does. */
export type Op = { put: string; value: string; lease?: string } | { delete: string };

export interface TxnResult {
  succeeded: boolean;
  /** The store's revision after the transaction. */
  revision: number;
}

export interface RangeResult {
  kvs: KeyValue[];
  /** The revision the read saw: watch from revision + 1 to miss nothing. */
  revision: number;
}

export type WatchEvent = { type: 'put'; kv: KeyValue } | { type: 'delete'; key: string; modRevision: number };

/** Called synchronously from the watch stream: they must not throw (catch and log inside). */
export interface WatchHandlers {
  /**
   * Events in revision order; `revision` is the last one delivered (every event up to it has been).
   * After a reconnect, delivery resumes after it: none lost, none twice. All events of one revision
   * (one transaction) come in the same call.
   */
  events(events: WatchEvent[], revision: number): void;
  /**
   * The revision to resume from was compacted: the watch has stopped; the caller must read everything
   * again (full resync) and watch anew.
   */
  compacted(compactRevision: number): void;
  /**
   * Connected to the cluster or not, on changes only: false once every endpoint failed in a row (with the
   * last reason), true when a watch stream is created again. Drives the daemon's degraded state.
   */
  connection(up: boolean, reason?: string): void;
}

export interface Watch {
  close(): void;
}

export interface EtcdApi {
  /** Every key under a prefix, paged internally, at one revision. */
  rangePrefix(prefix: string): Promise<RangeResult>;
  get(key: string): Promise<KeyValue | undefined>;
  /**
   * If every compare holds, apply `ops` atomically. etcd takes at most 128 operations per transaction
   * (its --max-txn-ops) and no key twice: it refuses more (INTERNAL, with etcd's words).
   */
  txn(compares: readonly Compare[], ops: readonly Op[]): Promise<TxnResult>;
  /** Watch a prefix from `fromRevision` (inclusive). */
  watchPrefix(prefix: string, fromRevision: number, handlers: WatchHandlers): Watch;
  /**
   * Leases, for a host's liveness key (src/registry/host-registrar.ts). The etcd client implements
   * them; an EtcdApi without them (a unit test's fake) registers hosts without liveness.
   * grantLease gives the lease's id; keepAliveLease renews it and gives its remaining TTL in seconds
   * (0: it expired, its keys are gone); revokeLease ends it (its keys go at once).
   */
  grantLease?(ttlSeconds: number): Promise<string>;
  keepAliveLease?(id: string): Promise<number>;
  revokeLease?(id: string): Promise<void>;
  close(): Promise<void>;
}

/** Where the client connects: the configuration's `registry.etcd` (endpoints, TLS file paths). */
export interface EtcdConnection {
  endpoints: readonly string[];
  tls?: { ca?: string | undefined; cert?: string | undefined; key?: string | undefined } | undefined;
}

/** Makes the client (src/registry/etcd-client.ts exports one as `createEtcdClient`). */
export type EtcdClientFactory = (connection: EtcdConnection) => EtcdApi | Promise<EtcdApi>;
