// imds native helper, part 2: talking to systemd, and looking at sockets handed to us.
//
// sdNotify(state, fds?) -> boolean
//   sd_notify(3) from the calling process itself (so NotifyAccess=main suffices): one datagram with
//   `state` (e.g. "READY=1\nSTATUS=..." or "FDSTORE=1\nFDNAME=...") to $NOTIFY_SOCKET (a path, or
//   an abstract socket when it starts with '@'), with `fds` attached (SCM_RIGHTS) when given: the
//   file-descriptor store keeps them across restarts. false when $NOTIFY_SOCKET is not set.
//
// socketInfo(fd) -> { listening, tcp, port, netnsInode }
//   What an inherited fd is: a listening TCP socket or not, its local port, and the inode of the
//   network namespace it was created in (SIOCGSKNS), to tell whether a stored socket still belongs
//   to a network's current namespace. netnsInode is 0 when the kernel cannot tell.
//
// setCloexec(fd)
//   Marks an inherited fd close-on-exec (systemd passes stored fds without it; the daemon's
//   children — the spawner, dnsmasq — must not hold the listening sockets).

#define _GNU_SOURCE
#include <node_api.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common.h"

#define MAX_NOTIFY_FDS 253

static napi_value sd_notify_js(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1)
    return imds_throw_type(env, "sdNotify(state, fds?) needs a state");
  size_t len = 0;
  if (napi_get_value_string_utf8(env, argv[0], NULL, 0, &len) != napi_ok)
    return imds_throw_type(env, "state must be a string");
  char *state = malloc(len + 1);
  if (state == NULL) return imds_throw_errno(env, "malloc", ENOMEM);
  napi_get_value_string_utf8(env, argv[0], state, len + 1, &len);

  int fds[MAX_NOTIFY_FDS];
  uint32_t nfds = 0;
  bool has_fds = false;
  if (argc >= 2) {
    napi_valuetype t;
    napi_typeof(env, argv[1], &t);
    if (t != napi_undefined && t != napi_null) {
      if (napi_is_array(env, argv[1], &has_fds) != napi_ok || !has_fds) {
        free(state);
        return imds_throw_type(env, "fds must be an array of integers");
      }
      napi_get_array_length(env, argv[1], &nfds);
      if (nfds > MAX_NOTIFY_FDS) {
        free(state);
        return imds_throw_type(env, "too many fds");
      }
      for (uint32_t i = 0; i < nfds; i++) {
        napi_value v;
        napi_get_element(env, argv[1], i, &v);
        if (napi_get_value_int32(env, v, &fds[i]) != napi_ok || fds[i] < 0) {
          free(state);
          return imds_throw_type(env, "fds must be an array of non-negative integers");
        }
      }
    }
  }

  const char *target = getenv("NOTIFY_SOCKET");
  napi_value out;
  if (target == NULL || target[0] == '\0') {
    free(state);
    napi_get_boolean(env, false, &out);
    return out;
  }
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  size_t tlen = strlen(target);
  if (tlen >= sizeof addr.sun_path) {
    free(state);
    return imds_throw_errno(env, "NOTIFY_SOCKET", ENAMETOOLONG);
  }
  memcpy(addr.sun_path, target, tlen);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';
  socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + tlen);

  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    int err = errno;
    free(state);
    return imds_throw_errno(env, "socket", err);
  }
  struct iovec iov = {.iov_base = state, .iov_len = len};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_name = &addr;
  msg.msg_namelen = alen;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  char *control = NULL;
  if (nfds > 0) {
    size_t clen = CMSG_SPACE(sizeof(int) * nfds);
    control = calloc(1, clen);
    if (control == NULL) {
      close(s);
      free(state);
      return imds_throw_errno(env, "calloc", ENOMEM);
    }
    msg.msg_control = control;
    msg.msg_controllen = clen;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t sent = sendmsg(s, &msg, MSG_NOSIGNAL);
  int err = sent < 0 ? errno : 0;
  close(s);
  free(control);
  free(state);
  if (err != 0) return imds_throw_errno(env, "sendmsg", err);
  napi_get_boolean(env, true, &out);
  return out;
}

static napi_value socket_info(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!imds_fd_arg(env, info, &fd, "socketInfo(fd) needs a non-negative fd")) return NULL;

  int listening = 0, type = 0, domain = 0;
  socklen_t l = sizeof listening;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &l) < 0) return imds_throw_errno(env, "getsockopt(SO_ACCEPTCONN)", errno);
  l = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0) return imds_throw_errno(env, "getsockopt(SO_TYPE)", errno);
  l = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &l) < 0) return imds_throw_errno(env, "getsockopt(SO_DOMAIN)", errno);
  struct sockaddr_in local;
  memset(&local, 0, sizeof local);
  l = sizeof local;
  int port = 0;
  if (domain == AF_INET && getsockname(fd, (struct sockaddr *)&local, &l) == 0) port = ntohs(local.sin_port);
  double ino = 0;
  int ns = ioctl(fd, SIOCGSKNS);
  if (ns >= 0) {
    struct stat st;
    if (fstat(ns, &st) == 0) ino = (double)st.st_ino;
    close(ns);
  }

  napi_value out, v;
  napi_create_object(env, &out);
  napi_get_boolean(env, listening != 0, &v);
  napi_set_named_property(env, out, "listening", v);
  napi_get_boolean(env, domain == AF_INET && type == SOCK_STREAM, &v);
  napi_set_named_property(env, out, "tcp", v);
  napi_create_int32(env, port, &v);
  napi_set_named_property(env, out, "port", v);
  napi_create_double(env, ino, &v);
  napi_set_named_property(env, out, "netnsInode", v);
  return out;
}

static napi_value set_cloexec(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!imds_fd_arg(env, info, &fd, "setCloexec(fd) needs a non-negative fd")) return NULL;
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) return imds_throw_errno(env, "fcntl(FD_CLOEXEC)", errno);
  return NULL;
}

void imds_register_notify(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "sdNotify", NAPI_AUTO_LENGTH, sd_notify_js, NULL, &fn);
  napi_set_named_property(env, exports, "sdNotify", fn);
  napi_create_function(env, "socketInfo", NAPI_AUTO_LENGTH, socket_info, NULL, &fn);
  napi_set_named_property(env, exports, "socketInfo", fn);
  napi_create_function(env, "setCloexec", NAPI_AUTO_LENGTH, set_cloexec, NULL, &fn);
  napi_set_named_property(env, exports, "setCloexec", fn);
}
