// imds native helper: the guest request reader (http_head.c) seen from JS, for its tests.
//
// parseHttpHead(buf) -> { status: 'incomplete' } | { status: 'handover' }
//                     | { status: 'ok', method, target, keepAlive, token?, headLength }
//   What imds_parse_head makes of buf, in the JS fast path's terms: target and token as latin1
//   strings, several token headers joined with ", " as node:http joins them.

#include <node_api.h>

#include <string.h>

#include "common.h"
#include "http_head.h"

static napi_value parse_http_head(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  bool is_buffer = false;
  void *data = NULL;
  size_t len = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_is_buffer(env, argv[0], &is_buffer) != napi_ok ||
      !is_buffer || napi_get_buffer_info(env, argv[0], &data, &len) != napi_ok)
    return imds_throw_type(env, "parseHttpHead(buf) needs a Buffer");

  struct imds_head head;
  int status = imds_parse_head(data, len, &head);
  napi_value out, v;
  napi_create_object(env, &out);
  const char *name = status == IMDS_HEAD_OK ? "ok" : status == IMDS_HEAD_HANDOVER ? "handover" : "incomplete";
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, out, "status", v);
  if (status != IMDS_HEAD_OK) return out;

  const char *text = data;
  napi_create_string_utf8(env, head.method == IMDS_METHOD_GET ? "GET" : "HEAD", NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, out, "method", v);
  napi_create_string_latin1(env, text + head.target.off, head.target.len, &v);
  napi_set_named_property(env, out, "target", v);
  napi_get_boolean(env, head.keep_alive, &v);
  napi_set_named_property(env, out, "keepAlive", v);
  if (head.token_count == 1) {
    napi_create_string_latin1(env, text + head.token.off, head.token.len, &v);
    napi_set_named_property(env, out, "token", v);
  } else if (head.token_count > 1) {
    // Each further value replaces at least CRLF, the header's name and ':' with ", ": the joined
    // string is shorter than the head.
    char joined[IMDS_HEAD_BUF];
    size_t n = 0, pos = 0;
    struct imds_span token;
    for (uint32_t i = 0; imds_head_next_token(text, &head, &pos, &token) && n + 2 + token.len <= sizeof joined; i++) {
      if (i > 0) {
        joined[n++] = ',';
        joined[n++] = ' ';
      }
      memcpy(joined + n, text + token.off, token.len);
      n += token.len;
    }
    napi_create_string_latin1(env, joined, n, &v);
    napi_set_named_property(env, out, "token", v);
  }
  napi_create_double(env, (double)head.head_len, &v);
  napi_set_named_property(env, out, "headLength", v);
  return out;
}

// routeKey(target) -> string | undefined: imds_route_key's key for a target (for its tests).
static napi_value route_key(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  char target[IMDS_HEAD_BUF], key[IMDS_HEAD_BUF];
  size_t len = 0, key_len = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_string_latin1(env, argv[0], target, sizeof target, &len) != napi_ok)
    return imds_throw_type(env, "routeKey(target) needs a string");
  if (!imds_route_key(target, len, key, &key_len)) {
    napi_get_undefined(env, &out);
    return out;
  }
  napi_create_string_latin1(env, key, key_len, &out);
  return out;
}

void imds_register_http_head(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "routeKey", NAPI_AUTO_LENGTH, route_key, NULL, &fn);
  napi_set_named_property(env, exports, "routeKey", fn);
  napi_create_function(env, "parseHttpHead", NAPI_AUTO_LENGTH, parse_http_head, NULL, &fn);
  napi_set_named_property(env, exports, "parseHttpHead", fn);
}
