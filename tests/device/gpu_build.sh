# Sourced by the device scripts: configures and builds qft with CUDA in build-gpu/ on the GPU machine.
# The image has no PCRE2 headers: .carry/ holds Debian's libpcre2-dev .deb, unpacked here.
#   source tests/device/gpu_build.sh; gpu_build TARGET...   (logs in $OUT; exits on failure)
gpu_build() {
  local pcre2_dir=/tmp/pcre2 torch_prefix
  mkdir -p $pcre2_dir && dpkg -x .carry/libpcre2-dev_*.deb $pcre2_dir
  torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DQFT_PCRE2_ROOT=$pcre2_dir/usr \
        -DCMAKE_PREFIX_PATH="$torch_prefix" > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
  cmake --build build-gpu -j "$(nproc)" --target "$@" > "$OUT/build.log" 2>&1 ||
    { grep -m 20 -A5 error "$OUT/build.log"; exit 1; }
}
