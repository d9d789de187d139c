#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz/CMakeLists.txt, clang) in BUILD_DIR/fuzz and runs them.
#   run_fuzz.sh smoke BUILD_DIR [SECONDS]           each harness for SECONDS (default 3) from its seeds
#   run_fuzz.sh run BUILD_DIR HARNESS RUNS [ARGS]   one harness for RUNS executions, libFuzzer ARGS added
# New inputs go to BUILD_DIR/fuzz/corpus/HARNESS, crashes to BUILD_DIR/fuzz/artifacts/. Exit status is
# libFuzzer's: non-zero when a harness found a crash, a sanitizer report, a leak or a timeout.
set -euo pipefail
mode=$1
build=$(cd "$2" && pwd)
source_dir=$(cd "$(dirname "$0")/../.." && pwd)
fuzz_build=$build/fuzz
harnesses=(fuzz_json fuzz_jsonl_record fuzz_tokenizer_json fuzz_config_json fuzz_safetensors fuzz_adapter_config
           fuzz_yaml_config)

if [[ ! -f $fuzz_build/build.ninja ]]; then
  cmake -S "$source_dir/tests/fuzz" -B "$fuzz_build" -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
        -DQFT_MAIN_BUILD="$build" > "$fuzz_build.configure.log" 2>&1 || { cat "$fuzz_build.configure.log"; exit 1; }
fi
cmake --build "$fuzz_build" -j "${FUZZ_JOBS:-$(nproc)}"

# The data harness also tokenizes with the real Qwen3 tokenizer when the main build unpacked it.
if [[ -f $build/qwen3-tokenizer/tokenizer.json ]]; then export QFT_FUZZ_TOKENIZER=$build/qwen3-tokenizer/tokenizer.json; fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$fuzz_build/artifacts"

run_one() {
  local name=$1
  shift
  mkdir -p "$fuzz_build/corpus/$name"
  "$fuzz_build/$name" -artifact_prefix="$fuzz_build/artifacts/$name-" -rss_limit_mb=4096 -malloc_limit_mb=2048 \
      -timeout=20 -print_final_stats=1 "$@" "$fuzz_build/corpus/$name" "$source_dir/tests/fuzz/seeds/$name"
}

case $mode in
  smoke)
    seconds=${3:-3}
    for name in "${harnesses[@]}"; do
      log=$fuzz_build/$name.log
      if run_one "$name" -max_total_time="$seconds" > "$log" 2>&1; then
        echo "$name: $(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') executions, no finding"
      else
        tail -60 "$log"
        echo "$name FAILED; the input is in $fuzz_build/artifacts"
        exit 1
      fi
    done
    ;;
  run)
    name=$3
    runs=$4
    shift 4
    run_one "$name" -runs="$runs" "$@"
    ;;
  *)
    echo "usage: $0 smoke|run BUILD_DIR ..." >&2
    exit 2
    ;;
esac
