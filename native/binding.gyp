{
  "targets": [
    {
      "target_name": "imds_netns",
      "sources": ["netns.c", "common.c", "notify.c", "http_head.c", "http_head_napi.c", "dp_table.c", "dp_loop.c", "dp_napi.c"],
      "cflags": ["-Wall", "-Wextra", "-O2", "-pthread"],
      "ldflags": ["-pthread"]
    }
  ]
}
