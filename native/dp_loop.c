// imds native data plane: the loop (issue 16). One thread, one epoll set: the networks' listening
// sockets and their connections. A complete GET/HEAD head (http_head.c) whose answer is in the
// table (dp_table.c) is answered with one writev; anything else — a partial or odd head, another
// method, a token, a probe from the namespace itself, a path the table does not hold — leaves the
// loop with the bytes read, for node:http (dp_handover_fn). Timeouts as node:http's: a connection
// that sends no request within headers_timeout gets 408; an idle keep-alive connection is closed
// after keep_alive_timeout; a reader too slow for its answer after request_timeout.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "dp.h"
#include "http_head.h"

#define METADATA_IP 0xa9fea9feu /* 169.254.169.254: the daemon's own probes come from it */
#define LINGER_MS 1000

enum { EV_WAKE, EV_LISTEN, EV_CONN };
enum { T_FRESH, T_IDLE, T_WRITE, T_LINGER, T_LISTS, T_NONE = -1 };

struct ev {
  int kind;
};

struct listener {
  struct ev ev;
  int fd;
  uint32_t slot;
  bool active;
};

struct conn {
  struct ev ev;
  int fd;
  uint32_t slot, ip;
  bool dead, answered, close_after;
  bool draining; /* its network stopped accepting: closes after its next answer */
  int timer;
  int64_t deadline;
  struct conn *tprev, *tnext; /* in its timer list */
  struct conn *prev, *next;   /* among all connections */
  char *out;
  size_t out_len, out_off;
  size_t len;
  char buf[IMDS_HEAD_BUF];
};

struct timer_list {
  struct conn *head, *tail;
  int64_t ms;
};

static struct {
  int ep, wake;
  pthread_t thread;
  bool running;
  dp_handover_fn handover;
  struct listener **listeners;
  size_t nlisteners;
  struct conn *all;
  struct conn *graveyard;
  struct timer_list timers[T_LISTS];
  atomic_size_t connections;
  int reserve_fd;
  char keep_alive_header[96];
  time_t date_second;
  char date[40];
} L = {.ep = -1, .wake = -1, .reserve_fd = -1};

static struct ev wake_ev = {EV_WAKE};

static struct {
  pthread_cond_t cond;
  bool pending, done;
  int op, fd, result;
  uint32_t slot;
  bool close_fd;
} cmd = {.cond = PTHREAD_COND_INITIALIZER};

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

// ---- timers: one FIFO per timeout kind, so each list is sorted by deadline ----

static void timer_stop(struct conn *c) {
  if (c->timer == T_NONE) return;
  struct timer_list *t = &L.timers[c->timer];
  if (c->tprev != NULL) c->tprev->tnext = c->tnext;
  else t->head = c->tnext;
  if (c->tnext != NULL) c->tnext->tprev = c->tprev;
  else t->tail = c->tprev;
  c->tprev = c->tnext = NULL;
  c->timer = T_NONE;
}

static void timer_start(struct conn *c, int kind) {
  timer_stop(c);
  struct timer_list *t = &L.timers[kind];
  c->timer = kind;
  c->deadline = mono_ms() + t->ms;
  c->tprev = t->tail;
  c->tnext = NULL;
  if (t->tail != NULL) t->tail->tnext = c;
  else t->head = c;
  t->tail = c;
}

// ---- connections ----

/**
 * The loop lets go of c. Its fd leaves the epoll set first, always: close() alone removes it only
 * when no other descriptor shares the open file, and a fork in progress (a child process starting,
 * a hand-over) holds copies for a moment; the set would then report events for a freed connection.
 */
static void conn_forget(struct conn *c) {
  timer_stop(c);
  epoll_ctl(L.ep, EPOLL_CTL_DEL, c->fd, NULL);
  if (c->prev != NULL) c->prev->next = c->next;
  else L.all = c->next;
  if (c->next != NULL) c->next->prev = c->prev;
  c->dead = true;
  free(c->out);
  c->out = NULL;
  c->next = L.graveyard;  // freed after the events of this round, which may still name it
  L.graveyard = c;
  atomic_fetch_sub(&L.connections, 1);
}

static void conn_close(struct conn *c) {
  int fd = c->fd;
  conn_forget(c);
  close(fd);
}

/** The connection leaves the loop for node:http, with what was read of it. */
static void conn_handover(struct conn *c) {
  struct dp_handover *h = malloc(sizeof *h + c->len);
  if (h == NULL) {
    conn_close(c);
    return;
  }
  h->fd = c->fd;
  h->slot = c->slot;
  h->len = c->len;
  memcpy(h->bytes, c->buf, c->len);
  conn_forget(c);
  pthread_mutex_lock(&dp_table.lock);
  dp_table.handovers++;
  pthread_mutex_unlock(&dp_table.lock);
  L.handover(h);
}

static void conn_watch(struct conn *c, uint32_t events) {
  struct epoll_event e = {.events = events, .data.ptr = c};
  epoll_ctl(L.ep, EPOLL_CTL_MOD, c->fd, &e);
}

/** Answer written: close (after a lingering half-close) or wait for the next request. */
static void conn_after_answer(struct conn *c) {
  if (c->close_after && c->len == 0) {
    // Nothing came after the request: closing now sends a FIN after the answer. (Bytes the client
    // sent after its head would turn a close into a reset that can eat the answer: then linger.)
    conn_close(c);
  } else if (c->close_after) {
    shutdown(c->fd, SHUT_WR);
    c->len = 0;
    timer_start(c, T_LINGER);
  } else if (c->len == 0) {
    timer_start(c, T_IDLE);
  } else {
    timer_stop(c);
  }
}

/** Writes iov; keeps what the socket did not take. false when the connection failed (closed). */
static bool conn_write(struct conn *c, struct iovec *iov, int n) {
  size_t total = 0;
  for (int i = 0; i < n; i++) total += iov[i].iov_len;
  ssize_t w = writev(c->fd, iov, n);
  if (w < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      conn_close(c);
      return false;
    }
    w = 0;
  }
  if ((size_t)w == total) return true;
  size_t rest = total - (size_t)w, at = 0, skip = (size_t)w;
  c->out = malloc(rest);
  if (c->out == NULL) {
    conn_close(c);
    return false;
  }
  for (int i = 0; i < n; i++) {
    size_t len = iov[i].iov_len;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    memcpy(c->out + at, (char *)iov[i].iov_base + skip, len - skip);
    at += len - skip;
    skip = 0;
  }
  c->out_len = rest;
  c->out_off = 0;
  conn_watch(c, EPOLLOUT);
  timer_start(c, T_WRITE);
  return true;
}

static void on_writable(struct conn *c) {
  ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
  if (w < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) conn_close(c);
    return;
  }
  c->out_off += (size_t)w;
  if (c->out_off < c->out_len) return;
  free(c->out);
  c->out = NULL;
  conn_watch(c, EPOLLIN);
  conn_after_answer(c);
}

// ---- answers ----

static const char *reason(uint16_t status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 429: return "Too Many Requests";
    default: return "Unknown";
  }
}

static const char *TYPE_TEXT[DP_TYPES] = {"application/json", "text/plain; charset=UTF-8", "text/html; charset=UTF-8"};
static const char BASE64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/** 512 fresh random bytes as base64 (684 characters, the last two '='), as randomSeed() makes them. */
static void fresh_seed(char out[DP_SEED_LEN]) {
  // Random bytes are drawn 64 seeds at a time (one getrandom call), each byte used once.
  static unsigned char pool[512 * 64];
  static size_t used = sizeof pool;
  if (used == sizeof pool) {
    size_t got = 0;
    while (got < sizeof pool) {
      ssize_t n = getrandom(pool + got, sizeof pool - got, 0);
      if (n > 0) got += (size_t)n;
      else if (errno != EINTR) abort();  // never serve a seed that is not random
    }
    used = 0;
  }
  const unsigned char *raw = pool + used;
  used += 512;
  size_t o = 0, i = 0;
  for (; i + 3 <= 512; i += 3) {
    uint32_t v = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8 | raw[i + 2];
    out[o++] = BASE64[v >> 18 & 63];
    out[o++] = BASE64[v >> 12 & 63];
    out[o++] = BASE64[v >> 6 & 63];
    out[o++] = BASE64[v & 63];
  }
  uint32_t v = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8;  // 512 = 3 * 170 + 2
  out[o++] = BASE64[v >> 18 & 63];
  out[o++] = BASE64[v >> 12 & 63];
  out[o++] = BASE64[v >> 6 & 63];
  out[o++] = '=';
}

static const char *http_date(void) {
  time_t now = time(NULL);
  if (now != L.date_second) {
    struct tm tm;
    gmtime_r(&now, &tm);
    static const char *DAY[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *MON[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    snprintf(L.date, sizeof L.date, "%s, %02d %s %04d %02d:%02d:%02d GMT", DAY[tm.tm_wday], tm.tm_mday, MON[tm.tm_mon], tm.tm_year + 1900,
             tm.tm_hour, tm.tm_min, tm.tm_sec);
    L.date_second = now;
  }
  return L.date;
}

/** Writes resp as the fast path does (src/server/fast-path.ts writeAnswer): one head, the body unless HEAD. */
static bool write_answer(struct conn *c, const struct imds_head *h, const struct dp_seg *segs, const struct dp_resp *r, uint32_t retry_after,
                         size_t *bytes) {
  char head[512], seed[DP_SEED_LEN], retry[48] = "";
  if (retry_after > 0) snprintf(retry, sizeof retry, "retry-after: %u\r\n", retry_after);
  int n = snprintf(head, sizeof head, "HTTP/1.1 %u %s\r\ncontent-type: %s\r\ncontent-length: %u\r\n%sDate: %s\r\n%s", r->status,
                   reason(r->status), TYPE_TEXT[r->type < DP_TYPES ? r->type : DP_TYPE_TEXT], r->body_len, retry, http_date(),
                   h->keep_alive ? L.keep_alive_header : "Connection: close\r\n\r\n");
  struct iovec iov[DP_MAX_SEGS + 2];
  int k = 0;
  iov[k++] = (struct iovec){head, (size_t)n};
  if (h->method == IMDS_METHOD_GET) {
    for (uint8_t s = 0; s <= r->nsegs; s++) {
      if (s == r->seed_at) {
        fresh_seed(seed);
        iov[k++] = (struct iovec){seed, DP_SEED_LEN};
      }
      if (s < r->nsegs && segs[s].len > 0) iov[k++] = (struct iovec){(void *)segs[s].data, segs[s].len};
    }
  }
  *bytes = 0;  // the body's (as nginx's body_bytes_sent): every segment after the head
  for (int i = 1; i < k; i++) *bytes += iov[i].iov_len;
  return conn_write(c, iov, k);
}

/** The global answers (dpSetGlobal): / for every caller, 404, 403 (endpoint disabled), 429. */
enum { G_ROOT, G_NOT_FOUND, G_DISABLED, G_TOO_MANY, G_COUNT };
struct dp_vm *dp_global;

/** What the table says about a request: answer with `resp` (its body in `segs`), or hand the connection over. */
struct verdict {
  bool handover;
  struct dp_vm *holder; /* keeps resp alive (shared responses live for good) */
  const struct dp_resp *resp;
  const struct dp_seg *segs;
  uint32_t retry_after;
  uint32_t key; /* the VM's, or UINT32_MAX */
};

/** Under the lock: the response a VM's route code names (dp.h DP_ROUTE_SHARED), with its segments; NULL for none. */
static const struct dp_resp *route_resp(const struct dp_vm *vm, int64_t route, const struct dp_seg **segs) {
  if (route < 0 || (uint64_t)route >= vm->nroutes || vm->routes[route] == 0) return NULL;
  uint16_t code = vm->routes[route];
  if (code & DP_ROUTE_SHARED) {
    const struct dp_shared_resp *sh = dp_shared_resp(code & ~DP_ROUTE_SHARED);
    if (sh == NULL) return NULL;
    *segs = &sh->seg;
    return &sh->resp;
  }
  const struct dp_resp *r = &vm->resps[code - 1];
  *segs = vm->segs + r->first_seg;
  return r;
}

static void global_answer(struct verdict *v, const struct dp_vm *g, int which) {
  v->resp = &g->resps[which];
  v->segs = g->segs + v->resp->first_seg;
}

static struct verdict decide(const struct conn *c, const struct imds_head *h, const char *key, size_t key_len) {
  struct verdict v = {.key = UINT32_MAX};
  struct dp_table *t = &dp_table;
  pthread_mutex_lock(&t->lock);
  struct dp_vm *vm = dp_vm_get(c->slot, c->ip), *g = dp_global;
  bool root = key_len == 1 && key[0] == '/';
  const struct dp_seg *segs = NULL;
  const struct dp_resp *mine = vm == NULL || root ? NULL : route_resp(vm, dp_route_find(key, key_len), &segs);
  if (g == NULL || g->nresps < G_COUNT) {
    v.handover = true;
  } else if (vm != NULL && !(vm->flags & DP_VM_DISABLED) && ((vm->flags & DP_VM_HANDOVER) || h->token_count > 0 || (!root && mine == NULL))) {
    v.handover = true;  // node:http decides (after the same rate limit, which it takes there)
  } else {
    uint32_t wait = dp_rate_take(c->slot, c->ip, dp_mono_ms());
    if (wait > 0) {
      global_answer(&v, g, G_TOO_MANY);
      v.retry_after = wait;
      struct dp_net_stats *s = dp_net_stats(c->slot);
      if (s != NULL) s->rejects[DP_REJECT_RATE]++;
    } else if (vm != NULL && (vm->flags & DP_VM_DISABLED)) {
      global_answer(&v, g, G_DISABLED);
      struct dp_net_stats *s = dp_net_stats(c->slot);
      if (s != NULL) s->rejects[DP_REJECT_DISABLED]++;
    } else if (vm != NULL) {
      if (root) global_answer(&v, g, G_ROOT);
      else {
        v.resp = mine;
        v.segs = segs;
      }
      if (h->token_count == 0) {
        struct dp_vm_stats *s = dp_vm_stats(vm->key);
        if (s != NULL) s->no_token++;
      }
    } else {
      global_answer(&v, g, root ? G_ROOT : G_NOT_FOUND);
      struct dp_net_stats *s = dp_net_stats(c->slot);
      if (s != NULL) s->unknown_callers++;
    }
    if (vm != NULL) v.key = vm->key;
    // The answer lives in the VM's block (or is shared for good), else in the global one.
    v.holder = vm != NULL && v.resp == mine ? vm : g;
    atomic_fetch_add(&v.holder->refs, 1);
  }
  pthread_mutex_unlock(&t->lock);
  dp_vm_unref(vm);
  return v;
}

/** Under the lock: the request joins the log ring (when the JS logs requests). */
static void log_request(const struct conn *c, const struct verdict *v, int method, const char *target, size_t len, uint64_t ns, size_t bytes) {
  struct dp_table *t = &dp_table;
  if (t->log == NULL) t->log = calloc(DP_LOG_RING, sizeof *t->log);
  if (t->log == NULL || t->log_count == DP_LOG_RING) {
    t->log_dropped++;
    return;
  }
  struct dp_log_record *r = &t->log[(t->log_head + t->log_count++) % DP_LOG_RING];
  r->slot = c->slot;
  r->ip = c->ip;
  r->key = v->key;
  r->ns = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
  r->bytes = bytes > UINT32_MAX ? UINT32_MAX : (uint32_t)bytes;
  r->at_ms = dp_now_ms();
  r->status = v->resp->status;
  r->method = (uint8_t)method;
  r->path_len = (uint16_t)(len < DP_LOG_PATH ? len : DP_LOG_PATH);
  memcpy(r->path, target, r->path_len);
}

static void count(const struct conn *c, const struct verdict *v, uint64_t started_ns, int method, const char *target, size_t target_len,
                  size_t bytes) {
  uint64_t ns = mono_ns() - started_ns;
  struct dp_table *t = &dp_table;
  pthread_mutex_lock(&t->lock);
  if (target != NULL) log_request(c, v, method, target, target_len, ns, bytes);
  struct dp_net_stats *n = dp_net_stats(c->slot);
  if (n != NULL) {
    int si = dp_status_index(v->resp->status);
    if (si >= 0) n->by_status[si]++;
    int b = 0;
    while (b < DP_BUCKETS && ns > (uint64_t)DP_BUCKET_US[b] * 1000) b++;
    n->buckets[b]++;
    n->sum_ns += ns;
    n->count++;
  }
  if (v->key != UINT32_MAX) {
    struct dp_vm_stats *s = dp_vm_stats(v->key);
    if (s != NULL) {
      int64_t now = dp_now_ms();
      if (s->first_seen_ms == 0) s->first_seen_ms = now;
      s->last_seen_ms = now;
      s->last_status = v->resp->status;
      s->requests++;
      s->dirty = true;
    }
  }
  pthread_mutex_unlock(&t->lock);
}

/** Answers the complete heads in the buffer; hands the connection over at the first it cannot. */
static void process(struct conn *c) {
  while (c->len > 0 && c->out == NULL && !c->dead && !c->close_after) {
    struct imds_head h;
    char key[IMDS_HEAD_BUF];
    size_t key_len = 0;
    uint64_t started = mono_ns();
    if (imds_parse_head(c->buf, c->len, &h) != IMDS_HEAD_OK || c->ip == METADATA_IP ||
        !imds_route_key(c->buf + h.target.off, h.target.len, key, &key_len)) {
      conn_handover(c);
      return;
    }
    struct verdict v = decide(c, &h, key, key_len);
    if (v.handover) {
      conn_handover(c);
      return;
    }
    c->answered = true;
    if (c->draining) h.keep_alive = false;  // the daemon is stopping: this answer is the last
    c->close_after = !h.keep_alive;
    char target[DP_LOG_PATH];
    size_t target_len = h.target.len < DP_LOG_PATH ? h.target.len : DP_LOG_PATH;
    int mode = atomic_load(&dp_table.log_mode);
    bool logged = mode == DP_LOG_ALL || (mode == DP_LOG_UNKNOWN && v.key == UINT32_MAX);
    if (logged) memcpy(target, c->buf + h.target.off, target_len);
    c->len -= h.head_len;
    memmove(c->buf, c->buf + h.head_len, c->len);
    size_t bytes = 0;
    bool written = write_answer(c, &h, v.segs, v.resp, v.retry_after, &bytes);
    count(c, &v, started, h.method, logged ? target : NULL, target_len, bytes);
    dp_vm_unref(v.holder);
    if (!written) return;
    if (c->out == NULL) conn_after_answer(c);
  }
}

static void on_readable(struct conn *c) {
  if (c->close_after) {  // lingering: read and drop until the peer closes
    char sink[4096];
    ssize_t n;
    while ((n = read(c->fd, sink, sizeof sink)) > 0) continue;
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) conn_close(c);
    return;
  }
  ssize_t n = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
  if (n == 0) {
    conn_close(c);  // the client closed its side (cloud-init does after each answer): so do we
    return;
  }
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) conn_close(c);
    return;
  }
  c->len += (size_t)n;
  process(c);
}

static void on_accept(struct listener *l) {
  for (int i = 0; i < 64; i++) {
    struct sockaddr_in peer;
    socklen_t size = sizeof peer;
    int fd = accept4(l->fd, (struct sockaddr *)&peer, &size, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if ((errno == EMFILE || errno == ENFILE) && L.reserve_fd >= 0) {
        // Out of descriptors: take the connection with the one kept in reserve and drop it, so the
        // listener does not stay readable (and the loop spinning) until a descriptor frees up.
        close(L.reserve_fd);
        int dropped = accept(l->fd, NULL, NULL);
        if (dropped >= 0) close(dropped);
        L.reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
      }
      return;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
      close(fd);
      continue;
    }
    c->ev.kind = EV_CONN;
    c->fd = fd;
    c->slot = l->slot;
    c->ip = size >= sizeof peer && peer.sin_family == AF_INET ? ntohl(peer.sin_addr.s_addr) : 0;
    c->timer = T_NONE;
    c->next = L.all;
    if (L.all != NULL) L.all->prev = c;
    L.all = c;
    atomic_fetch_add(&L.connections, 1);
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(L.ep, EPOLL_CTL_ADD, fd, &e) < 0) {
      conn_close(c);
      continue;
    }
    timer_start(c, T_FRESH);
    on_readable(c);  // the request often came with the handshake: no wait for the next round
  }
}

static void expire(void) {
  int64_t now = mono_ms();
  for (int k = 0; k < T_LISTS; k++) {
    struct timer_list *t = &L.timers[k];
    while (t->head != NULL && t->head->deadline <= now) {
      struct conn *c = t->head;
      if (k == T_FRESH && !c->answered) {
        static const char TIMEOUT[] = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        ssize_t ignored = write(c->fd, TIMEOUT, sizeof TIMEOUT - 1);
        (void)ignored;
      }
      conn_close(c);
    }
  }
}

static int next_timeout(void) {
  int64_t next = -1, now = mono_ms();
  for (int k = 0; k < T_LISTS; k++) {
    struct conn *c = L.timers[k].head;
    if (c != NULL && (next < 0 || c->deadline < next)) next = c->deadline;
  }
  if (next < 0) return -1;
  return next <= now ? 0 : (int)(next - now);
}

// ---- commands from the JS thread ----

static struct listener *listener_of(uint32_t slot, bool create) {
  if (slot >= L.nlisteners) {
    if (!create) return NULL;
    size_t n = L.nlisteners == 0 ? 64 : L.nlisteners;
    while (n <= slot) n *= 2;
    struct listener **ls = realloc(L.listeners, n * sizeof *ls);
    if (ls == NULL) return NULL;
    memset(ls + L.nlisteners, 0, (n - L.nlisteners) * sizeof *ls);
    L.listeners = ls;
    L.nlisteners = n;
  }
  if (L.listeners[slot] == NULL && create) {
    L.listeners[slot] = calloc(1, sizeof **L.listeners);
    if (L.listeners[slot] != NULL) L.listeners[slot]->ev.kind = EV_LISTEN;
  }
  return L.listeners[slot];
}

static void close_connections(void) {
  while (L.all != NULL) conn_close(L.all);
}

/**
 * Stops accepting on slot's socket (closing it when close_fd). Its connections close now, or with
 * `drain` only those with nothing owed (idle keep-alive ones): the others get their answer, with
 * `Connection: close`, and the JS waits for them (dpInfo's connections) before dpStop.
 */
static int unlisten(uint32_t slot, bool close_fd, bool drain) {
  struct listener *l = listener_of(slot, false);
  if (l == NULL || !l->active) return ENOENT;
  epoll_ctl(L.ep, EPOLL_CTL_DEL, l->fd, NULL);
  if (close_fd) close(l->fd);
  l->active = false;
  for (struct conn *c = L.all, *next; c != NULL; c = next) {
    next = c->next;
    if (c->slot != slot) continue;
    bool idle = c->answered && c->out == NULL && c->len == 0 && !c->close_after;
    if (!drain || idle) conn_close(c);
    else c->draining = true;
  }
  return 0;
}

static int run_command(int op, uint32_t slot, int fd, bool close_fd) {
  switch (op) {
    case DP_CMD_LISTEN: {
      struct listener *l = listener_of(slot, true);
      if (l == NULL) return ENOMEM;
      if (l->active) return EEXIST;
      int flags = fcntl(fd, F_GETFL);
      if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return errno;
      // Accepted sockets inherit TCP_NODELAY from the listener (one setsockopt, not one per connection).
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      l->fd = fd;
      l->slot = slot;
      struct epoll_event e = {.events = EPOLLIN, .data.ptr = l};
      if (epoll_ctl(L.ep, EPOLL_CTL_ADD, fd, &e) < 0) return errno;
      l->active = true;
      return 0;
    }
    case DP_CMD_UNLISTEN:
    case DP_CMD_DRAIN:
      return unlisten(slot, close_fd, op == DP_CMD_DRAIN);
    case DP_CMD_STOP:
      for (size_t s = 0; s < L.nlisteners; s++)
        if (L.listeners[s] != NULL && L.listeners[s]->active) unlisten((uint32_t)s, true, false);
      close_connections();
      L.running = false;
      return 0;
    default:
      return EINVAL;
  }
}

static void on_wake(void) {
  uint64_t n;
  ssize_t ignored = read(L.wake, &n, sizeof n);
  (void)ignored;
  pthread_mutex_lock(&dp_table.lock);
  if (!cmd.pending || cmd.done) {
    pthread_mutex_unlock(&dp_table.lock);
    return;
  }
  int op = cmd.op, fd = cmd.fd;
  uint32_t slot = cmd.slot;
  bool close_fd = cmd.close_fd;
  pthread_mutex_unlock(&dp_table.lock);
  int result = run_command(op, slot, fd, close_fd);
  pthread_mutex_lock(&dp_table.lock);
  cmd.result = result;
  cmd.done = true;
  pthread_cond_broadcast(&cmd.cond);
  pthread_mutex_unlock(&dp_table.lock);
}

static void *loop(void *arg) {
  (void)arg;
  struct epoll_event events[256];
  while (L.running) {
    int n = epoll_wait(L.ep, events, 256, next_timeout());
    for (int i = 0; i < n; i++) {
      struct ev *e = events[i].data.ptr;
      if (e->kind == EV_WAKE) {
        on_wake();
      } else if (e->kind == EV_LISTEN) {
        struct listener *l = (struct listener *)e;
        if (l->active) on_accept(l);
      } else {
        struct conn *c = (struct conn *)e;
        if (c->dead) continue;
        if (c->out != NULL) {
          if (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_writable(c);
        } else {
          on_readable(c);
        }
      }
    }
    expire();
    while (L.graveyard != NULL) {
      struct conn *c = L.graveyard;
      L.graveyard = c->next;
      free(c);
    }
  }
  return NULL;
}

int dp_loop_start(const struct dp_options *opts, dp_handover_fn handover) {
  if (L.running) return EALREADY;
  L.handover = handover;
  L.timers[T_FRESH].ms = opts->headers_timeout_ms;
  L.timers[T_IDLE].ms = opts->keep_alive_timeout_ms;
  L.timers[T_WRITE].ms = opts->request_timeout_ms;
  L.timers[T_LINGER].ms = LINGER_MS;
  snprintf(L.keep_alive_header, sizeof L.keep_alive_header, "Connection: keep-alive\r\nKeep-Alive: timeout=%lld\r\n\r\n",
           (long long)(opts->keep_alive_timeout_ms / 1000));
  L.ep = epoll_create1(EPOLL_CLOEXEC);
  L.wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (L.ep < 0 || L.wake < 0) return errno;
  if (L.reserve_fd < 0) L.reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  struct epoll_event e = {.events = EPOLLIN, .data.ptr = &wake_ev};
  if (epoll_ctl(L.ep, EPOLL_CTL_ADD, L.wake, &e) < 0) return errno;
  L.running = true;
  int err = pthread_create(&L.thread, NULL, loop, NULL);
  if (err != 0) L.running = false;
  else pthread_setname_np(L.thread, "imds-dataplane");  // its own line in top -H, ps -L, perf
  return err;
}

int dp_loop_command(int op, uint32_t slot, int fd, bool close_fd) {
  if (!L.running) return ESRCH;
  pthread_mutex_lock(&dp_table.lock);
  while (cmd.pending) pthread_cond_wait(&cmd.cond, &dp_table.lock);
  cmd.pending = true;
  cmd.done = false;
  cmd.op = op;
  cmd.slot = slot;
  cmd.fd = fd;
  cmd.close_fd = close_fd;
  pthread_mutex_unlock(&dp_table.lock);
  uint64_t one = 1;
  ssize_t ignored = write(L.wake, &one, sizeof one);
  (void)ignored;
  pthread_mutex_lock(&dp_table.lock);
  while (!cmd.done) pthread_cond_wait(&cmd.cond, &dp_table.lock);
  int result = cmd.result;
  cmd.pending = false;
  pthread_cond_broadcast(&cmd.cond);
  pthread_mutex_unlock(&dp_table.lock);
  if (op == DP_CMD_STOP) {
    pthread_join(L.thread, NULL);
    close(L.ep);
    close(L.wake);
    L.ep = L.wake = -1;
  }
  return result;
}

bool dp_loop_running(void) { return L.running; }

size_t dp_loop_connections(void) { return atomic_load(&L.connections); }
