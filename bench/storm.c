// Boot-storm load generator for the imds benchmarks.
//
// Every guest (a network namespace) runs a request sequence once -- cloud-init's, by default --
// with a NEW TCP connection per request, as cloud-init does; all guests start at the same moment.
// One process drives all guests: each connection's socket is created inside its guest's namespace
// (setns around socket(2)), so it leaves through the guest's own stack, bridge and DNAT, with the
// guest's source address. Written in C so the client costs little CPU next to the server on a
// 2-core machine.
//
//   storm GUESTS_FILE PATHS_FILE [TIMEOUT_MS [WARM_ADDR]]
//     GUESTS_FILE: one /run/netns/<name> per line
//     PATHS_FILE:  one request path per line, in order
//     WARM_ADDR:   before the storm, every guest touches this address (a closed port; the RST
//                  comes from the kernel, no server is involved), 32 at a time, so ARP is resolved
//                  both ways. Without it the storm's first packets are 1,000 simultaneous ARP
//                  broadcasts, each flooded to every port of the bridge: hundreds of thousands of
//                  frames that overflow the kernel's per-CPU backlog (net.core.netdev_max_backlog)
//                  and drop SYNs -- an artefact of starting every simulated VM in the same
//                  microsecond, not of the server under test.
//   Prints one JSON object: wall time, per-request latency percentiles, per-guest durations,
//   status counts and failures (connect errors, timeouts, short answers).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PATHS 64
#define BUF 65536

struct guest {
  int nsfd;
  int fd;
  int step;          // index of the current request
  int sent;          // bytes of the request written
  size_t got;        // bytes of the answer read
  long body_needed;  // -1 until the head is complete
  double t_start;    // this request
  double g_start;    // the guest's first request
  double g_end;
  char *buf;
};

static char *paths[MAX_PATHS];
static int npaths;
static char requests[MAX_PATHS][1024];
static int reqlen[MAX_PATHS];
static double *latencies;
static long nlat;
static long status_count[600];
static long failures, timeouts, connect_errors;
static int selfns;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(double *v, long n, double p) {
  if (n == 0) return 0;
  long i = (long)(p * (n - 1) + 0.5);
  return v[i];
}

static int open_socket(struct guest *g) {
  if (setns(g->nsfd, CLONE_NEWNET) < 0) return -1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int err = errno;
  if (setns(selfns, CLONE_NEWNET) < 0) abort();
  errno = err;
  return fd;
}

static int start_request(int ep, struct guest *g) {
  g->fd = open_socket(g);
  if (g->fd < 0) return -1;
  int one = 1;
  setsockopt(g->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(80)};
  inet_pton(AF_INET, "169.254.169.254", &sa.sin_addr);
  g->sent = 0;
  g->got = 0;
  g->body_needed = -1;
  g->t_start = now_ms();
  if (connect(g->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
    close(g->fd);
    g->fd = -1;
    return -1;
  }
  struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP, .data.ptr = g};
  epoll_ctl(ep, EPOLL_CTL_ADD, g->fd, &ev);
  return 0;
}

static void finish_request(int ep, struct guest *g, int status, int failed) {
  double t = now_ms();
  latencies[nlat++] = t - g->t_start;
  if (status > 0 && status < 600) status_count[status]++;
  if (failed) failures++;
  epoll_ctl(ep, EPOLL_CTL_DEL, g->fd, NULL);
  close(g->fd);
  g->fd = -1;
  g->step++;
  if (g->step >= npaths) {
    g->g_end = t;
    return;
  }
  if (start_request(ep, g) < 0) {
    connect_errors++;
    failures++;
    g->g_end = now_ms();
    g->step = npaths;
  }
}

/** Parses a complete head in g->buf; returns the status, sets body_needed. 0 when incomplete. */
static int parse_head(struct guest *g, size_t *head_len) {
  g->buf[g->got] = 0;
  char *end = strstr(g->buf, "\r\n\r\n");
  if (end == NULL) return 0;
  *head_len = (size_t)(end - g->buf) + 4;
  int status = 0;
  if (sscanf(g->buf, "HTTP/1.%*d %d", &status) != 1) return -1;
  long cl = 0;
  for (char *p = g->buf; p < end; p++) {
    if ((*p == '\n') && strncasecmp(p + 1, "content-length:", 15) == 0) cl = strtol(p + 16, NULL, 10);
  }
  g->body_needed = cl;
  return status;
}

static void warm(struct guest *gs, int n, const char *addr) {
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(9)};
  inet_pton(AF_INET, addr, &sa.sin_addr);
  int wep = epoll_create1(EPOLL_CLOEXEC);
  for (int start = 0; start < n; start += 32) {
    int fds[32], k = 0;
    for (int i = start; i < n && i < start + 32; i++) {
      int fd = open_socket(&gs[i]);
      if (fd < 0) continue;
      connect(fd, (struct sockaddr *)&sa, sizeof sa);
      struct epoll_event ev = {.events = EPOLLOUT | EPOLLERR | EPOLLHUP, .data.fd = fd};
      epoll_ctl(wep, EPOLL_CTL_ADD, fd, &ev);
      fds[k++] = fd;
    }
    struct epoll_event evs[32];
    int done = 0;
    double until = now_ms() + 3000;
    while (done < k && now_ms() < until) done += epoll_wait(wep, evs, 32, 100) > 0 ? 1 : 0;
    for (int j = 0; j < k; j++) close(fds[j]);
  }
  close(wep);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: storm GUESTS_FILE PATHS_FILE [TIMEOUT_MS]\n");
    return 2;
  }
  double timeout = argc > 3 ? atof(argv[3]) : 10000;
  struct rlimit rl = {65536, 65536};
  setrlimit(RLIMIT_NOFILE, &rl);
  selfns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);

  FILE *pf = fopen(argv[2], "r");
  if (!pf) { perror(argv[2]); return 2; }
  char line[1024];
  while (npaths < MAX_PATHS && fgets(line, sizeof line, pf)) {
    line[strcspn(line, "\r\n")] = 0;
    if (!*line) continue;
    paths[npaths] = strdup(line);
    reqlen[npaths] = snprintf(requests[npaths], sizeof requests[npaths],
                              "GET %s HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: Cloud-Init/22.4.2\r\n"
                              "Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n",
                              line);
    npaths++;
  }
  fclose(pf);

  FILE *gf = fopen(argv[1], "r");
  if (!gf) { perror(argv[1]); return 2; }
  int cap = 1024, n = 0;
  struct guest *gs = calloc(cap, sizeof *gs);
  while (fgets(line, sizeof line, gf)) {
    line[strcspn(line, "\r\n")] = 0;
    if (!*line) continue;
    if (n == cap) gs = realloc(gs, (cap *= 2) * sizeof *gs);
    memset(&gs[n], 0, sizeof gs[n]);
    gs[n].nsfd = open(line, O_RDONLY | O_CLOEXEC);
    if (gs[n].nsfd < 0) { perror(line); return 2; }
    gs[n].buf = malloc(BUF + 1);
    gs[n].fd = -1;
    n++;
  }
  fclose(gf);
  latencies = calloc((size_t)n * npaths + 1, sizeof(double));

  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (argc > 4) warm(gs, n, argv[4]);
  double t0 = now_ms();
  for (int i = 0; i < n; i++) {
    gs[i].g_start = now_ms();
    if (start_request(ep, &gs[i]) < 0) {
      connect_errors++;
      failures++;
      gs[i].step = npaths;
      gs[i].g_end = now_ms();
    }
  }
  int active = n;
  struct epoll_event evs[256];
  while (active > 0) {
    int k = epoll_wait(ep, evs, 256, 100);
    double t = now_ms();
    for (int e = 0; e < k; e++) {
      struct guest *g = evs[e].data.ptr;
      if (g->fd < 0) continue;
      if ((evs[e].events & EPOLLOUT) && g->sent < reqlen[g->step]) {
        ssize_t w = send(g->fd, requests[g->step] + g->sent, reqlen[g->step] - g->sent, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN) { connect_errors++; finish_request(ep, g, 0, 1); goto next; }
        if (w > 0) g->sent += (int)w;
        if (g->sent >= reqlen[g->step]) {
          struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = g};
          epoll_ctl(ep, EPOLL_CTL_MOD, g->fd, &ev);
        }
      }
      if (evs[e].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        for (;;) {
          ssize_t r = recv(g->fd, g->buf + g->got, BUF - g->got, 0);
          if (r > 0) {
            g->got += (size_t)r;
            size_t head = 0;
            int status = parse_head(g, &head);
            if (status < 0) { finish_request(ep, g, 0, 1); break; }
            if (status > 0 && g->got >= head + (size_t)g->body_needed) {
              finish_request(ep, g, status, status >= 500);
              break;
            }
            if (g->got >= BUF) { finish_request(ep, g, 0, 1); break; }
            continue;
          }
          if (r == 0 || (r < 0 && errno != EAGAIN)) {
            if (r < 0) connect_errors++;
            finish_request(ep, g, 0, 1);
          }
          break;
        }
      }
    next:;
    }
    // Timeouts (cloud-init gives each request 10 s).
    active = 0;
    for (int i = 0; i < n; i++) {
      struct guest *g = &gs[i];
      if (g->step >= npaths) continue;
      active++;
      if (g->fd >= 0 && t - g->t_start > timeout) {
        timeouts++;
        finish_request(ep, g, 0, 1);
      }
    }
  }
  double wall = now_ms() - t0;

  double *durations = calloc(n, sizeof(double));
  for (int i = 0; i < n; i++) durations[i] = gs[i].g_end - gs[i].g_start;
  qsort(durations, n, sizeof(double), cmp);
  qsort(latencies, nlat, sizeof(double), cmp);
  printf("{\"guests\":%d,\"requests_per_guest\":%d,\"requests\":%ld,\"wall_ms\":%.1f,"
         "\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
         "\"guest_median_ms\":%.1f,\"guest_slowest_ms\":%.1f,"
         "\"failures\":%ld,\"timeouts\":%ld,\"connect_errors\":%ld,\"status\":{",
         n, npaths, nlat, wall, pct(latencies, nlat, 0.5), pct(latencies, nlat, 0.9), pct(latencies, nlat, 0.99),
         nlat ? latencies[nlat - 1] : 0, pct(durations, n, 0.5), n ? durations[n - 1] : 0, failures, timeouts, connect_errors);
  int first = 1;
  for (int s = 0; s < 600; s++) {
    if (!status_count[s]) continue;
    printf("%s\"%d\":%ld", first ? "" : ",", s, status_count[s]);
    first = 0;
  }
  printf("}}\n");
  return 0;
}
