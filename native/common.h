// imds native helper: shared declarations.
#ifndef IMDS_COMMON_H
#define IMDS_COMMON_H

#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>

/** Throws an Error with code = the errno name, syscall = step; returns NULL. */
napi_value imds_throw_errno(napi_env env, const char *step, int err);
/** Throws a TypeError (ERR_INVALID_ARG_TYPE); returns NULL. */
napi_value imds_throw_type(napi_env env, const char *msg);

/** Reads the one argument of a call that takes a file descriptor; false (a TypeError thrown, `usage`
    its message) when it is not a non-negative integer. */
bool imds_fd_arg(napi_env env, napi_callback_info info, int32_t *fd, const char *usage);

/** Registers sdNotify and socketInfo (notify.c). */
void imds_register_notify(napi_env env, napi_value exports);
/** Registers parseHttpHead (http_head_napi.c). */
void imds_register_http_head(napi_env env, napi_value exports);

/** Registers the data plane's functions (dp_napi.c). */
void imds_register_data_plane(napi_env env, napi_value exports);

#endif
