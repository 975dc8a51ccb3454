#!/usr/bin/env bash
# Runs every fuzz target of syncnode for FUZZTIME (default 60s) each, one at a
# time, prints the executions per target, and copies the corpus each run
# grew into the package's testdata/fuzz, so that "go test" replays it.
#   scripts/fuzz.sh            all targets
#   FUZZTIME=10s scripts/fuzz.sh FuzzBatch FuzzDecode
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-60s}
cache=$(go env GOCACHE)/fuzz
module=$(go list -m)
want=" $* "

grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r file; do
  pkg=$(dirname "$file")
  for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | cut -d' ' -f2); do
    if [ $# -gt 0 ] && [[ "$want" != *" $target "* ]]; then continue; fi
    out=$(go test "$pkg" -run "^${target}\$" -fuzz "^${target}\$" -fuzztime "$fuzztime" -parallel "${FUZZPARALLEL:-1}" 2>&1) || {
      echo "$out"; echo "FAIL $pkg $target"; exit 1; }
    execs=$(echo "$out" | grep -o 'execs: [0-9]*' | tail -1 | cut -d' ' -f2)
    dir="$cache/$module/${pkg#./}/$target"
    [ "$pkg" = . ] && dir="$cache/$module/$target"
    kept=0
    if [ -d "$dir" ]; then
      mkdir -p "$pkg/testdata/fuzz/$target"
      cp -n "$dir"/* "$pkg/testdata/fuzz/$target/" 2>/dev/null || true
      kept=$(ls "$pkg/testdata/fuzz/$target" | wc -l)
    fi
    printf '%-28s %-22s %12s execs in %s, corpus %d files\n' "$pkg" "$target" "${execs:-?}" "$fuzztime" "$kept"
  done
done
