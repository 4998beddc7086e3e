// imds native helper.
//
// listenInNetns(nsPath, ip, port, backlog, reusePort) -> fd
//   Opens an IPv4 TCP listening socket inside the network namespace pinned at nsPath.
//   The calling thread enters the namespace with setns(2) only for socket/bind/listen and
//   returns to its own namespace before the call returns; a socket keeps the namespace it
//   was created in, so the fd can then be handed to net.Server#listen({ fd }).
//
// socketInNetns(nsPath) -> fd
//   Creates an unconnected IPv4 TCP socket inside the namespace (for the daemon's own requests
//   through a namespace, e.g. `imds vm get`); wrap it with new net.Socket({ fd }) and connect.
//
// enterNetns(nsPath) -> savedFd, restoreNetns(savedFd)
//   Moves the calling thread into a namespace and back. Only for starting a child process there:
//   child_process.spawn forks synchronously, and the child inherits the thread's namespace (no
//   nsenter, and unlike `ip -n` no private mount namespace). Callers restore in a finally block.
//
// createNetns(dir, name)
//   What `ip netns add NAME` does, in-process: a new network namespace pinned by a bind mount at
//   DIR/NAME (DIR made a shared mount point first, as iproute2 does, so the namespace is visible to
//   every mount namespace). The calling thread enters the new namespace only to pin it and is back in
//   its own before the call returns. EEXIST when the name is taken.
//
// setIpTtl(fd, ttl)
//   Sets IP_TTL on a connected socket (hop limit for selected replies).
//
// tuneNetlink(port, rcvbuf) -> boolean
//   Finds this process's netlink sockets bound to `port` (the `netlink` package does not expose its
//   fds; /proc/self/fd lists ours) and sets NETLINK_NO_ENOBUFS on them, with a receive buffer of at
//   least rcvbuf bytes (SO_RCVBUFFORCE).
//   The package aborts the process when a socket reports an error through poll (an overrun sets
//   one); with NO_ENOBUFS the kernel drops what does not fit without flagging the socket. false
//   when no such socket is found.
//
// Errors are thrown as JS Errors with `code` = the errno name and `syscall` = the failing step.

#define _GNU_SOURCE
#include <node_api.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/netlink.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

#define throw_errno imds_throw_errno
#define throw_type imds_throw_type

// Reads a namespace path argument into buf; false (with a TypeError thrown) when it is not one.
static bool get_ns_path(napi_env env, napi_value value, char *buf, size_t size) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, value, buf, size, &len) != napi_ok || len == 0 || len >= size - 1) {
    throw_type(env, "nsPath must be a non-empty string");
    return false;
  }
  return true;
}

// Moves the calling thread into the namespace at path; *self is its own namespace, to go back to
// with leave_netns(). false (with the error thrown, nothing left open) when it cannot.
static bool enter_netns_at(napi_env env, const char *path, int *self) {
  *self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (*self < 0) {
    throw_errno(env, "open own netns", errno);
    return false;
  }
  int target = open(path, O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    int err = errno;
    close(*self);
    throw_errno(env, "open target netns", err);
    return false;
  }
  int rc = setns(target, CLONE_NEWNET);
  int err = errno;
  close(target);
  if (rc < 0) {
    close(*self);
    throw_errno(env, "setns", err);
    return false;
  }
  return true;
}

// Back to the thread's own namespace; never continue running JavaScript in the wrong one.
static void leave_netns(int self) {
  if (setns(self, CLONE_NEWNET) < 0) abort();
  close(self);
}

static napi_value listen_in_netns(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5)
    return throw_type(env, "listenInNetns(nsPath, ip, port, backlog, reusePort) needs 5 arguments");

  char path[4096], ip[64];
  size_t len = 0;
  int32_t port = 0, backlog = 0;
  bool reuse_port = false;
  if (!get_ns_path(env, argv[0], path, sizeof path)) return NULL;
  if (napi_get_value_string_utf8(env, argv[1], ip, sizeof ip, &len) != napi_ok || len == 0)
    return throw_type(env, "ip must be a non-empty string");
  if (napi_get_value_int32(env, argv[2], &port) != napi_ok || port < 0 || port > 65535)
    return throw_type(env, "port must be an integer 0..65535");
  if (napi_get_value_int32(env, argv[3], &backlog) != napi_ok || backlog < 1)
    return throw_type(env, "backlog must be a positive integer");
  if (napi_get_value_bool(env, argv[4], &reuse_port) != napi_ok)
    return throw_type(env, "reusePort must be a boolean");

  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, ip, &addr.sin_addr) != 1) return throw_errno(env, "inet_pton", EINVAL);

  int self;
  if (!enter_netns_at(env, path, &self)) return NULL;

  // Inside the target namespace: only the socket calls happen here.
  int err = 0;
  const char *step = "socket";
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    err = errno;
  } else {
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) {
      err = errno;
      step = "setsockopt(SO_REUSEADDR)";
    } else if (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
      err = errno;
      step = "setsockopt(SO_REUSEPORT)";
    } else if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
      err = errno;
      step = "bind";
    } else if (listen(fd, backlog) < 0) {
      err = errno;
      step = "listen";
    }
  }

  leave_netns(self);

  if (err != 0) {
    if (fd >= 0) close(fd);
    return throw_errno(env, step, err);
  }
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

static napi_value socket_in_netns(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char path[4096];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1)
    return throw_type(env, "socketInNetns(nsPath) needs 1 argument");
  if (!get_ns_path(env, argv[0], path, sizeof path)) return NULL;

  int self;
  if (!enter_netns_at(env, path, &self)) return NULL;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int err = fd < 0 ? errno : 0;
  leave_netns(self);
  if (fd < 0) return throw_errno(env, "socket", err);
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

static napi_value enter_netns(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char path[4096];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1)
    return throw_type(env, "enterNetns(nsPath) needs 1 argument");
  if (!get_ns_path(env, argv[0], path, sizeof path)) return NULL;
  int self;
  if (!enter_netns_at(env, path, &self)) return NULL;
  napi_value out;
  napi_create_int32(env, self, &out);
  return out;
}

static napi_value restore_netns(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!imds_fd_arg(env, info, &fd, "restoreNetns(savedFd) needs the fd enterNetns returned")) return NULL;
  leave_netns(fd);
  return NULL;
}

static napi_value create_netns(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char dir[2048], name[256], path[2400];
  size_t len = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2)
    return throw_type(env, "createNetns(dir, name) needs 2 arguments");
  if (napi_get_value_string_utf8(env, argv[0], dir, sizeof dir, &len) != napi_ok || len == 0 || len >= sizeof dir - 1)
    return throw_type(env, "dir must be a non-empty string");
  if (napi_get_value_string_utf8(env, argv[1], name, sizeof name, &len) != napi_ok || len == 0 || len >= sizeof name - 1 ||
      strchr(name, '/') != NULL || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
    return throw_type(env, "name must be a plain file name");
  snprintf(path, sizeof path, "%s/%s", dir, name);

  if (mkdir(dir, 0755) < 0 && errno != EEXIST) return throw_errno(env, "mkdir", errno);
  // Make the directory a shared mount point (bind it onto itself first if it is not a mount point).
  if (mount("", dir, "none", MS_SHARED | MS_REC, NULL) < 0) {
    if (errno != EINVAL) return throw_errno(env, "mount --make-shared", errno);
    if (mount(dir, dir, "none", MS_BIND | MS_REC, NULL) < 0) return throw_errno(env, "mount --bind", errno);
    if (mount("", dir, "none", MS_SHARED | MS_REC, NULL) < 0) return throw_errno(env, "mount --make-shared", errno);
  }
  int file = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
  if (file < 0) return throw_errno(env, "create", errno);
  close(file);

  int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self < 0) {
    int err = errno;
    unlink(path);
    return throw_errno(env, "open own netns", err);
  }
  int err = 0;
  const char *step = "unshare";
  if (unshare(CLONE_NEWNET) < 0) {
    err = errno;
  } else if (mount("/proc/thread-self/ns/net", path, "none", MS_BIND, NULL) < 0) {
    err = errno;
    step = "mount --bind";
  }
  leave_netns(self);
  if (err != 0) {
    unlink(path);
    return throw_errno(env, step, err);
  }
  return NULL;
}

static napi_value set_ip_ttl(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd = -1, ttl = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2)
    return throw_type(env, "setIpTtl(fd, ttl) needs 2 arguments");
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0)
    return throw_type(env, "fd must be a non-negative integer");
  if (napi_get_value_int32(env, argv[1], &ttl) != napi_ok || ttl < 1 || ttl > 255)
    return throw_type(env, "ttl must be an integer 1..255");
  int value = ttl;
  if (setsockopt(fd, IPPROTO_IP, IP_TTL, &value, sizeof value) < 0)
    return throw_errno(env, "setsockopt(IP_TTL)", errno);
  return NULL;
}

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

static napi_value tune_netlink(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  uint32_t port = 0;
  int32_t rcvbuf = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2)
    return throw_type(env, "tuneNetlink(port, rcvbuf) needs 2 arguments");
  if (napi_get_value_uint32(env, argv[0], &port) != napi_ok || port == 0)
    return throw_type(env, "port must be a positive integer");
  if (napi_get_value_int32(env, argv[1], &rcvbuf) != napi_ok || rcvbuf < 0)
    return throw_type(env, "rcvbuf must be a non-negative integer");
  // Port ids are per namespace: a socket in another namespace may share it. Every match is set
  // (the options are harmless on any netlink socket of ours); rcvbuf only grows a buffer.
  DIR *dir = opendir("/proc/self/fd");
  if (dir == NULL) return throw_errno(env, "opendir /proc/self/fd", errno);
  int own = dirfd(dir), matched = 0, err = 0;
  const char *step = NULL;
  struct dirent *entry;
  while ((entry = readdir(dir)) != NULL) {
    char *end = NULL;
    long fd = strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == own) continue;
    struct sockaddr_nl addr;
    socklen_t len = sizeof addr;
    memset(&addr, 0, sizeof addr);
    if (getsockname((int)fd, (struct sockaddr *)&addr, &len) < 0 || addr.nl_family != AF_NETLINK || addr.nl_pid != port) continue;
    matched++;
    int one = 1;
    if (setsockopt((int)fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one) < 0) {
      err = errno;
      step = "setsockopt(NETLINK_NO_ENOBUFS)";
      break;
    }
    int current = 0;
    socklen_t size = sizeof current;
    if (rcvbuf > 0 && getsockopt((int)fd, SOL_SOCKET, SO_RCVBUF, &current, &size) == 0 && current < rcvbuf &&
        setsockopt((int)fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0 &&
        setsockopt((int)fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) < 0) {
      err = errno;
      step = "setsockopt(SO_RCVBUF)";
      break;
    }
  }
  closedir(dir);
  if (err != 0) return throw_errno(env, step, err);
  napi_value out;
  if (matched == 0) {
    napi_get_boolean(env, false, &out);
    return out;
  }
  napi_get_boolean(env, true, &out);
  return out;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  imds_register_notify(env, exports);
  imds_register_http_head(env, exports);
  imds_register_data_plane(env, exports);
  napi_create_function(env, "listenInNetns", NAPI_AUTO_LENGTH, listen_in_netns, NULL, &fn);
  napi_set_named_property(env, exports, "listenInNetns", fn);
  napi_create_function(env, "socketInNetns", NAPI_AUTO_LENGTH, socket_in_netns, NULL, &fn);
  napi_set_named_property(env, exports, "socketInNetns", fn);
  napi_create_function(env, "enterNetns", NAPI_AUTO_LENGTH, enter_netns, NULL, &fn);
  napi_set_named_property(env, exports, "enterNetns", fn);
  napi_create_function(env, "restoreNetns", NAPI_AUTO_LENGTH, restore_netns, NULL, &fn);
  napi_set_named_property(env, exports, "restoreNetns", fn);
  napi_create_function(env, "createNetns", NAPI_AUTO_LENGTH, create_netns, NULL, &fn);
  napi_set_named_property(env, exports, "createNetns", fn);
  napi_create_function(env, "setIpTtl", NAPI_AUTO_LENGTH, set_ip_ttl, NULL, &fn);
  napi_set_named_property(env, exports, "setIpTtl", fn);
  napi_create_function(env, "tuneNetlink", NAPI_AUTO_LENGTH, tune_netlink, NULL, &fn);
  napi_set_named_property(env, exports, "tuneNetlink", fn);
  return exports;
}
