// imds native data plane: the table the loop answers from (dp.h). Hash maps with open addressing
// and linear probing (deletions shift entries back, so no tombstones); everything here runs with
// dp_table.lock held, except the reference counting.
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dp.h"

struct dp_table dp_table = {.lock = PTHREAD_MUTEX_INITIALIZER};
atomic_size_t dp_table_bytes;

const uint32_t DP_BUCKET_US[DP_BUCKETS] = {100, 250, 500, 1000, 2500, 5000, 10000, 50000, 250000, 1000000};
const uint16_t DP_STATUS[DP_STATUSES] = {200, 400, 401, 403, 404, 405, 408, 429};

int dp_status_index(uint16_t status) {
  for (int i = 0; i < DP_STATUSES; i++)
    if (DP_STATUS[i] == status) return i;
  return -1;
}

int64_t dp_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double dp_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void dp_blob_unref(struct dp_blob *b) {
  if (b == NULL || atomic_fetch_sub(&b->refs, 1) != 1) return;
  atomic_fetch_sub(&dp_table_bytes, sizeof *b + b->len);
  free(b);
}

void dp_vm_unref(struct dp_vm *vm) {
  if (vm == NULL || atomic_fetch_sub(&vm->refs, 1) != 1) return;
  for (uint32_t i = 0; i < vm->nshared; i++) dp_blob_unref(vm->shared[i]);
  atomic_fetch_sub(&dp_table_bytes, vm->size);
  free(vm);
}

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

static uint64_t hash_text(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
  return h;
}

void dp_table_init(void) {
  struct dp_table *t = &dp_table;
  t->vm_cap = 1024;
  t->vm_keys = calloc(t->vm_cap, sizeof *t->vm_keys);
  t->vm_vals = calloc(t->vm_cap, sizeof *t->vm_vals);
  t->route_cap = 1024;
  t->route_index = calloc(t->route_cap, sizeof *t->route_index);
  t->bucket_cap = 1024;
  t->bucket_keys = calloc(t->bucket_cap, sizeof *t->bucket_keys);
  t->bucket_tokens = calloc(t->bucket_cap, sizeof *t->bucket_tokens);
  t->bucket_at = calloc(t->bucket_cap, sizeof *t->bucket_at);
  t->bucket_refused = calloc(t->bucket_cap, sizeof *t->bucket_refused);
}

// ---- VMs: key (slot << 32 | ip), 0 never used (slot 0 is not handed out) ----

static size_t vm_slot_of(uint64_t key) {
  size_t mask = dp_table.vm_cap - 1, i = mix(key) & mask;
  while (dp_table.vm_keys[i] != 0 && dp_table.vm_keys[i] != key) i = (i + 1) & mask;
  return i;
}

static bool vm_grow(void) {
  struct dp_table *t = &dp_table;
  size_t old_cap = t->vm_cap;
  uint64_t *old_keys = t->vm_keys;
  struct dp_vm **old_vals = t->vm_vals;
  uint64_t *keys = calloc(old_cap * 2, sizeof *keys);
  struct dp_vm **vals = calloc(old_cap * 2, sizeof *vals);
  if (keys == NULL || vals == NULL) {
    free(keys);
    free(vals);
    return false;
  }
  t->vm_keys = keys;
  t->vm_vals = vals;
  t->vm_cap = old_cap * 2;
  for (size_t i = 0; i < old_cap; i++) {
    if (old_keys[i] == 0) continue;
    size_t j = vm_slot_of(old_keys[i]);
    keys[j] = old_keys[i];
    vals[j] = old_vals[i];
  }
  free(old_keys);
  free(old_vals);
  return true;
}

struct dp_vm *dp_vm_get(uint32_t slot, uint32_t ip) {
  uint64_t key = (uint64_t)slot << 32 | ip;
  size_t i = vm_slot_of(key);
  struct dp_vm *vm = dp_table.vm_keys[i] == key ? dp_table.vm_vals[i] : NULL;
  if (vm != NULL) atomic_fetch_add(&vm->refs, 1);
  return vm;
}

struct dp_vm *dp_vm_put(uint32_t slot, uint32_t ip, struct dp_vm *vm) {
  struct dp_table *t = &dp_table;
  uint64_t key = (uint64_t)slot << 32 | ip;
  size_t i = vm_slot_of(key);
  if (t->vm_keys[i] == key) {
    struct dp_vm *old = t->vm_vals[i];
    if (vm != NULL) {
      t->vm_vals[i] = vm;
      return old;
    }
    // Remove, shifting back the entries of the probe run that follows.
    size_t mask = t->vm_cap - 1, hole = i, j = i;
    t->vm_keys[i] = 0;
    t->vm_vals[i] = NULL;
    t->vm_count--;
    for (;;) {
      j = (j + 1) & mask;
      if (t->vm_keys[j] == 0) break;
      size_t home = mix(t->vm_keys[j]) & mask;
      // Move j into the hole when its home is not in (hole, j] cyclically.
      bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
      if (stays) continue;
      t->vm_keys[hole] = t->vm_keys[j];
      t->vm_vals[hole] = t->vm_vals[j];
      t->vm_keys[j] = 0;
      t->vm_vals[j] = NULL;
      hole = j;
    }
    return old;
  }
  if (vm == NULL) return NULL;
  if ((t->vm_count + 1) * 2 > t->vm_cap) {
    if (!vm_grow()) return vm;  // not published: the caller frees it (and reports ENOMEM)
    i = vm_slot_of(key);
  }
  t->vm_keys[i] = key;
  t->vm_vals[i] = vm;
  t->vm_count++;
  return NULL;
}

// ---- routes ----

static size_t route_slot_of(const char *key, size_t len) {
  struct dp_table *t = &dp_table;
  size_t mask = t->route_cap - 1, i = hash_text(key, len) & mask;
  for (;; i = (i + 1) & mask) {
    uint32_t id = t->route_index[i];
    if (id == 0) return i;
    if (t->route_len[id - 1] == len && memcmp(t->route_text[id - 1], key, len) == 0) return i;
  }
}

int64_t dp_route_find(const char *key, size_t len) {
  uint32_t id = dp_table.route_index[route_slot_of(key, len)];
  return id == 0 ? -1 : (int64_t)id - 1;
}

int64_t dp_route_add(const char *key, size_t len) {
  struct dp_table *t = &dp_table;
  int64_t found = dp_route_find(key, len);
  if (found >= 0) return found;
  if (t->route_count >= 65534) return -1;  // response indexes are 16-bit; so are route ids, to be safe
  if ((t->route_count + 1) * 2 > t->route_cap) {
    uint32_t *index = calloc(t->route_cap * 2, sizeof *index);
    if (index == NULL) return -1;
    free(t->route_index);
    t->route_index = index;
    t->route_cap *= 2;
    for (size_t id = 0; id < t->route_count; id++) t->route_index[route_slot_of(t->route_text[id], t->route_len[id])] = (uint32_t)id + 1;
  }
  if (t->route_count == t->route_alloc) {
    size_t n = t->route_alloc == 0 ? 256 : t->route_alloc * 2;
    char **text = realloc(t->route_text, n * sizeof *text);
    if (text == NULL) return -1;
    t->route_text = text;
    uint32_t *lens = realloc(t->route_len, n * sizeof *lens);
    if (lens == NULL) return -1;
    t->route_len = lens;
    t->route_alloc = n;
  }
  char *copy = malloc(len + 1);
  if (copy == NULL) return -1;
  memcpy(copy, key, len);
  copy[len] = 0;
  size_t id = t->route_count++;
  t->route_text[id] = copy;
  t->route_len[id] = (uint32_t)len;
  t->route_index[route_slot_of(key, len)] = (uint32_t)id + 1;
  return (int64_t)id;
}

// ---- rate limit: token buckets as src/security/rate-limit.ts ----

static size_t bucket_slot_of(uint64_t key) {
  size_t mask = dp_table.bucket_cap - 1, i = mix(key) & mask;
  while (dp_table.bucket_keys[i] != 0 && dp_table.bucket_keys[i] != key) i = (i + 1) & mask;
  return i;
}

enum { KEEP_ALL, DROP_REFILLED, DROP_HALF };

/** Rebuilds the bucket map at `cap`: every bucket, those not refilled (idle callers), or every other one. */
static bool buckets_rebuild(size_t cap, double now_ms, int mode) {
  struct dp_table *t = &dp_table;
  uint64_t *keys = calloc(cap, sizeof *keys);
  double *tokens = calloc(cap, sizeof *tokens), *at = calloc(cap, sizeof *at);
  uint32_t *refused = calloc(cap, sizeof *refused);
  if (keys == NULL || tokens == NULL || at == NULL || refused == NULL) {
    free(keys);
    free(tokens);
    free(at);
    free(refused);
    return false;
  }
  uint64_t *old_keys = t->bucket_keys;
  double *old_tokens = t->bucket_tokens, *old_at = t->bucket_at;
  uint32_t *old_refused = t->bucket_refused;
  size_t old_cap = t->bucket_cap, kept = 0, seen = 0;
  t->bucket_keys = keys;
  t->bucket_tokens = tokens;
  t->bucket_at = at;
  t->bucket_refused = refused;
  t->bucket_cap = cap;
  for (size_t i = 0; i < old_cap; i++) {
    if (old_keys[i] == 0) continue;
    if (mode == DROP_REFILLED && old_tokens[i] + (now_ms - old_at[i]) * t->per_ms >= t->burst) continue;
    if (mode == DROP_HALF && (seen++ & 1) == 0) continue;
    size_t j = bucket_slot_of(old_keys[i]);
    keys[j] = old_keys[i];
    tokens[j] = old_tokens[i];
    at[j] = old_at[i];
    refused[j] = old_refused[i];
    kept++;
  }
  t->bucket_count = kept;
  free(old_keys);
  free(old_tokens);
  free(old_at);
  free(old_refused);
  return true;
}

uint32_t dp_rate_take(uint32_t slot, uint32_t ip, double now_ms) {
  struct dp_table *t = &dp_table;
  if (t->per_ms <= 0) return 0;
  uint64_t key = (uint64_t)slot << 32 | ip;
  size_t i = bucket_slot_of(key);
  if (t->bucket_keys[i] != key) {
    if (t->bucket_count >= t->max_buckets) buckets_rebuild(t->bucket_cap, now_ms, DROP_REFILLED);
    if (t->bucket_count >= t->max_buckets) buckets_rebuild(t->bucket_cap, now_ms, DROP_HALF);
    if ((t->bucket_count + 1) * 2 > t->bucket_cap && !buckets_rebuild(t->bucket_cap * 2, now_ms, KEEP_ALL)) return 0;
    i = bucket_slot_of(key);
    t->bucket_keys[i] = key;
    t->bucket_tokens[i] = t->burst;
    t->bucket_at[i] = now_ms;
    t->bucket_refused[i] = 0;
    t->bucket_count++;
  } else {
    double refilled = t->bucket_tokens[i] + (now_ms - t->bucket_at[i]) * t->per_ms;
    t->bucket_tokens[i] = refilled < t->burst ? refilled : t->burst;
    t->bucket_at[i] = now_ms;
  }
  if (t->bucket_tokens[i] >= 1) {
    t->bucket_tokens[i] -= 1;
    return 0;
  }
  if (t->bucket_refused[i] < UINT32_MAX) t->bucket_refused[i]++;
  double wait = (1 - t->bucket_tokens[i]) / t->per_ms / 1000;
  uint32_t secs = (uint32_t)wait;
  if ((double)secs < wait) secs++;
  return secs < 1 ? 1 : secs;
}

bool dp_rate_peek(uint32_t slot, uint32_t ip, double now_ms, double *tokens, uint32_t *refused) {
  struct dp_table *t = &dp_table;
  if (t->per_ms <= 0) return false;
  uint64_t key = (uint64_t)slot << 32 | ip;
  size_t i = bucket_slot_of(key);
  if (t->bucket_keys[i] != key) return false;
  double refilled = t->bucket_tokens[i] + (now_ms - t->bucket_at[i]) * t->per_ms;
  *tokens = refilled < t->burst ? refilled : t->burst;
  *refused = t->bucket_refused[i];
  return true;
}

// ---- counters ----

/** Grows *items (of `size` bytes each, *cap of them) to hold index `at`, the new ones zeroed; false when out of memory. */
static bool grow_zeroed(void **items, size_t *cap, size_t size, size_t at, size_t first) {
  if (at < *cap) return true;
  size_t n = *cap == 0 ? first : *cap;
  while (n <= at) n *= 2;
  char *more = realloc(*items, n * size);
  if (more == NULL) return false;
  memset(more + *cap * size, 0, (n - *cap) * size);
  *items = more;
  *cap = n;
  return true;
}

struct dp_net_stats *dp_net_stats(uint32_t slot) {
  struct dp_table *t = &dp_table;
  return grow_zeroed((void **)&t->nets, &t->net_cap, sizeof *t->nets, slot, 64) ? &t->nets[slot] : NULL;
}

struct dp_vm_stats *dp_vm_stats(uint32_t key) {
  struct dp_table *t = &dp_table;
  return grow_zeroed((void **)&t->vms, &t->vms_cap, sizeof *t->vms, key, 1024) ? &t->vms[key] : NULL;
}

// ---- shared responses ----

const struct dp_shared_resp *dp_shared_resp(uint32_t id) { return id < dp_table.shared_count ? dp_table.shared[id] : NULL; }

int64_t dp_shared_resp_add(uint16_t status, uint8_t type, struct dp_blob *blob) {
  struct dp_table *t = &dp_table;
  if (t->shared_count >= DP_MAX_SHARED) return -1;
  if (t->shared_count == t->shared_cap) {
    size_t cap = t->shared_cap == 0 ? 64 : t->shared_cap * 2;
    struct dp_shared_resp **more = realloc(t->shared, cap * sizeof *more);
    if (more == NULL) return -1;
    t->shared = more;
    t->shared_cap = cap;
  }
  struct dp_shared_resp *sh = calloc(1, sizeof *sh);
  if (sh == NULL) return -1;
  atomic_fetch_add(&blob->refs, 1);
  sh->blob = blob;
  sh->seg = (struct dp_seg){blob->data, blob->len};
  sh->resp = (struct dp_resp){.status = status, .type = type, .nsegs = 1, .seed_at = DP_NO_SEED, .body_len = blob->len, .first_seg = 0};
  t->shared[t->shared_count] = sh;
  return (int64_t)t->shared_count++;
}
