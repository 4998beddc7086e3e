// imds native data plane seen from JS (src/server/native-plane.ts wraps it; dp.h says who owns what).
//
// dpStart({ headersTimeoutMs, keepAliveTimeoutMs, requestTimeoutMs }, onHandover(slot, fd, bytes))
//   Starts the loop thread. onHandover runs on the JS thread for each connection the loop does not
//   answer: the connection's fd (now the caller's) and the bytes read from it.
// dpListen(slot, fd) / dpUnlisten(slot, closeFd, drain) / dpStop()
//   The loop serves fd as network `slot`'s listening socket / stops accepting on it (the socket
//   closed when closeFd) and closes its connections, or with drain only the idle ones (the others
//   close after their answer) / stops everything and ends the thread.
// dpRateLimit(perSecond, burst, maxBuckets), dpRateTake(slot, ip) -> seconds (0: allowed),
// dpRatePeek(slot, ip) -> { tokens, refused } | undefined (the bucket as it is, nothing taken)
//   The per-caller token buckets the loop and node:http share, on the loop's monotonic clock.
// dpBlob(buffer) -> external
//   Bytes copied once into a shared blob, for responses many VMs share.
// dpRoute(key) -> id
//   The id of a route key (imds_route_key's form), added when new.
// dpSharedResponse(status, type, blob) -> id (-1 when the table of them is full)
//   A response many VMs give alike, kept once and for good; a route names it as 0x8000 | id.
// dpSetVm(slot, ip, key, flags, responses, routes) / dpRemoveVm(slot, ip)
//   Publishes (replaces) / removes the VM at (slot, ip): responses is [[status, type, seedAt, ...segs]]
//   with each seg a Buffer (copied into the VM's block, once) or a dpBlob; routes a Uint32Array of
//   [routeId, code] pairs, code its response's index + 1 or 0x8000 | a shared response's id.
// dpSetGlobal(responses)
//   The answers for every caller: GET / , 404, 403 (endpoint disabled), 429 — in that order.
// dpDrain() -> { nets, vms, handovers }
//   The counters since the last drain, zeroed: nets a flat array per network slot of [slot, count
//   per status (DP_STATUS order)..., per bucket..., sumSeconds, count, unknownCallers, rateLimited,
//   endpointDisabled]; vms a flat
//   array of [key, requests, noToken, firstSeenMs, lastSeenMs, lastStatus] for VMs seen since.
// dpLogRequests(mode), dpDrainLog() -> { records: [{ slot, ip, key, method, status, path, ms, bytes, at }], dropped }
//   The request log: with mode 2 each answer, with mode 1 only those to callers that are no VM
//   (key -1), is recorded (the target's first 240 bytes, the body's bytes written, the wall-clock time in
//   ms) in a ring of 4096 the JS drains; what does not fit is counted in `dropped`. 0: off.
// mallocTrim()
//   Gives the C heap's free memory back to the system (malloc_trim) after a big table change.
// dpInfo() -> { running, connections, vms, routes, buckets, tableBytes }

#include <node_api.h>

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "dp.h"

extern struct dp_vm *dp_global;

static napi_threadsafe_function handover_tsfn;

#define ARGS(n)                                                                     \
  size_t argc = n;                                                                  \
  napi_value argv[n];                                                               \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < n) \
    return imds_throw_type(env, "missing arguments");

static bool get_u32(napi_env env, napi_value v, uint32_t *out) { return napi_get_value_uint32(env, v, out) == napi_ok; }

static bool get_i64(napi_env env, napi_value obj, const char *name, int64_t *out) {
  napi_value v;
  return napi_get_named_property(env, obj, name, &v) == napi_ok && napi_get_value_int64(env, v, out) == napi_ok && *out > 0;
}

static napi_value undefined(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

static void call_handover(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)context;
  struct dp_handover *h = data;
  if (env == NULL || js_cb == NULL) {
    close(h->fd);
    free(h);
    return;
  }
  napi_value argv[3], global;
  napi_create_uint32(env, h->slot, &argv[0]);
  napi_create_int32(env, h->fd, &argv[1]);
  void *copy;
  napi_create_buffer_copy(env, h->len, h->bytes, &copy, &argv[2]);
  free(h);
  napi_get_global(env, &global);
  napi_call_function(env, global, js_cb, 3, argv, NULL);
}

static void queue_handover(struct dp_handover *h) {
  if (napi_call_threadsafe_function(handover_tsfn, h, napi_tsfn_nonblocking) != napi_ok) {
    close(h->fd);
    free(h);
  }
}

static napi_value dp_start(napi_env env, napi_callback_info info) {
  ARGS(2);
  struct dp_options opts;
  if (!get_i64(env, argv[0], "headersTimeoutMs", &opts.headers_timeout_ms) ||
      !get_i64(env, argv[0], "keepAliveTimeoutMs", &opts.keep_alive_timeout_ms) ||
      !get_i64(env, argv[0], "requestTimeoutMs", &opts.request_timeout_ms))
    return imds_throw_type(env, "dpStart: headersTimeoutMs, keepAliveTimeoutMs and requestTimeoutMs must be positive integers");
  if (dp_loop_running()) return imds_throw_errno(env, "dpStart", EALREADY);
  napi_value name;
  napi_create_string_utf8(env, "imds-data-plane", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[1], NULL, name, 0, 1, NULL, NULL, NULL, call_handover, &handover_tsfn) != napi_ok)
    return imds_throw_type(env, "dpStart: onHandover must be a function");
  napi_unref_threadsafe_function(env, handover_tsfn);  // the loop does not keep the process alive
  int err = dp_loop_start(&opts, queue_handover);
  if (err != 0) {
    napi_release_threadsafe_function(handover_tsfn, napi_tsfn_abort);
    return imds_throw_errno(env, "dpStart", err);
  }
  return undefined(env);
}

static napi_value dp_listen(napi_env env, napi_callback_info info) {
  ARGS(2);
  uint32_t slot, fd;
  if (!get_u32(env, argv[0], &slot) || !get_u32(env, argv[1], &fd) || slot == 0) return imds_throw_type(env, "dpListen(slot > 0, fd)");
  int err = dp_loop_command(DP_CMD_LISTEN, slot, (int)fd, false);
  return err != 0 ? imds_throw_errno(env, "dpListen", err) : undefined(env);
}

static napi_value dp_unlisten(napi_env env, napi_callback_info info) {
  ARGS(3);
  uint32_t slot;
  bool close_fd = false, drain = false;
  if (!get_u32(env, argv[0], &slot) || napi_get_value_bool(env, argv[1], &close_fd) != napi_ok ||
      napi_get_value_bool(env, argv[2], &drain) != napi_ok)
    return imds_throw_type(env, "dpUnlisten(slot, closeFd, drain)");
  int err = dp_loop_command(drain ? DP_CMD_DRAIN : DP_CMD_UNLISTEN, slot, -1, close_fd);
  napi_value out;
  napi_get_boolean(env, err == 0, &out);
  return out;
}

static napi_value dp_stop(napi_env env, napi_callback_info info) {
  (void)info;
  if (!dp_loop_running()) return undefined(env);
  dp_loop_command(DP_CMD_STOP, 0, -1, false);
  napi_release_threadsafe_function(handover_tsfn, napi_tsfn_release);
  return undefined(env);
}

static napi_value dp_rate_limit(napi_env env, napi_callback_info info) {
  ARGS(3);
  double per_second, burst, max_buckets;
  if (napi_get_value_double(env, argv[0], &per_second) != napi_ok || napi_get_value_double(env, argv[1], &burst) != napi_ok ||
      napi_get_value_double(env, argv[2], &max_buckets) != napi_ok || max_buckets < 2)
    return imds_throw_type(env, "dpRateLimit(perSecond, burst, maxBuckets)");
  pthread_mutex_lock(&dp_table.lock);
  dp_table.per_ms = per_second / 1000;
  dp_table.burst = burst;
  dp_table.max_buckets = (size_t)max_buckets;
  pthread_mutex_unlock(&dp_table.lock);
  return undefined(env);
}

static napi_value dp_rate_take_js(napi_env env, napi_callback_info info) {
  ARGS(2);
  uint32_t slot, ip;
  if (!get_u32(env, argv[0], &slot) || !get_u32(env, argv[1], &ip)) return imds_throw_type(env, "dpRateTake(slot, ip)");
  pthread_mutex_lock(&dp_table.lock);
  uint32_t wait = dp_rate_take(slot, ip, dp_mono_ms());
  pthread_mutex_unlock(&dp_table.lock);
  napi_value out;
  napi_create_uint32(env, wait, &out);
  return out;
}

static napi_value dp_rate_peek_js(napi_env env, napi_callback_info info) {
  ARGS(2);
  uint32_t slot, ip, refused = 0;
  double tokens = 0;
  if (!get_u32(env, argv[0], &slot) || !get_u32(env, argv[1], &ip)) return imds_throw_type(env, "dpRatePeek(slot, ip)");
  pthread_mutex_lock(&dp_table.lock);
  bool found = dp_rate_peek(slot, ip, dp_mono_ms(), &tokens, &refused);
  pthread_mutex_unlock(&dp_table.lock);
  if (!found) return undefined(env);
  napi_value out, v;
  napi_create_object(env, &out);
  napi_create_double(env, tokens, &v);
  napi_set_named_property(env, out, "tokens", v);
  napi_create_uint32(env, refused, &v);
  napi_set_named_property(env, out, "refused", v);
  return out;
}

static void blob_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  dp_blob_unref(data);
}

static struct dp_blob *blob_copy(const void *data, size_t len) {
  struct dp_blob *b = malloc(sizeof *b + len);
  if (b == NULL) return NULL;
  atomic_init(&b->refs, 1);
  b->len = (uint32_t)len;
  memcpy(b->data, data, len);
  atomic_fetch_add(&dp_table_bytes, sizeof *b + len);
  return b;
}

static napi_value dp_blob(napi_env env, napi_callback_info info) {
  ARGS(1);
  void *data;
  size_t len;
  bool is_buffer = false;
  if (napi_is_buffer(env, argv[0], &is_buffer) != napi_ok || !is_buffer || napi_get_buffer_info(env, argv[0], &data, &len) != napi_ok)
    return imds_throw_type(env, "dpBlob(buffer)");
  struct dp_blob *b = blob_copy(data, len);
  if (b == NULL) return imds_throw_errno(env, "dpBlob", ENOMEM);
  napi_value out;
  napi_create_external(env, b, blob_finalize, NULL, &out);
  return out;
}

/** One segment as given: a dpBlob (shared) or a Buffer's bytes. */
struct given {
  struct dp_blob *blob;
  const char *data;
  uint32_t len;
};

/** Reads one segment value; false when it is neither a dpBlob nor a Buffer. */
static bool read_segment(napi_env env, napi_value v, struct given *g) {
  napi_valuetype type;
  napi_typeof(env, v, &type);
  if (type == napi_external) {
    void *ext;
    if (napi_get_value_external(env, v, &ext) != napi_ok) return false;
    g->blob = ext;
    g->data = g->blob->data;
    g->len = g->blob->len;
    return true;
  }
  bool is_buffer = false;
  void *data;
  size_t len;
  if (napi_is_buffer(env, v, &is_buffer) != napi_ok || !is_buffer || napi_get_buffer_info(env, v, &data, &len) != napi_ok ||
      len > UINT32_MAX)
    return false;
  g->blob = NULL;
  g->data = data;
  g->len = (uint32_t)len;
  return true;
}

static size_t align8(size_t n) { return (n + 7) & ~(size_t)7; }

/**
 * Builds a VM (not yet published) from [[status, type, seedAt, ...segs]] and, when given, the
 * [routeId, responseIndex] pairs: NULL with an error thrown when they do not fit. Two passes: the
 * sizes, then one allocation filled.
 */
static struct dp_vm *build_vm(napi_env env, napi_value list, const uint32_t *pairs, size_t npairs) {
  uint32_t n;
  if (napi_get_array_length(env, list, &n) != napi_ok || n > DP_MAX_RESPS)
    return imds_throw_type(env, "responses must be an array of at most 32766"), NULL;
  // Pass 1: every segment read and checked; the owned bytes counted once per Buffer.
  struct given *given = NULL;
  uint32_t ngiven = 0, cap = 0, nshared = 0, max_route = 0;
  size_t owned = 0;
  struct dp_resp *heads = calloc(n == 0 ? 1 : n, sizeof *heads);
  const char *fail = heads == NULL ? "out of memory" : NULL;
  for (uint32_t i = 0; i < n && fail == NULL; i++) {
    napi_value item, v;
    uint32_t len, status, type, seed_at;
    if (napi_get_element(env, list, i, &item) != napi_ok || napi_get_array_length(env, item, &len) != napi_ok || len < 3 ||
        len > 3 + DP_MAX_SEGS) {
      fail = "each response is [status, type, seedAt, ...segments]";
      break;
    }
    napi_get_element(env, item, 0, &v);
    bool fine = get_u32(env, v, &status);
    napi_get_element(env, item, 1, &v);
    fine = fine && get_u32(env, v, &type);
    napi_get_element(env, item, 2, &v);
    fine = fine && get_u32(env, v, &seed_at);
    if (!fine || status < 100 || status > 599 || type >= DP_TYPES || (seed_at != DP_NO_SEED && seed_at > len - 3)) {
      fail = "a response's status, type or seedAt is out of range";
      break;
    }
    heads[i] = (struct dp_resp){.status = (uint16_t)status, .type = (uint8_t)type, .seed_at = (uint8_t)seed_at, .first_seg = ngiven,
                                .body_len = seed_at == DP_NO_SEED ? 0 : DP_SEED_LEN};
    for (uint32_t s = 3; s < len && fail == NULL; s++) {
      if (ngiven == cap) {
        cap = cap == 0 ? 32 : cap * 2;
        struct given *more = realloc(given, cap * sizeof *given);
        if (more == NULL) {
          fail = "out of memory";
          break;
        }
        given = more;
      }
      struct given *g = &given[ngiven];
      napi_get_element(env, item, s, &v);
      if (!read_segment(env, v, g)) {
        fail = "a response segment must be a Buffer or a dpBlob";
        break;
      }
      bool seen = false;
      for (uint32_t k = 0; k < ngiven && !seen && g->blob == NULL; k++) seen = given[k].blob == NULL && given[k].data == g->data && given[k].len == g->len;
      if (g->blob != NULL) nshared++;
      else if (!seen) owned += g->len;
      heads[i].nsegs++;
      heads[i].body_len += g->len;
      ngiven++;
    }
  }
  for (size_t i = 0; i < npairs && fail == NULL; i += 2) {
    uint32_t code = pairs[i + 1];
    bool shared = code & DP_ROUTE_SHARED;
    if (code == 0 || code > 0xffff || (!shared && code > n) || pairs[i] >= 65535) fail = "a route names a response that does not exist";
    else if (pairs[i] + 1 > max_route) max_route = pairs[i] + 1;
  }
  size_t size = sizeof(struct dp_vm) + align8(max_route * sizeof(uint16_t)) + align8(n * sizeof(struct dp_resp)) + ngiven * sizeof(struct dp_seg) +
                nshared * sizeof(struct dp_blob *) + owned;
  struct dp_vm *vm = fail == NULL ? calloc(1, size) : NULL;
  if (fail == NULL && vm == NULL) fail = "out of memory";
  if (fail != NULL) {
    free(heads);
    free(given);
    return imds_throw_type(env, fail), NULL;
  }
  // Pass 2: the block laid out and filled.
  atomic_init(&vm->refs, 1);
  vm->size = (uint32_t)size;
  atomic_fetch_add(&dp_table_bytes, size);
  char *at = vm->mem;
  vm->routes = (uint16_t *)at;
  at += align8(max_route * sizeof(uint16_t));
  vm->resps = (struct dp_resp *)at;
  at += align8(n * sizeof(struct dp_resp));
  vm->segs = (struct dp_seg *)at;
  at += ngiven * sizeof(struct dp_seg);
  vm->shared = (struct dp_blob **)at;
  at += nshared * sizeof(struct dp_blob *);
  vm->nroutes = max_route;
  vm->nresps = n;
  vm->nsegs = ngiven;
  memcpy(vm->resps, heads, n * sizeof *heads);
  for (uint32_t k = 0; k < ngiven; k++) {
    struct given *g = &given[k];
    if (g->blob != NULL) {
      atomic_fetch_add(&g->blob->refs, 1);
      vm->shared[vm->nshared++] = g->blob;
      vm->segs[k] = (struct dp_seg){g->blob->data, g->blob->len};
      continue;
    }
    const char *copy = NULL;
    for (uint32_t j = 0; j < k && copy == NULL; j++)
      if (given[j].blob == NULL && given[j].data == g->data && given[j].len == g->len) copy = vm->segs[j].data;
    if (copy == NULL) {
      if (g->len > 0) memcpy(at, g->data, g->len);
      copy = at;
      at += g->len;
    }
    vm->segs[k] = (struct dp_seg){copy, g->len};
  }
  for (size_t i = 0; i < npairs; i += 2) vm->routes[pairs[i]] = (uint16_t)pairs[i + 1];
  free(heads);
  free(given);
  return vm;
}

static napi_value dp_set_global(napi_env env, napi_callback_info info) {
  ARGS(1);
  struct dp_vm *g = build_vm(env, argv[0], NULL, 0);
  if (g == NULL) return NULL;
  if (g->nresps != 4) {
    dp_vm_unref(g);
    return imds_throw_type(env, "dpSetGlobal needs four responses: /, 404, 403, 429");
  }
  pthread_mutex_lock(&dp_table.lock);
  struct dp_vm *old = dp_global;
  dp_global = g;
  pthread_mutex_unlock(&dp_table.lock);
  dp_vm_unref(old);
  return undefined(env);
}

static napi_value dp_shared_response(napi_env env, napi_callback_info info) {
  ARGS(3);
  uint32_t status, type;
  void *ext = NULL;
  napi_valuetype vt;
  napi_typeof(env, argv[2], &vt);
  if (!get_u32(env, argv[0], &status) || !get_u32(env, argv[1], &type) || status < 100 || status > 599 || type >= DP_TYPES ||
      vt != napi_external || napi_get_value_external(env, argv[2], &ext) != napi_ok)
    return imds_throw_type(env, "dpSharedResponse(status, type, blob)");
  pthread_mutex_lock(&dp_table.lock);
  int64_t id = dp_shared_resp_add((uint16_t)status, (uint8_t)type, ext);
  pthread_mutex_unlock(&dp_table.lock);
  napi_value out;
  napi_create_int32(env, (int32_t)id, &out);
  return out;
}

static napi_value dp_route(napi_env env, napi_callback_info info) {
  ARGS(1);
  char key[8200];
  size_t len;
  if (napi_get_value_string_latin1(env, argv[0], key, sizeof key, &len) != napi_ok || len == 0 || len >= sizeof key - 1)
    return imds_throw_type(env, "dpRoute(key)");
  pthread_mutex_lock(&dp_table.lock);
  int64_t id = dp_route_add(key, len);
  pthread_mutex_unlock(&dp_table.lock);
  if (id < 0) return imds_throw_errno(env, "dpRoute", ENOMEM);
  napi_value out;
  napi_create_uint32(env, (uint32_t)id, &out);
  return out;
}

static napi_value dp_set_vm(napi_env env, napi_callback_info info) {
  ARGS(6);
  uint32_t slot, ip, key, flags;
  if (!get_u32(env, argv[0], &slot) || !get_u32(env, argv[1], &ip) || !get_u32(env, argv[2], &key) || !get_u32(env, argv[3], &flags) ||
      slot == 0)
    return imds_throw_type(env, "dpSetVm(slot > 0, ip, key, flags, responses, routes)");
  napi_typedarray_type ta_type;
  size_t pairs_len;
  void *pairs_data;
  if (napi_get_typedarray_info(env, argv[5], &ta_type, &pairs_len, &pairs_data, NULL, NULL) != napi_ok || ta_type != napi_uint32_array ||
      pairs_len % 2 != 0)
    return imds_throw_type(env, "dpSetVm: routes must be a Uint32Array of [routeId, responseIndex] pairs");
  struct dp_vm *vm = build_vm(env, argv[4], pairs_data, pairs_len);
  if (vm == NULL) return NULL;
  vm->key = key;
  vm->flags = flags;
  pthread_mutex_lock(&dp_table.lock);
  struct dp_vm *old = dp_vm_put(slot, ip, vm);
  pthread_mutex_unlock(&dp_table.lock);
  if (old == vm) {  // not published (no memory for a larger map)
    dp_vm_unref(vm);
    return imds_throw_errno(env, "dpSetVm", ENOMEM);
  }
  dp_vm_unref(old);
  return undefined(env);
}

static napi_value dp_remove_vm(napi_env env, napi_callback_info info) {
  ARGS(2);
  uint32_t slot, ip;
  if (!get_u32(env, argv[0], &slot) || !get_u32(env, argv[1], &ip)) return imds_throw_type(env, "dpRemoveVm(slot, ip)");
  pthread_mutex_lock(&dp_table.lock);
  struct dp_vm *old = dp_vm_put(slot, ip, NULL);
  pthread_mutex_unlock(&dp_table.lock);
  dp_vm_unref(old);
  return undefined(env);
}

static void push(napi_env env, napi_value array, uint32_t *at, double value) {
  napi_value v;
  napi_create_double(env, value, &v);
  napi_set_element(env, array, (*at)++, v);
}

static napi_value dp_drain(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out, nets, vms, v;
  napi_create_object(env, &out);
  napi_create_array(env, &nets);
  napi_create_array(env, &vms);
  uint32_t n = 0, m = 0;
  double handovers = 0;
  {
    pthread_mutex_lock(&dp_table.lock);
    for (size_t s = 0; s < dp_table.net_cap; s++) {
      struct dp_net_stats *ns = &dp_table.nets[s];
      if (ns->count == 0 && ns->unknown_callers == 0 && ns->rejects[DP_REJECT_RATE] == 0 && ns->rejects[DP_REJECT_DISABLED] == 0) continue;
      push(env, nets, &n, (double)s);
      for (int i = 0; i < DP_STATUSES; i++) push(env, nets, &n, (double)ns->by_status[i]);
      for (int i = 0; i <= DP_BUCKETS; i++) push(env, nets, &n, (double)ns->buckets[i]);
      push(env, nets, &n, (double)ns->sum_ns / 1e9);
      push(env, nets, &n, (double)ns->count);
      push(env, nets, &n, (double)ns->unknown_callers);
      for (int i = 0; i < DP_REJECTS; i++) push(env, nets, &n, (double)ns->rejects[i]);
      memset(ns, 0, sizeof *ns);
    }
    for (size_t k = 0; k < dp_table.vms_cap; k++) {
      struct dp_vm_stats *s = &dp_table.vms[k];
      if (!s->dirty && s->no_token == 0) continue;
      push(env, vms, &m, (double)k);
      push(env, vms, &m, (double)s->requests);
      push(env, vms, &m, (double)s->no_token);
      push(env, vms, &m, (double)s->first_seen_ms);
      push(env, vms, &m, (double)s->last_seen_ms);
      push(env, vms, &m, (double)s->last_status);
      memset(s, 0, sizeof *s);
    }
    handovers = (double)dp_table.handovers;
    dp_table.handovers = 0;
    pthread_mutex_unlock(&dp_table.lock);
  }
  napi_set_named_property(env, out, "nets", nets);
  napi_set_named_property(env, out, "vms", vms);
  napi_create_double(env, handovers, &v);
  napi_set_named_property(env, out, "handovers", v);
  return out;
}

static napi_value dp_log_requests(napi_env env, napi_callback_info info) {
  ARGS(1);
  int32_t mode = 0;
  if (napi_get_value_int32(env, argv[0], &mode) != napi_ok || mode < DP_LOG_OFF || mode > DP_LOG_ALL)
    return imds_throw_type(env, "dpLogRequests(mode: 0 | 1 | 2)");
  atomic_store(&dp_table.log_mode, mode);
  return undefined(env);
}

static napi_value dp_drain_log(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out, records, v;
  napi_create_object(env, &out);
  napi_create_array(env, &records);
  pthread_mutex_lock(&dp_table.lock);
  uint32_t n = 0;
  for (size_t i = 0; i < dp_table.log_count; i++) {
    const struct dp_log_record *r = &dp_table.log[(dp_table.log_head + i) % DP_LOG_RING];
    napi_value rec;
    napi_create_object(env, &rec);
    napi_create_uint32(env, r->slot, &v);
    napi_set_named_property(env, rec, "slot", v);
    napi_create_uint32(env, r->ip, &v);
    napi_set_named_property(env, rec, "ip", v);
    napi_create_double(env, r->key == UINT32_MAX ? -1 : (double)r->key, &v);
    napi_set_named_property(env, rec, "key", v);
    napi_create_uint32(env, r->status, &v);
    napi_set_named_property(env, rec, "status", v);
    napi_create_string_utf8(env, r->method == 2 ? "HEAD" : "GET", NAPI_AUTO_LENGTH, &v);
    napi_set_named_property(env, rec, "method", v);
    napi_create_string_latin1(env, r->path, r->path_len, &v);
    napi_set_named_property(env, rec, "path", v);
    napi_create_double(env, (double)r->ns / 1e6, &v);
    napi_set_named_property(env, rec, "ms", v);
    napi_create_uint32(env, r->bytes, &v);
    napi_set_named_property(env, rec, "bytes", v);
    napi_create_double(env, (double)r->at_ms, &v);
    napi_set_named_property(env, rec, "at", v);
    napi_set_element(env, records, n++, rec);
  }
  dp_table.log_head = dp_table.log_count = 0;
  double dropped = (double)dp_table.log_dropped;
  dp_table.log_dropped = 0;
  pthread_mutex_unlock(&dp_table.lock);
  napi_set_named_property(env, out, "records", records);
  napi_create_double(env, dropped, &v);
  napi_set_named_property(env, out, "dropped", v);
  return out;
}

static napi_value dp_trim(napi_env env, napi_callback_info info) {
  (void)info;
  malloc_trim(0);
  return undefined(env);
}

static napi_value dp_info(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out, v;
  napi_create_object(env, &out);
  size_t vms = 0, routes = 0, buckets = 0;
  {
    pthread_mutex_lock(&dp_table.lock);
    vms = dp_table.vm_count;
    routes = dp_table.route_count;
    buckets = dp_table.bucket_count;
    pthread_mutex_unlock(&dp_table.lock);
  }
  napi_get_boolean(env, dp_loop_running(), &v);
  napi_set_named_property(env, out, "running", v);
  napi_create_double(env, (double)dp_loop_connections(), &v);
  napi_set_named_property(env, out, "connections", v);
  napi_create_double(env, (double)vms, &v);
  napi_set_named_property(env, out, "vms", v);
  napi_create_double(env, (double)routes, &v);
  napi_set_named_property(env, out, "routes", v);
  napi_create_double(env, (double)buckets, &v);
  napi_set_named_property(env, out, "buckets", v);
  napi_create_double(env, (double)atomic_load(&dp_table_bytes), &v);
  napi_set_named_property(env, out, "tableBytes", v);
  return out;
}

void imds_register_data_plane(napi_env env, napi_value exports) {
  static bool initialised = false;
  if (!initialised) dp_table_init();
  initialised = true;
  static const struct {
    const char *name;
    napi_callback fn;
  } FNS[] = {
      {"dpStart", dp_start},         {"dpListen", dp_listen},   {"dpUnlisten", dp_unlisten}, {"dpStop", dp_stop},
      {"dpRateLimit", dp_rate_limit}, {"dpRateTake", dp_rate_take_js},
      {"dpRatePeek", dp_rate_peek_js}, {"dpBlob", dp_blob}, {"dpRoute", dp_route},
      {"dpSetVm", dp_set_vm},        {"dpSharedResponse", dp_shared_response},        {"dpRemoveVm", dp_remove_vm}, {"dpSetGlobal", dp_set_global}, {"dpDrain", dp_drain},
      {"dpInfo", dp_info},           {"dpLogRequests", dp_log_requests}, {"dpDrainLog", dp_drain_log}, {"mallocTrim", dp_trim},
  };
  for (size_t i = 0; i < sizeof FNS / sizeof FNS[0]; i++) {
    napi_value fn;
    napi_create_function(env, FNS[i].name, NAPI_AUTO_LENGTH, FNS[i].fn, NULL, &fn);
    napi_set_named_property(env, exports, FNS[i].name, fn);
  }
}
