#!/usr/bin/env bash
# Removes namespaces left behind by an interrupted test, demo or bench run: only names with the
# given prefix (imdstest-, imdsdemo-, imdsbench-), killing the processes inside them first.
set -euo pipefail
prefix="${1:?usage: sweep.sh PREFIX}"
case "$prefix" in imdstest-|imdsdemo-|imdsbench-) ;; *) echo "sweep: refusing prefix $prefix" >&2; exit 2 ;; esac
[ -d /run/netns ] || exit 0
for ns in $(ls /run/netns); do
  case "$ns" in "$prefix"*) ;; *) continue ;; esac
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null && echo "sweep: removed leftover namespace $ns"
done
exit 0
