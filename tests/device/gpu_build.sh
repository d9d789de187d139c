# Sourced by the device scripts: the common start (OUT, the machine's NCCL rule, the clock), the build of
# qft with CUDA in build-gpu/ (the image has no PCRE2 headers: .carry/ holds Debian's libpcre2-dev .deb,
# unpacked here), and random rows of token ids for speed runs.
#   source tests/device/gpu_build.sh; gpu_build TARGET...   (logs in $OUT; exits on failure)
#   random_rows FILE ROWS SEQ                                 JSONL rows of SEQ random ids, labels = ids
OUT=${OUT:-/tmp/qft-device-out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0  # the machine's rule: no NVLink multicast
SECONDS=0

random_rows() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, random, sys
r = random.Random(0)
with open(sys.argv[1], "w") as f:
    for _ in range(int(sys.argv[2])):
        ids = [r.randrange(151936) for _ in range(int(sys.argv[3]))]
        f.write(json.dumps({"input_ids": ids, "labels": ids}) + "\n")
PY
}

gpu_build() {
  local pcre2_dir=/tmp/pcre2 torch_prefix
  mkdir -p $pcre2_dir && dpkg -x .carry/libpcre2-dev_*.deb $pcre2_dir
  torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DQFT_PCRE2_ROOT=$pcre2_dir/usr \
        -DCMAKE_PREFIX_PATH="$torch_prefix" > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
  cmake --build build-gpu -j "$(nproc)" --target "$@" > "$OUT/build.log" 2>&1 ||
    { grep -m 20 -A5 error "$OUT/build.log"; exit 1; }
}
