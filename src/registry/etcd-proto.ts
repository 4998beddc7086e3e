// The part of etcd's v3 gRPC API imds uses, as protobuf source embedded in TypeScript so that it
// ships inside dist/ (tsc copies no .proto file). Parsed once at runtime with protobufjs.
//
// Taken from etcd v3.4 (https://github.com/etcd-io/etcd), Apache-2.0: api/etcdserverpb/rpc.proto
// (services KV: Range, Put, DeleteRange, Txn; Watch: Watch; their messages) and mvcc/mvccpb/kv.proto
// (KeyValue, Event), and Lease (LeaseGrant, LeaseRevoke, LeaseKeepAlive), trimmed to the fields and
// services imds needs, gogoproto and google.api options removed. Field numbers and types are
// unchanged; only the package of KeyValue/Event differs, which the wire format does not see. Enum
// names follow upstream; imds passes enum values as numbers.

import * as grpc from '@grpc/grpc-js';
import { fromJSON } from '@grpc/proto-loader';
import protobuf from 'protobufjs';

const ETCD_PROTO = `
syntax = "proto3";
package etcdserverpb;

service KV {
  rpc Range(RangeRequest) returns (RangeResponse);
  rpc Put(PutRequest) returns (PutResponse);
  rpc DeleteRange(DeleteRangeRequest) returns (DeleteRangeResponse);
  rpc Txn(TxnRequest) returns (TxnResponse);
}
service Watch {
  rpc Watch(stream WatchRequest) returns (stream WatchResponse);
}
service Lease {
  rpc LeaseGrant(LeaseGrantRequest) returns (LeaseGrantResponse);
  rpc LeaseRevoke(LeaseRevokeRequest) returns (LeaseRevokeResponse);
  rpc LeaseKeepAlive(stream LeaseKeepAliveRequest) returns (stream LeaseKeepAliveResponse);
}
message LeaseGrantRequest {
  int64 TTL = 1;
  int64 ID = 2;
}
message LeaseGrantResponse {
  ResponseHeader header = 1;
  int64 ID = 2;
  int64 TTL = 3;
  string error = 4;
}
message LeaseRevokeRequest {
  int64 ID = 1;
}
message LeaseRevokeResponse {
  ResponseHeader header = 1;
}
message LeaseKeepAliveRequest {
  int64 ID = 1;
}
message LeaseKeepAliveResponse {
  ResponseHeader header = 1;
  int64 ID = 2;
  int64 TTL = 3;
}

message KeyValue {
  bytes key = 1;
  int64 create_revision = 2;
  int64 mod_revision = 3;
  int64 version = 4;
  bytes value = 5;
  int64 lease = 6;
}
message Event {
  enum EventType { PUT = 0; DELETE = 1; }
  EventType type = 1;
  KeyValue kv = 2;
  KeyValue prev_kv = 3;
}
message ResponseHeader {
  uint64 cluster_id = 1;
  uint64 member_id = 2;
  int64 revision = 3;
  uint64 raft_term = 4;
}
message RangeRequest {
  bytes key = 1;
  bytes range_end = 2;
  int64 limit = 3;
  int64 revision = 4;
  bool serializable = 7;
  bool keys_only = 8;
  bool count_only = 9;
}
message RangeResponse {
  ResponseHeader header = 1;
  repeated KeyValue kvs = 2;
  bool more = 3;
  int64 count = 4;
}
message PutRequest {
  bytes key = 1;
  bytes value = 2;
  int64 lease = 3;
  bool prev_kv = 4;
}
message PutResponse {
  ResponseHeader header = 1;
  KeyValue prev_kv = 2;
}
message DeleteRangeRequest {
  bytes key = 1;
  bytes range_end = 2;
  bool prev_kv = 3;
}
message DeleteRangeResponse {
  ResponseHeader header = 1;
  int64 deleted = 2;
  repeated KeyValue prev_kvs = 3;
}
message RequestOp {
  oneof request {
    RangeRequest request_range = 1;
    PutRequest request_put = 2;
    DeleteRangeRequest request_delete_range = 3;
    TxnRequest request_txn = 4;
  }
}
message ResponseOp {
  oneof response {
    RangeResponse response_range = 1;
    PutResponse response_put = 2;
    DeleteRangeResponse response_delete_range = 3;
    TxnResponse response_txn = 4;
  }
}
message Compare {
  enum CompareResult { EQUAL = 0; GREATER = 1; LESS = 2; NOT_EQUAL = 3; }
  enum CompareTarget { VERSION = 0; CREATE = 1; MOD = 2; VALUE = 3; LEASE = 4; }
  CompareResult result = 1;
  CompareTarget target = 2;
  bytes key = 3;
  oneof target_union {
    int64 version = 4;
    int64 create_revision = 5;
    int64 mod_revision = 6;
    bytes value = 7;
    int64 lease = 8;
  }
  bytes range_end = 64;
}
message TxnRequest {
  repeated Compare compare = 1;
  repeated RequestOp success = 2;
  repeated RequestOp failure = 3;
}
message TxnResponse {
  ResponseHeader header = 1;
  bool succeeded = 2;
  repeated ResponseOp responses = 3;
}
message WatchRequest {
  oneof request_union {
    WatchCreateRequest create_request = 1;
    WatchCancelRequest cancel_request = 2;
    WatchProgressRequest progress_request = 3;
  }
}
message WatchCreateRequest {
  bytes key = 1;
  bytes range_end = 2;
  int64 start_revision = 3;
  bool progress_notify = 4;
  bool prev_kv = 6;
  int64 watch_id = 7;
  bool fragment = 8;
}
message WatchCancelRequest {
  int64 watch_id = 1;
}
message WatchProgressRequest {
}
message WatchResponse {
  ResponseHeader header = 1;
  int64 watch_id = 2;
  bool created = 3;
  bool canceled = 4;
  int64 compact_revision = 5;
  string cancel_reason = 6;
  bool fragment = 7;
  repeated Event events = 11;
}
`;

export interface EtcdServices {
  KV: grpc.ServiceClientConstructor;
  Watch: grpc.ServiceClientConstructor;
  Lease: grpc.ServiceClientConstructor;
}

let services: EtcdServices | undefined;

/** The KV, Watch and Lease client constructors. 64-bit integers decode as strings, bytes as Buffers, enums as numbers. */
export function etcdServices(): EtcdServices {
  if (services !== undefined) return services;
  const root = protobuf.parse(ETCD_PROTO, { keepCase: true }).root;
  const definition = fromJSON(root.toJSON(), { keepCase: true, longs: String, enums: Number, defaults: true, oneofs: true });
  const pkg = grpc.loadPackageDefinition(definition)['etcdserverpb'] as grpc.GrpcObject;
  services = {
    KV: pkg['KV'] as grpc.ServiceClientConstructor,
    Watch: pkg['Watch'] as grpc.ServiceClientConstructor,
    Lease: pkg['Lease'] as grpc.ServiceClientConstructor,
  };
  return services;
}
