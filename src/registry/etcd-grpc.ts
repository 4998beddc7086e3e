// Connecting to etcd with @grpc/grpc-js: endpoints, TLS credentials, channel options (keepalive,
// message size), unary calls with a deadline, and gRPC failures mapped to imds's error codes.

import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { ImdsError, messageOf } from '../errors.js';

export interface EtcdTls {
  /** PEM file of the CA that signed etcd's server certificates (absent: the system's roots). */
  ca?: string;
  /** PEM client certificate and key, for etcd's --client-cert-auth. */
  cert?: string;
  key?: string;
}

export interface Endpoint {
  /** host:port, as grpc-js takes it. */
  target: string;
  secure: boolean;
}

const ENDPOINT = /^(?:(https?):\/\/)?([^/\s]+:\d{1,5})\/?$/;

/** `https://host:port`, `http://host:port` or `host:port` (secure when TLS is configured). */
export function parseEndpoints(endpoints: readonly string[], tls: EtcdTls | undefined): Endpoint[] {
  if (endpoints.length === 0)
    throw new ImdsError('CONFIG_INVALID', 'at least one etcd endpoint is needed', { field: 'registry.etcd.endpoints' });
  return endpoints.map((raw, i) => {
    const m = ENDPOINT.exec(raw);
    const field = `registry.etcd.endpoints[${i}]`;
    if (m === null) throw new ImdsError('CONFIG_INVALID', `${JSON.stringify(raw)} is not host:port or http(s)://host:port`, { field });
    const secure = m[1] === undefined ? tls !== undefined : m[1] === 'https';
    if (!secure && tls !== undefined) throw new ImdsError('CONFIG_INVALID', `${raw} is http:// but registry.etcd.tls is set`, { field });
    return { target: m[2] as string, secure };
  });
}

function readPem(path: string | undefined, field: string): Buffer | null {
  if (path === undefined) return null;
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ImdsError('CONFIG_INVALID', `cannot read ${path}: ${messageOf(err)}`, { field, cause: err });
  }
}

export function credentialsFor(secure: boolean, tls: EtcdTls | undefined): grpc.ChannelCredentials {
  if (!secure) return grpc.credentials.createInsecure();
  if ((tls?.cert === undefined) !== (tls?.key === undefined)) {
    throw new ImdsError('CONFIG_INVALID', 'cert and key go together', { field: 'registry.etcd.tls' });
  }
  return grpc.credentials.createSsl(
    readPem(tls?.ca, 'registry.etcd.tls.ca'),
    readPem(tls?.key, 'registry.etcd.tls.key'),
    readPem(tls?.cert, 'registry.etcd.tls.cert'),
  );
}

// Keepalive: etcd refuses pings more often than its --grpc-keepalive-min-time (5 s by default) and
// without an open stream (GOAWAY "too_many_pings", then RESOURCE_EXHAUSTED on the watch): ping every
// 10 s, only while a call (the daemon's watch) is open; a hung cluster is noticed within ~13 s.
// Responses up to 128 MiB.
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 3000,
  'grpc.keepalive_permit_without_calls': 0,
  'grpc.max_receive_message_length': 128 << 20,
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 1000,
};

export function isServiceError(err: unknown): err is grpc.ServiceError {
  return err instanceof Error && typeof (err as Partial<grpc.ServiceError>).code === 'number';
}

/** True when the request never left: another endpoint may be tried even for a write. */
export function neverSent(err: unknown): boolean {
  return isServiceError(err) && err.code === grpc.status.UNAVAILABLE && /No connection established|ECONNREFUSED/.test(err.details);
}

export function isUnavailable(err: unknown): boolean {
  return isServiceError(err) && (err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.DEADLINE_EXCEEDED);
}

/** UNAVAILABLE and DEADLINE_EXCEEDED: REGISTRY_UNAVAILABLE; anything else etcd refuses: INTERNAL, with gRPC's words. */
export function registryError(err: unknown, what: string, endpoint: string, maybeApplied = false): ImdsError {
  if (err instanceof ImdsError) return err;
  const details = isServiceError(err) ? { grpcCode: grpc.status[err.code], endpoint } : { endpoint };
  const reason = isServiceError(err) ? err.details || grpc.status[err.code] : messageOf(err);
  if (isUnavailable(err)) {
    // A write that reached a member and got no answer may still commit once the cluster answers again.
    const outcome = maybeApplied ? '; the write may still have been applied: read it back before retrying' : '';
    return new ImdsError('REGISTRY_UNAVAILABLE', `etcd registry unavailable (${what} via ${endpoint}): ${reason}${outcome}`, {
      details: { ...details, maybeApplied },
      cause: err,
    });
  }
  return new ImdsError('INTERNAL', `etcd refused ${what} (via ${endpoint}): ${reason}`, { details, cause: err });
}

type UnaryMethod<Req, Res> = (req: Req, options: grpc.CallOptions, callback: (err: grpc.ServiceError | null, res?: Res) => void) => void;

/** One unary call with a deadline (never waitForReady: a down endpoint fails at once). */
export function unary<Req, Res>(client: grpc.Client, method: string, req: Req, timeoutMs: number): Promise<Res> {
  const fn = (client as unknown as Record<string, UnaryMethod<Req, Res>>)[method];
  if (fn === undefined) throw new Error(`no gRPC method ${method}`);
  return new Promise((resolve, reject) => {
    fn.call(client, req, { deadline: Date.now() + timeoutMs }, (err, res) => (err !== null ? reject(err) : resolve(res as Res)));
  });
}

/** The end of the key range of every key starting with prefix (etcd's range_end for a prefix). */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if ((end[i] as number) < 0xff) {
      end[i] = (end[i] as number) + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]); // every key
}
