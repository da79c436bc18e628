#!/usr/bin/env bash
# Fuzz every target (or those named) for SECONDS each with AFL++ (afl.rs, stable toolchain):
#   fuzz/run.sh [SECONDS] [TARGET...]        (default 10 s; targets: see TARGETS below)
# FUZZ_PROFILE=dev builds without optimisation (faster to build, slower to run; CI's brief run).
# FUZZ_PARALLEL=1 runs the targets at once instead of one after another; FUZZ_OUT=DIR writes
# findings there instead of fuzz/out (a brief run beside a long one).
# Seeds come from fuzz/corpus/<target>/; findings land in fuzz/out/<target>/default/{crashes,hangs}
# (each crash to be turned into fuzz/regressions/<target>/<name> with its fix). Prints each target's
# executions, coverage (edges found, and their share of AFL's map) and crashes; exits 1 when any
# target crashed or hung.
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
out=${FUZZ_OUT:-out}
mkdir -p "$out"
# Dictionaries of the tokens each input format is made of (AFL splices them in).
dictionaries() {
  case $1 in
    image) echo -x dict/image.dict ;;
    onnx_model) echo -x dict/onnx.dict ;;
    request) echo -x dict/json.dict -x dict/multipart.dict ;;
    *) echo -x dict/json.dict ;;
  esac
}
# Fuzzes one target for $seconds; prints its line; fails when it crashed or hung.
fuzz_one() {
  local target=$1 started stats
  rm -rf "$out/$target"
  started=$(date +%s)
  # The targets link much instrumented code: AFL's coverage map must be as large as they say.
  AFL_MAP_SIZE=$(AFL_DUMP_MAP_SIZE=1 "$bin/$target" || true)
  export AFL_MAP_SIZE
  # -t: a model or a record may take long to load in a debug build; -m none: Rust's allocator.
  # shellcheck disable=SC2046
  if ! cargo afl fuzz -i "corpus/$target" -o "$out/$target" -V "$seconds" -t 10000 -m none \
    $(dictionaries "$target") "$bin/$target" > "$out/$target.log" 2>&1; then
    tail -n 20 "$out/$target.log"
    return 1
  fi
  stats="$out/$target/default/fuzzer_stats"
  value() { sed -n "s/^$1 *: *//p" "$stats"; }
  printf '%-11s %6d s  %10s execs  %6s edges (%6s of the map)  crashes %s  hangs %s\n' "$target" \
    $(( $(date +%s) - started )) "$(value execs_done)" "$(value edges_found)" "$(value bitmap_cvg)" \
    "$(value saved_crashes)" "$(value saved_hangs)"
  [[ "$(value saved_crashes)" == 0 && "$(value saved_hangs)" == 0 ]]
}
failed=0
if [[ -n ${FUZZ_PARALLEL:-} ]]; then
  # All at once, sharing the cores (the long runs: every target gets the whole wall time).
  pids=()
  for target in "${targets[@]}"; do
    fuzz_one "$target" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
  done
else
  for target in "${targets[@]}"; do
    fuzz_one "$target" || failed=1
  done
fi
exit $failed
