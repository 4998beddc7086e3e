// libFuzzer harness for the guest request reader (native/http_head.c), built by scripts/fuzz.sh
// with -fsanitize=fuzzer,address,undefined. Each input is read as one read buffer of exactly its
// size (ASan catches a byte read past it), and what the reader says is checked against what must
// hold whatever the bytes:
//   - INCOMPLETE only without a CRLFCRLF, and only while one could still end a head of at most
//     IMDS_HEAD_BUF bytes; never INCOMPLETE with a CRLFCRLF at or before IMDS_HEAD_MAX;
//   - OK: head_len ends at the first CRLFCRLF, within the input and IMDS_HEAD_BUF; the method is
//     the bytes' GET or HEAD; the target starts with '/', is all 0x21-0x7e, inside the request line
//     and followed by " HTTP/1.0" or " HTTP/1.1"; the token inside the head, without CR, LF or outer
//     SP/HT, and as many token headers walked as counted;
//   - the outcome depends on the head alone: the head by itself gives the same, each piece of it
//     INCOMPLETE, and an incomplete one completed is never INCOMPLETE (each checked in a buffer of
//     exactly that size).
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../http_head.h"

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "http_head_fuzz: check failed: %s (line %d)\n", #cond, __LINE__); \
      abort();                                                               \
    }                                                                        \
  } while (0)

#define NONE ((size_t)-1)

static size_t first_crlfcrlf(const uint8_t *d, size_t n) {
  for (size_t i = 0; i + 4 <= n; i++)
    if (d[i] == '\r' && d[i + 1] == '\n' && d[i + 2] == '\r' && d[i + 3] == '\n') return i;
  return NONE;
}

static bool same_head(const struct imds_head *a, const struct imds_head *b) {
  return a->method == b->method && a->target.off == b->target.off && a->target.len == b->target.len &&
         a->keep_alive == b->keep_alive && a->token_count == b->token_count && a->token.off == b->token.off &&
         a->token.len == b->token.len && a->head_len == b->head_len;
}

/** imds_parse_head on data[0..n) then the `extra` bytes, copied into a buffer of exactly that size. */
static int parse_copy(const uint8_t *data, size_t n, const char *extra, size_t extra_len, struct imds_head *out) {
  uint8_t *copy = malloc(n + extra_len == 0 ? 1 : n + extra_len);
  CHECK(copy != NULL);
  if (n > 0) memcpy(copy, data, n);
  if (extra_len > 0) memcpy(copy + n, extra, extra_len);
  memset(out, 0, sizeof *out);
  int r = imds_parse_head((const char *)copy, n + extra_len, out);
  free(copy);
  return r;
}

static void check_ok(const uint8_t *data, size_t size, size_t end, const struct imds_head *h) {
  CHECK(h->head_len == end + 4 && h->head_len <= size && h->head_len <= IMDS_HEAD_BUF);
  if (h->method == IMDS_METHOD_GET)
    CHECK(memcmp(data, "GET ", 4) == 0 && h->target.off == 4);
  else
    CHECK(h->method == IMDS_METHOD_HEAD && memcmp(data, "HEAD ", 5) == 0 && h->target.off == 5);
  size_t t = h->target.off, tl = h->target.len;
  CHECK(tl >= 1 && data[t] == '/' && t + tl + 9 <= end);
  for (size_t i = t; i < t + tl; i++) CHECK(data[i] >= 0x21 && data[i] <= 0x7e);
  CHECK(memcmp(data + t + tl, " HTTP/1.", 8) == 0 && (data[t + tl + 8] == '0' || data[t + tl + 8] == '1'));
  CHECK(t + tl + 9 == end || (data[t + tl + 9] == '\r' && data[t + tl + 10] == '\n'));
  CHECK(h->keep_alive == true || h->keep_alive == false);

  size_t pos = 0, walked = 0;
  struct imds_span tok;
  while (imds_head_next_token((const char *)data, h, &pos, &tok)) {
    CHECK(++walked <= h->token_count);
    CHECK(tok.off > t + tl && (size_t)tok.off + tok.len <= end);
    for (size_t i = tok.off; i < (size_t)tok.off + tok.len; i++) CHECK(data[i] != '\r' && data[i] != '\n');
    if (tok.len > 0) {
      CHECK(data[tok.off] != ' ' && data[tok.off] != '\t');
      CHECK(data[tok.off + tok.len - 1] != ' ' && data[tok.off + tok.len - 1] != '\t');
    }
    if (walked == 1) CHECK(tok.off == h->token.off && tok.len == h->token.len);
  }
  CHECK(walked == h->token_count);
  if (h->token_count == 0) CHECK(h->token.off == 0 && h->token.len == 0);
}

/**
 * imds_route_key on a target (copied to a buffer of exactly its size): the key is the target up to
 * its query with at most one trailing '/' dropped, starts with '/', and holds no '%', "//" or "/.";
 * a target refused has one of those, or an empty path.
 */
static void check_route_key(const char *target, size_t len) {
  char *copy = malloc(len == 0 ? 1 : len), *key = malloc(len == 0 ? 1 : len);
  CHECK(copy != NULL && key != NULL);
  memcpy(copy, target, len);
  size_t key_len = (size_t)-1;
  bool ok = imds_route_key(copy, len, key, &key_len);
  const char *q = memchr(copy, '?', len);
  size_t path = q == NULL ? len : (size_t)(q - copy);
  bool odd = path == 0 || copy[0] != '/';
  for (size_t i = 0; i < path; i++)
    if (copy[i] == '%' || (copy[i] == '/' && i + 1 < path && (copy[i + 1] == '/' || copy[i + 1] == '.'))) odd = true;
  CHECK(ok == !odd);
  if (ok) {
    CHECK(key_len >= 1 && key_len <= path && key[0] == '/' && memcmp(key, copy, key_len) == 0);
    CHECK(key_len == path || (key_len == path - 1 && copy[path - 1] == '/' && path > 1));
    CHECK(key_len == 1 || key[key_len - 1] != '/' || key_len == path);
  }
  free(copy);
  free(key);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char CRLFCRLF[] = "\r\n\r\n";
  struct imds_head h, again;
  memset(&h, 0, sizeof h);
  int r = imds_parse_head((const char *)data, size, &h);
  CHECK(r == IMDS_HEAD_INCOMPLETE || r == IMDS_HEAD_OK || r == IMDS_HEAD_HANDOVER);
  size_t end = first_crlfcrlf(data, size);

  if (end == NONE) {
    // Where a CRLFCRLF could still start: at the last bytes when they begin one, else after them.
    size_t k = size < 3 ? size : 3;
    while (k > 0 && memcmp(data + size - k, CRLFCRLF, k) != 0) k--;
    CHECK(r == (size - k <= IMDS_HEAD_MAX ? IMDS_HEAD_INCOMPLETE : IMDS_HEAD_HANDOVER));
    // The rest of that CRLFCRLF arriving: never incomplete, and a head exactly that long if taken.
    int whole = parse_copy(data, size, CRLFCRLF + k, 4 - k, &again);
    CHECK(whole != IMDS_HEAD_INCOMPLETE);
    CHECK(whole == (r == IMDS_HEAD_INCOMPLETE ? whole : IMDS_HEAD_HANDOVER));
    if (whole == IMDS_HEAD_OK) CHECK(again.head_len == size + 4 - k);
    return 0;
  }
  if (end > IMDS_HEAD_MAX) {
    CHECK(r == IMDS_HEAD_HANDOVER);
    return 0;
  }
  // A complete head: by itself it gives the same (what follows it changes nothing), and each piece
  // of it waits for the rest.
  CHECK(r != IMDS_HEAD_INCOMPLETE);
  CHECK(parse_copy(data, end + 4, NULL, 0, &again) == r);
  if (r == IMDS_HEAD_OK) {
    check_ok(data, size, end, &h);
    CHECK(same_head(&h, &again));
    check_route_key((const char *)data + h.target.off, h.target.len);
  }
  size_t cuts[3] = {end + 3, end, (size_t)data[size - 1] * (end + 4) / 256};
  for (int i = 0; i < 3; i++) CHECK(parse_copy(data, cuts[i], NULL, 0, &again) == IMDS_HEAD_INCOMPLETE);
  return 0;
}
