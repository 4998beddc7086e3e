// imds native helper: what every part shares (errors thrown as JS Errors with `code` = the errno
// name and `syscall` = the failing step).
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

static const char *errno_name(int err) {
  switch (err) {
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EINVAL: return "EINVAL";
    case EADDRINUSE: return "EADDRINUSE";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case EBADF: return "EBADF";
    case EEXIST: return "EEXIST";
    case ENOTSOCK: return "ENOTSOCK";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOMEM: return "ENOMEM";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EAGAIN: return "EAGAIN";
    case ENOTDIR: return "ENOTDIR";
    default: return "EUNKNOWN";
  }
}

napi_value imds_throw_errno(napi_env env, const char *step, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", step, strerror(err));
  napi_value code, message, error, syscall, errnum;
  napi_create_string_utf8(env, errno_name(err), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_string_utf8(env, step, NAPI_AUTO_LENGTH, &syscall);
  napi_set_named_property(env, error, "syscall", syscall);
  napi_create_int32(env, err, &errnum);
  napi_set_named_property(env, error, "errno", errnum);
  napi_throw(env, error);
  return NULL;
}

napi_value imds_throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}


bool imds_fd_arg(napi_env env, napi_callback_info info, int32_t *fd, const char *usage) {
  size_t argc = 1;
  napi_value argv[1];
  *fd = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], fd) != napi_ok || *fd < 0) {
    imds_throw_type(env, usage);
    return false;
  }
  return true;
}
