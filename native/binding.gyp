{
  "targets": [
    {
      "target_name": "imds_netns",
      "sources": ["netns.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
