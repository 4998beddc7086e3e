{
  "targets": [
    {
      "target_name": "imds_netns",
      "sources": ["netns.c", "common.c", "notify.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
