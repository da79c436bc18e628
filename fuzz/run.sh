#!/usr/bin/env bash
# Fuzz every target (or those named) for SECONDS each with AFL++ (afl.rs, stable toolchain):
#   fuzz/run.sh [SECONDS] [TARGET...]        (default 10 s; targets: see TARGETS below)
# FUZZ_PROFILE=dev builds without optimisation (faster to build, slower to run; CI's brief run).
# Seeds come from fuzz/corpus/<target>/; findings land in fuzz/out/<target>/default/{crashes,hangs}
# (each crash to be turned into fuzz/regressions/<target>/<name> with its fix). Prints each target's
# executions, coverage (AFL's bitmap) and crashes; exits 1 when any target crashed or hung.
set -euo pipefail
cd "$(dirname "$0")"
TARGETS=(image onnx_model record request manifest evaluation)
seconds=${1:-10}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${TARGETS[@]}")
profile=${FUZZ_PROFILE:-release}
# Not --locked: the committed Cargo.lock keeps its versions, and a dependency the project adds
# later is resolved here rather than failing the build.
if [[ $profile == release ]]; then
  cargo afl build --release --bins
  bin=target/release
else
  cargo afl build --bins
  bin=target/debug
fi
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
mkdir -p out
failed=0
for target in "${targets[@]}"; do
  rm -rf "out/$target"
  started=$(date +%s)
  # The targets link much instrumented code: AFL's coverage map must be as large as they say.
  AFL_MAP_SIZE=$(AFL_DUMP_MAP_SIZE=1 "$bin/$target" || true)
  export AFL_MAP_SIZE
  # -t: a model or a record may take long to load in a debug build; -m none: Rust's allocator.
  cargo afl fuzz -i "corpus/$target" -o "out/$target" -V "$seconds" -t 10000 -m none \
    "$bin/$target" > "out/$target.log" 2>&1 || { tail -n 20 "out/$target.log"; failed=1; continue; }
  stats="out/$target/default/fuzzer_stats"
  value() { sed -n "s/^$1 *: *//p" "$stats"; }
  printf '%-11s %6d s  %10s execs  coverage %7s  crashes %s  hangs %s\n' "$target" \
    $(( $(date +%s) - started )) "$(value execs_done)" "$(value bitmap_cvg)" \
    "$(value saved_crashes)" "$(value saved_hangs)"
  if [[ "$(value saved_crashes)" != 0 || "$(value saved_hangs)" != 0 ]]; then
    failed=1
  fi
done
exit $failed
