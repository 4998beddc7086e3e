// imds native helper: the guest request reader (issue 16's data plane). Pure C: no allocation, no
// global state, no Node; the fuzz harness (native/fuzz/) builds it alone.
#ifndef IMDS_HTTP_HEAD_H
#define IMDS_HTTP_HEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** The CRLFCRLF that ends a head must start at or before this offset (the fast path's MAX_FAST_HEAD). */
#define IMDS_HEAD_MAX 8192
/** The largest head the reader takes, its CRLFCRLF included: a read buffer of this size suffices. */
#define IMDS_HEAD_BUF (IMDS_HEAD_MAX + 4)

enum {
  IMDS_HEAD_INCOMPLETE = 0, /* no CRLFCRLF yet, and one could still come at or before IMDS_HEAD_MAX */
  IMDS_HEAD_OK = 1,         /* a complete GET/HEAD head for the fast path; out is filled */
  IMDS_HEAD_HANDOVER = 2,   /* not for the fast path: node:http takes the connection with what was read */
};

enum { IMDS_METHOD_GET = 1, IMDS_METHOD_HEAD = 2 };

/** A stretch of the buffer: buf[off..off+len). */
struct imds_span {
  uint32_t off;
  uint32_t len;
};

struct imds_head {
  int method;              /* IMDS_METHOD_GET or IMDS_METHOD_HEAD */
  struct imds_span target; /* '/' then bytes 0x21-0x7e */
  bool keep_alive;         /* HTTP/1.1 unless Connection: close; HTTP/1.0 only with Connection: keep-alive */
  /* X-aws-ec2-metadata-token headers: 0 none, 1 `token` is its value; more: node:http joins them
     with ", " (imds_head_next_token walks them), which no session token matches. */
  uint32_t token_count;
  struct imds_span token;  /* the first one's value without leading/trailing SP and HT */
  size_t head_len;         /* bytes of the head, its CRLFCRLF included: the next request starts there */
};

/**
 * Reads the head at buf[0..len) as src/server/fast-path.ts does (its CRLFCRLF search and MAX_FAST_HEAD,
 * then parseHead): IMDS_HEAD_INCOMPLETE, IMDS_HEAD_HANDOVER or IMDS_HEAD_OK (out written only then).
 * The outcome depends on buf[0..head_len) alone: more bytes after a complete head change nothing, and
 * a head read in pieces gives INCOMPLETE for each piece, then what it gives whole.
 */
int imds_parse_head(const char *buf, size_t len, struct imds_head *out);

/**
 * The token headers of a head imds_parse_head took (IMDS_HEAD_OK), in order: *pos starts at 0;
 * true with *token set for each, false after the last.
 */
bool imds_head_next_token(const char *buf, const struct imds_head *head, size_t *pos, struct imds_span *token);

/**
 * The route key of a request target for the native data plane's table: the target without its query
 * ('?' and after) and without one trailing '/' (the root stays "/"). Written to out (at most len
 * bytes; the key is never longer than the target) with its length in *out_len. false when the target
 * needs the full normaliser (src/server/guest-api.ts normalisePath) or is not the data plane's to
 * answer: a '%' escape, a dot segment ("/." anywhere), an empty segment ("//"), or an empty path.
 * Every target this accepts normalises, in the JS, to a path whose segments are the key's.
 */
bool imds_route_key(const char *target, size_t len, char *out, size_t *out_len);

#endif
