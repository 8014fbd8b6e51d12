#!/usr/bin/env bash
# Builds the fuzz targets and runs each for a bounded time; fails on a crash.
#
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_TARGETS   targets to run (default "parse_request parse_text connection connection_text")
#
# Works from a clean clone: installs cargo-fuzz if missing and seeds the
# (gitignored) corpus directories from fuzz/seeds/. The toolchain is stable;
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly-only flags.
set -euo pipefail

cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-60}"
targets="${FUZZ_TARGETS:-parse_request parse_text connection connection_text}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked || cargo install cargo-fuzz
fi

echo "== building fuzz targets"
cargo fuzz build

status=0
for target in $targets; do
    mkdir -p "corpus/$target"
    if [ -d "seeds/$target" ]; then
        cp -n "seeds/$target"/* "corpus/$target/" 2>/dev/null || true
    fi
    log="$(mktemp)"
    echo "== fuzzing $target for ${seconds}s"
    # One process (no -jobs/-fork): the CI machine's cores are shared.
    if cargo fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        rc=0
    else
        rc=$?
    fi
    done_line="$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 || true)"
    if [ "$rc" -ne 0 ]; then
        echo "!! $target failed (exit $rc):"
        grep -E 'panicked at|^SUMMARY|ERROR: libFuzzer|Test unit written to|Base64:' "$log" || true
        sed -n '/panicked at/,/^SUMMARY/p' "$log" | head -n 25 || true
        status=1
    fi
    echo "$target: ${done_line:-no final stats line}"
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" | sed "s/^/$target: /" || true
    rm -f "$log"
done
exit "$status"
