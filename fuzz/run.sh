#!/usr/bin/env bash
# Runs one fuzz target, or all of them in turn, for a bounded time each; exits non-zero on a
# crash (libFuzzer writes the input to fuzz/artifacts/<target>/).
#
#   fuzz/run.sh parse 600       # one target for ten minutes
#   fuzz/run.sh all 30          # every target for 30 s each (the CI smoke run)
#
# cargo-fuzz needs nightly-only compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them, so no second toolchain is needed. Each run is one in-process job on one core
# (libFuzzer's default; -jobs=N would fork N workers), so the fuzzers never crowd the machine.
set -euo pipefail
cd "$(dirname "$0")"

if [ $# -ne 2 ]; then
    echo "usage: $0 TARGET|all SECONDS" >&2
    exit 2
fi
target=$1
seconds=$2
export RUSTC_BOOTSTRAP=1

if [ "$target" = all ]; then
    targets=$(cargo fuzz list)
else
    targets=$target
fi

for t in $targets; do
    echo "== fuzz $t for ${seconds}s"
    mkdir -p "corpus/$t"
    # Regression inputs are replayed first as extra seeds; new findings land in corpus/$t
    # (hash-named, git-ignored).
    extra=()
    if [ -d "regressions/$t" ]; then
        extra=("regressions/$t")
    fi
    cargo fuzz run "$t" "corpus/$t" "${extra[@]}" -- \
        -max_total_time="$seconds" -print_final_stats=1
done
