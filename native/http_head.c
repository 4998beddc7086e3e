// imds native helper: the guest request reader, byte for byte what the JS fast path decides
// (src/server/fast-path.ts: onData's CRLFCRLF search and MAX_FAST_HEAD, then parseHead). The JS
// reads the head as latin1, so every byte is one character; how its regexes come out here:
//
//   request line   "GET " or "HEAD ", a target matching /^\/[\x21-\x7e]*$/, " HTTP/1.1" or
//                  " HTTP/1.0", then the head's end or CRLF. (Exactly three parts split on spaces.)
//   ODD_LINE       after the request line, every line is CRLF, a header name of one or more tchars,
//                  ':', and a value with no CR or LF. Anything else (a line without a colon, an
//                  empty name, obs-fold, a separator, a byte >= 0x80 or a control in a name, a bare
//                  CR or LF anywhere) hands over.
//   CONTROL        a control byte (0x00-0x08, 0x0b, 0x0c, 0x0e-0x1f, 0x7f) anywhere hands over.
//   toLowerCase    lowercases A-Z and latin1's À-Þ; only names (tchars: ASCII) are matched against
//                  words, and no latin1 letter lowercases to ASCII, so ASCII case folding is all.
//   BODY_OR_UPGRADE  a transfer-encoding, upgrade or expect header hands over. (The \s* before the
//                  colon can only be empty once ODD_LINE passed: whitespace is no tchar.)
//   CONTENT_LENGTH at most one content-length header, its value "0" with SP and HT around.
//   CONNECTION     at most one connection header: an element (split on ',', SP and HT trimmed)
//                  "close" clears keep-alive, else one "keep-alive" sets it.
//   TOKEN          each x-aws-ec2-metadata-token header, its value without leading and trailing SP
//                  and HT; the JS joins several with ", ".

#include <string.h>

#include "http_head.h"

static const char CRLFCRLF[4] = {'\r', '\n', '\r', '\n'};

static bool is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

static unsigned char ascii_lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c; }

/** Whether s[v.off..v.off+v.len) is `word` (lowercase ASCII), ASCII case aside. */
static bool span_is(const unsigned char *s, struct imds_span v, const char *word) {
  size_t n = strlen(word);
  if (v.len != n) return false;
  for (size_t i = 0; i < n; i++)
    if (ascii_lower(s[v.off + i]) != (unsigned char)word[i]) return false;
  return true;
}

/** The span without the leading and trailing bytes `strip` says are space. */
static struct imds_span trim(const unsigned char *s, struct imds_span v, bool (*strip)(unsigned char)) {
  while (v.len > 0 && strip(s[v.off])) {
    v.off++;
    v.len--;
  }
  while (v.len > 0 && strip(s[v.off + v.len - 1])) v.len--;
  return v;
}

static bool is_sp_ht(unsigned char c) { return c == ' ' || c == '\t'; }

static bool is_control(unsigned char c) { return (c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7f; }

/** Whether the comma-separated list in v has an element that is `word` once trimmed (/(^|,)\s*word\s*(,|$)/). */
static bool list_has(const unsigned char *s, struct imds_span v, const char *word) {
  uint32_t start = v.off, stop = v.off + v.len;
  for (uint32_t i = v.off; i <= stop; i++) {
    if (i < stop && s[i] != ',') continue;
    struct imds_span element = {start, i - start};
    if (span_is(s, trim(s, element, is_sp_ht), word)) return true;
    start = i + 1;
  }
  return false;
}

/**
 * The header line after the CRLF at s[p] (p < end): its name and value, the value ending at the next
 * CRLF or at end. false when ODD_LINE would match in it: no colon, a name that is not all tchars, a
 * bare CR or LF.
 */
static bool header_line(const unsigned char *s, size_t end, size_t p, struct imds_span *name, struct imds_span *value) {
  size_t q = p + 2;
  while (q < end && is_tchar(s[q])) q++;
  if (q == p + 2 || q >= end || s[q] != ':') return false;
  size_t e = q + 1;
  while (e < end && s[e] != '\r' && s[e] != '\n') e++;
  if (e < end && (s[e] == '\n' || e + 1 >= end || s[e + 1] != '\n')) return false;
  name->off = (uint32_t)(p + 2);
  name->len = (uint32_t)(q - (p + 2));
  value->off = (uint32_t)(q + 1);
  value->len = (uint32_t)(e - (q + 1));
  return true;
}

#define TOKEN_HEADER "x-aws-ec2-metadata-token"

int imds_parse_head(const char *buf, size_t len, struct imds_head *out) {
  const unsigned char *s = (const unsigned char *)buf;
  if (len == 0) return IMDS_HEAD_INCOMPLETE;

  // The first CRLFCRLF, if it starts at or before IMDS_HEAD_MAX (one further on hands over).
  size_t limit = len < IMDS_HEAD_BUF ? len : IMDS_HEAD_BUF, end = 0;
  bool found = false;
  for (size_t i = 0; i + 4 <= limit;) {
    const unsigned char *cr = memchr(s + i, '\r', limit - 3 - i);
    if (cr == NULL) break;
    i = (size_t)(cr - s);
    if (memcmp(cr, CRLFCRLF, 4) == 0) {
      end = i;
      found = true;
      break;
    }
    i++;
  }
  if (!found) {
    // Incomplete while a CRLFCRLF could still start at or before IMDS_HEAD_MAX: at the last bytes
    // when they begin one ("\r", "\r\n", "\r\n\r"; the longest such suffix), else right after them.
    size_t k = len < 3 ? len : 3;
    for (; k > 0; k--)
      if (memcmp(s + len - k, CRLFCRLF, k) == 0) break;
    return len - k <= IMDS_HEAD_MAX ? IMDS_HEAD_INCOMPLETE : IMDS_HEAD_HANDOVER;
  }

  // The request line: method SP target SP version, then CRLF or the end.
  struct imds_head h;
  size_t p;
  if (end >= 4 && memcmp(s, "GET ", 4) == 0) {
    h.method = IMDS_METHOD_GET;
    p = 4;
  } else if (end >= 5 && memcmp(s, "HEAD ", 5) == 0) {
    h.method = IMDS_METHOD_HEAD;
    p = 5;
  } else {
    return IMDS_HEAD_HANDOVER;
  }
  size_t t = p;
  if (p >= end || s[p] != '/') return IMDS_HEAD_HANDOVER;
  while (p < end && s[p] >= 0x21 && s[p] <= 0x7e) p++;
  if (p >= end || s[p] != ' ') return IMDS_HEAD_HANDOVER;
  h.target.off = (uint32_t)t;
  h.target.len = (uint32_t)(p - t);
  p++;
  if (end - p < 8 || memcmp(s + p, "HTTP/1.", 7) != 0 || (s[p + 7] != '1' && s[p + 7] != '0')) return IMDS_HEAD_HANDOVER;
  h.keep_alive = s[p + 7] == '1';
  p += 8;
  if (p < end && (p + 1 >= end || s[p] != '\r' || s[p + 1] != '\n')) return IMDS_HEAD_HANDOVER;
  for (size_t i = p; i < end; i++)
    if (is_control(s[i])) return IMDS_HEAD_HANDOVER;

  // The header lines: p is at the CRLF before each.
  h.token_count = 0;
  h.token.off = h.token.len = 0;
  bool have_connection = false, have_length = false;
  struct imds_span connection = {0, 0};
  while (p < end) {
    struct imds_span name, value;
    if (!header_line(s, end, p, &name, &value)) return IMDS_HEAD_HANDOVER;
    p = value.off + value.len;
    if (span_is(s, name, "transfer-encoding") || span_is(s, name, "upgrade") || span_is(s, name, "expect"))
      return IMDS_HEAD_HANDOVER;
    if (span_is(s, name, "content-length")) {
      struct imds_span v = trim(s, value, is_sp_ht);
      if (have_length || v.len != 1 || s[v.off] != '0') return IMDS_HEAD_HANDOVER;
      have_length = true;
    } else if (span_is(s, name, "connection")) {
      if (have_connection) return IMDS_HEAD_HANDOVER;
      connection = value;
      have_connection = true;
    } else if (span_is(s, name, TOKEN_HEADER)) {
      if (h.token_count++ == 0) h.token = trim(s, value, is_sp_ht);
    }
  }
  if (have_connection) {
    if (list_has(s, connection, "close"))
      h.keep_alive = false;
    else if (list_has(s, connection, "keep-alive"))
      h.keep_alive = true;
  }
  h.head_len = end + 4;
  *out = h;
  return IMDS_HEAD_OK;
}

bool imds_head_next_token(const char *buf, const struct imds_head *head, size_t *pos, struct imds_span *token) {
  const unsigned char *s = (const unsigned char *)buf;
  size_t end = head->head_len - 4;
  // Past the request line: at its CRLF (or the end); 0 is never a CRLF (the head starts with the method).
  size_t p = *pos != 0 ? *pos : (size_t)head->target.off + head->target.len + 9;
  while (p < end) {
    struct imds_span name, value;
    if (!header_line(s, end, p, &name, &value)) break;  // not a head imds_parse_head took
    p = value.off + value.len;
    if (span_is(s, name, TOKEN_HEADER)) {
      *token = trim(s, value, is_sp_ht);
      *pos = p;
      return true;
    }
  }
  *pos = end;
  return false;
}

bool imds_route_key(const char *target, size_t len, char *out, size_t *out_len) {
  const char *q = memchr(target, '?', len);
  size_t n = q == NULL ? len : (size_t)(q - target);
  if (n == 0 || target[0] != '/') return false;
  for (size_t i = 0; i < n; i++) {
    if (target[i] == '%') return false;
    if (target[i] == '/' && i + 1 < n && (target[i + 1] == '/' || target[i + 1] == '.')) return false;
  }
  if (n > 1 && target[n - 1] == '/') n--;
  memcpy(out, target, n);
  *out_len = n;
  return true;
}
