#!/usr/bin/env bash
# Removes what interrupted test, demo or bench runs left behind: network namespaces (killing the
# processes inside them first) and temporary directories whose names start with the given prefix
# (imdstest-, imdsdemo-, imdsbench-). A run names everything <prefix><pid>-<start time>-… after the
# process that made it (base 36; test/helpers/sandbox.ts RUN_OWNER): what belongs to a process
# that is still running — a concurrent run — is left alone.
set -euo pipefail
prefix="${1:?usage: sweep.sh PREFIX}"
case "$prefix" in imdstest-|imdsdemo-|imdsbench-) ;; *) echo "sweep: refusing prefix $prefix" >&2; exit 2 ;; esac

# True when NAME (without the prefix) belongs to a live process: pid and start time both match.
owner_alive() {
  local rest="$1"
  [[ "$rest" =~ ^([0-9a-z]+)-([0-9a-z]+)- ]] || return 1
  local pid=$((36#${BASH_REMATCH[1]})) start=$((36#${BASH_REMATCH[2]})) stat
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
  # shellcheck disable=SC2086 # split the fields after the command name on purpose
  set -- ${stat##*) }
  [ "${20:-}" = "$start" ]
}

if [ -d /run/netns ]; then
  for ns in $(ls /run/netns); do
    case "$ns" in "$prefix"*) ;; *) continue ;; esac
    owner_alive "${ns#"$prefix"}" && continue
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null && echo "sweep: removed leftover namespace $ns"
  done
fi
tmp="${TMPDIR:-/tmp}"
for dir in "$tmp/$prefix"*; do
  [ -e "$dir" ] || continue
  name="$(basename "$dir")"
  owner_alive "${name#"$prefix"}" && continue
  rm -rf -- "$dir" && echo "sweep: removed leftover directory $dir"
done
exit 0
