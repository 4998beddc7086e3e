// imds native data plane (issue 16): shared declarations of the table (dp_table.c), the loop
// (dp_loop.c) and the JS binding (dp_napi.c). See docs/architecture.md, "The native data plane".
//
// Threads: the loop thread owns the connections; the JS thread builds table entries and swaps them
// in. Everything the two share (the VM map, the routes, the rate-limit buckets, the counters, the
// command slot) is behind one mutex, held only for lookups, pointer swaps and counter updates:
// entries are built, and freed, outside it.
#ifndef IMDS_DP_H
#define IMDS_DP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Content types, as the JS sends them (src/server/native-table.ts TYPE_CODE). */
enum { DP_TYPE_JSON = 0, DP_TYPE_TEXT = 1, DP_TYPE_HTML = 2, DP_TYPES = 3 };
#define DP_MAX_SEGS 4
#define DP_NO_SEED 255
/** The base64 text of the 512 random bytes of meta_data.json's random_seed. */
#define DP_SEED_LEN 684

/** Immutable bytes shared by responses (a VM's meta_data head, a listing many VMs share, …). */
struct dp_blob {
  atomic_uint refs;
  uint32_t len;
  char data[];
};

/** A precomputed answer: status, type and a body of nsegs segments (the owner's segs[first_seg..]), the fresh seed before the seed_at-th. */
struct dp_resp {
  uint16_t status;
  uint8_t type;
  uint8_t nsegs;
  uint8_t seed_at;
  uint32_t body_len; /* the seed included */
  uint32_t first_seg;
};

enum {
  DP_VM_DISABLED = 1, /* http_endpoint: disabled: 403 to everything */
  DP_VM_HANDOVER = 2, /* every request goes to node:http (http_tokens: required) */
};

/** At most this many responses of its own per VM. */
#define DP_MAX_RESPS 0x7ffe
/**
 * A route's code in a VM's table: 0 none; 1..0x7fff its own response code-1; DP_ROUTE_SHARED | id a
 * shared response (dp_shared_resp): an answer many VMs give alike (a listing, vendor data, a 404
 * body), kept once for every VM and for good.
 */
#define DP_ROUTE_SHARED 0x8000
#define DP_MAX_SHARED 0x7fff

/** A stretch of a body: bytes in the VM's own block, or in a shared blob it holds. */
struct dp_seg {
  const char *data;
  uint32_t len;
};

/**
 * One VM's entries: route id -> response. Immutable once published; freed at the last reference.
 * (The global answers, dp_global, are one too.) One allocation holds it all — routes, responses,
 * segments and the bytes only this VM has (a Buffer given twice is kept once) — beside references
 * to the blobs many VMs share: a few kB per VM and no fragments.
 */
/** A response many VMs share: one segment, in a blob it holds; never freed (bounded: DP_MAX_SHARED). */
struct dp_shared_resp {
  struct dp_resp resp;
  struct dp_seg seg;
  struct dp_blob *blob;
};

struct dp_vm {
  atomic_uint refs;
  uint32_t key; /* the JS's number for the VM (counters) */
  uint32_t flags;
  uint32_t nroutes, nresps, nsegs, nshared;
  uint32_t size; /* bytes of this block */
  uint16_t *routes; /* per route id: its code (DP_ROUTE_SHARED) */
  struct dp_resp *resps;
  struct dp_seg *segs;
  struct dp_blob **shared; /* each a reference */
  char mem[];
};

void dp_blob_unref(struct dp_blob *b);
void dp_vm_unref(struct dp_vm *vm);

/** Request duration histogram bounds (µs), src/stats.ts REQUEST_BUCKETS. */
#define DP_BUCKETS 10
extern const uint32_t DP_BUCKET_US[DP_BUCKETS];
/** Statuses counted per network, in this order. */
#define DP_STATUSES 8
extern const uint16_t DP_STATUS[DP_STATUSES];
int dp_status_index(uint16_t status);

/** Requests the loop refused before an answer, counted per network: rate limit, endpoint disabled. */
enum { DP_REJECT_RATE = 0, DP_REJECT_DISABLED = 1, DP_REJECTS = 2 };

struct dp_net_stats {
  uint64_t by_status[DP_STATUSES];
  uint64_t buckets[DP_BUCKETS + 1];
  uint64_t sum_ns;
  uint64_t count;
  uint64_t unknown_callers;
  uint64_t rejects[DP_REJECTS];
};

struct dp_vm_stats {
  uint64_t requests;
  uint64_t no_token;
  int64_t first_seen_ms;
  int64_t last_seen_ms;
  uint16_t last_status;
  bool dirty;
};


/** One request the loop answered, for the request log (the JS writes it: debug lines, the access log, unknown callers). */
#define DP_LOG_PATH 240
#define DP_LOG_RING 4096
enum { DP_LOG_OFF = 0, DP_LOG_UNKNOWN = 1, DP_LOG_ALL = 2 };
struct dp_log_record {
  uint32_t slot, ip, key; /* key: the VM's, UINT32_MAX for none */
  uint32_t ns;
  uint32_t bytes; /* the body's, as written (0 for HEAD) */
  int64_t at_ms;  /* wall clock, when answered */
  uint16_t status;
  uint8_t method;
  uint16_t path_len;
  char path[DP_LOG_PATH];
};

/** The table: what the loop answers from. All under `lock`. */
struct dp_table {
  pthread_mutex_t lock;
  /* (slot << 32 | ip) -> struct dp_vm *, open addressing, linear probing */
  uint64_t *vm_keys;
  struct dp_vm **vm_vals;
  size_t vm_cap, vm_count;
  /* route key -> id */
  char **route_text;
  uint32_t *route_len;
  size_t route_count, route_alloc;
  uint32_t *route_index; /* open addressing: id + 1, 0 empty */
  size_t route_cap;
  /* rate limit buckets: (slot << 32 | ip) -> bucket */
  double per_ms, burst;
  size_t max_buckets;
  uint64_t *bucket_keys;
  double *bucket_tokens;
  double *bucket_at;
  uint32_t *bucket_refused; /* requests the bucket refused since it was made */
  size_t bucket_cap, bucket_count;
  /* counters, drained by the JS */
  struct dp_net_stats *nets;
  size_t net_cap;
  struct dp_vm_stats *vms;
  size_t vms_cap;
  struct dp_shared_resp **shared;
  size_t shared_count, shared_cap;
  uint64_t handovers;
  /* the request log: a ring the JS drains; records that do not fit are counted, not kept */
  atomic_int log_mode; /* DP_LOG_OFF, DP_LOG_UNKNOWN (callers that are no VM only), DP_LOG_ALL */
  struct dp_log_record *log;
  size_t log_head, log_count;
  uint64_t log_dropped;
};

extern struct dp_table dp_table;
/** Bytes of the VM blocks and shared blobs alive (dpInfo's tableBytes). */
extern atomic_size_t dp_table_bytes;

void dp_table_init(void);
/** Under the lock: the VM at (slot, ip) with a reference taken, or NULL. */
struct dp_vm *dp_vm_get(uint32_t slot, uint32_t ip);
/** Under the lock: publishes vm at (slot, ip) (NULL removes); returns the one it replaced (to unref outside). */
struct dp_vm *dp_vm_put(uint32_t slot, uint32_t ip, struct dp_vm *vm);
/** Under the lock: the id of a route key, -1 when none. */
int64_t dp_route_find(const char *key, size_t len);
/** Under the lock: the id of a route key, added when new; -1 when out of memory. */
int64_t dp_route_add(const char *key, size_t len);
/** Under the lock: takes one request from (slot, ip)'s bucket (now_ms: dp_mono_ms()): 0 when allowed, else seconds to wait (>= 1). */
uint32_t dp_rate_take(uint32_t slot, uint32_t ip, double now_ms);
/** A bucket's state without taking from it: false when the caller has none (never asked, or idle and dropped). */
bool dp_rate_peek(uint32_t slot, uint32_t ip, double now_ms, double *tokens, uint32_t *refused);
/** Under the lock: the shared response `id`, NULL when none. */
const struct dp_shared_resp *dp_shared_resp(uint32_t id);
/** Under the lock: registers a shared response (a reference to blob taken); its id, -1 when full. */
int64_t dp_shared_resp_add(uint16_t status, uint8_t type, struct dp_blob *blob);
/** Under the lock: the counters of network slot / VM key (NULL when out of memory). */
struct dp_net_stats *dp_net_stats(uint32_t slot);
struct dp_vm_stats *dp_vm_stats(uint32_t key);

/** Loop options (dp_loop.c). */
struct dp_options {
  int64_t headers_timeout_ms;
  int64_t keep_alive_timeout_ms;
  int64_t request_timeout_ms;
};

/** A connection the loop does not answer, for node:http: its fd, network slot and the bytes read. */
struct dp_handover {
  int fd;
  uint32_t slot;
  size_t len;
  char bytes[];
};

/** Called on the loop thread for each connection handed over (dp_napi.c queues it for JS). */
typedef void (*dp_handover_fn)(struct dp_handover *h);

int dp_loop_start(const struct dp_options *opts, dp_handover_fn handover);
/** Runs op on the loop thread and waits for it: listen (fd on slot), unlisten (slot; drain: let what is owed be answered), stop. 0 or an errno. */
enum { DP_CMD_LISTEN = 1, DP_CMD_UNLISTEN = 2, DP_CMD_STOP = 3, DP_CMD_DRAIN = 4 };
int dp_loop_command(int op, uint32_t slot, int fd, bool close_fd);
bool dp_loop_running(void);
/** Open connections and listeners (approximate: read without the loop's cooperation). */
size_t dp_loop_connections(void);

int64_t dp_now_ms(void);
/** The monotonic clock in ms: the one rate-limit buckets are kept on, whichever thread takes. */
double dp_mono_ms(void);

#endif
