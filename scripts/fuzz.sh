#!/usr/bin/env bash
# Fuzzes the guest request reader (native/http_head.c) with libFuzzer for a bounded time: the harness
# native/fuzz/http_head_fuzz.c under AddressSanitizer and UndefinedBehaviorSanitizer, starting from
# the committed corpus native/fuzz/corpus/ with the dictionary native/fuzz/http_head.dict. Fails on
# any crash, sanitizer report or failed check, and keeps the input that caused it. Then replays the
# corpus it grew through a coverage build and prints the reader's line and branch coverage.
#   --seconds N   how long to fuzz (default 60); 0 only replays the committed corpus
# Builds and works under a temporary directory in /tmp (removed unless something failed); the
# committed corpus is only read. scripts/setup.sh --fuzz installs clang and the libFuzzer runtime
# when missing (Debian 12: clang, libclang-rt-14-dev; llvm-14 comes with clang and brings
# llvm-profdata and llvm-cov).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
while [ "$#" -gt 0 ]; do
  case "$1" in
    --seconds)
      [ "$#" -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] || { echo "fuzz: --seconds needs a whole number" >&2; exit 2; }
      seconds="$2"
      shift 2
      ;;
    *) echo "fuzz: unknown argument: $1 (usage: scripts/fuzz.sh [--seconds N])" >&2; exit 2 ;;
  esac
done

./scripts/setup.sh --fuzz >/dev/null   # clang and libFuzzer's runtime, installed when missing
tool() { # the unversioned name, else Debian 12's versioned one
  if command -v "$1" >/dev/null; then echo "$1"; elif command -v "$1-14" >/dev/null; then echo "$1-14"; else return 1; fi
}
CC="$(tool clang)"

work="$(mktemp -d /tmp/imds-fuzz.XXXXXX)"
keep=0
trap '[ "$keep" = 1 ] || rm -rf "$work"' EXIT
src=native/fuzz/http_head_fuzz.c
lib=native/http_head.c
mkdir -p "$work/corpus"
cp native/fuzz/corpus/* "$work/corpus/"
"$CC" -g -O1 -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all "$src" "$lib" -o "$work/fuzz"

# max_len: room past IMDS_HEAD_BUF (8196), so heads around the size limit are tried too.
args=(-max_len=8400 -dict=native/fuzz/http_head.dict -artifact_prefix="$work/" -print_final_stats=1)
if [ "$seconds" -eq 0 ]; then
  args+=(-runs=0)
  echo "fuzz: replaying native/fuzz/corpus/"
else
  args+=(-max_total_time="$seconds")
  echo "fuzz: ${seconds}s of libFuzzer on imds_parse_head and imds_route_key"
fi
if ! "$work/fuzz" "${args[@]}" "$work/corpus" > "$work/fuzz.log" 2>&1; then
  keep=1
  tail -n 60 "$work/fuzz.log" >&2
  echo "fuzz: FAILED; the log and the input that failed (crash-*, leak-*, timeout-*) are in $work" >&2
  exit 1
fi
grep -E '^(Done|stat::(number_of_executed_units|average_exec_per_sec|new_units_added))' "$work/fuzz.log" | sed 's/^/fuzz: /'
{ grep -E '^#[0-9]+[[:space:]]+DONE' "$work/fuzz.log" || true; } | tail -n 1 | sed 's/^/fuzz: /'

# Source coverage of the reader over the corpus as it ended (informational: needs llvm-profdata/llvm-cov).
if PROFDATA="$(tool llvm-profdata)" && COV="$(tool llvm-cov)"; then
  "$CC" -O0 -fsanitize=fuzzer -fprofile-instr-generate -fcoverage-mapping "$src" "$lib" -o "$work/cover"
  LLVM_PROFILE_FILE="$work/cover.profraw" "$work/cover" -runs=0 "$work/corpus" > "$work/cover.log" 2>&1
  "$PROFDATA" merge -sparse "$work/cover.profraw" -o "$work/cover.profdata"
  echo "fuzz: coverage of $lib over $(find "$work/corpus" -type f | wc -l) inputs:"
  "$COV" report "$work/cover" -instr-profile="$work/cover.profdata" "$lib" | sed 's/^/fuzz:   /'
fi
echo "fuzz: no crash"
