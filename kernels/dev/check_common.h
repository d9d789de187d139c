// Shared by the kernels/dev/*_check.cu programs: device buffers, fresh random inputs, the fp64 comparison
// and the CUDA-event benchmark. Validation rules (issue 8): outputs are prefilled with NaN sentinels (all
// bits set is NaN in fp32 and bf16) so an element the kernel never wrote shows up as NaN; any NaN fails;
// the error is max |out - ref| / max |ref| against a CPU fp64 reference, and must stay below 1e-5 for fp32
// and 1e-2 for bf16 (bf16 rounding alone is 2^-9 = 2e-3 per value).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#define CUDA_CHECK(call)                                                                              \
  do {                                                                                                \
    const cudaError_t err_ = (call);                                                                  \
    if (err_ != cudaSuccess) {                                                                        \
      std::fprintf(stderr, "%s:%d: CUDA error %s: %s\n", __FILE__, __LINE__, cudaGetErrorName(err_), \
                   cudaGetErrorString(err_));                                                         \
      std::exit(2);                                                                                   \
    }                                                                                                 \
  } while (0)

namespace check {

using bf16 = __nv_bfloat16;
constexpr double kPeakBandwidth = 4.8e12;  // H200 HBM3e, bytes/s (datasheet)
constexpr double kPeakBf16Flops = 790e12;  // bf16 dense matrix rate measured on this workplace's H200s

template <class T>
const char* dtype_name() { return std::is_same<T, float>::value ? "fp32" : "bf16"; }
template <class T>
double tolerance() { return std::is_same<T, float>::value ? 1e-5 : 1e-2; }

inline double to_double(float x) { return x; }
inline double to_double(bf16 x) { return static_cast<double>(__bfloat162float(x)); }
template <class T>
T from_double(double x) {
  if constexpr (std::is_same<T, float>::value) return static_cast<float>(x);
  else return __float2bfloat16_rn(static_cast<float>(x));
}

// Device buffer of n elements of T; `upload` / `download` copy whole host vectors.
template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t count) : n(count) { CUDA_CHECK(cudaMalloc(&ptr, count * sizeof(T) + 16)); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void upload(const std::vector<T>& h) { CUDA_CHECK(cudaMemcpy(ptr, h.data(), n * sizeof(T), cudaMemcpyHostToDevice)); }
  std::vector<T> download() const {
    std::vector<T> h(n);
    CUDA_CHECK(cudaMemcpy(h.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  void fill_nan() { CUDA_CHECK(cudaMemset(ptr, 0xff, n * sizeof(T))); }
  void zero() { CUDA_CHECK(cudaMemset(ptr, 0, n * sizeof(T))); }
};

// A generator seeded from std::random_device: every run draws fresh inputs; the seed is printed.
inline std::mt19937_64& rng() {
  static std::mt19937_64 gen = [] {
    const uint64_t seed = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
    std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
    return std::mt19937_64(seed);
  }();
  return gen;
}

template <class T>
std::vector<T> random_vector(size_t n, double mean = 0.0, double stddev = 1.0) {
  std::normal_distribution<double> dist(mean, stddev);
  std::vector<T> v(n);
  for (auto& x : v) x = from_double<T>(dist(rng()));
  return v;
}

// Benchmark inputs are filled on the device (validation inputs come from the host generator above):
// a hashed counter turned into roughly normal values (sum of 4 uniforms), fast for gigabytes.
template <class T>
__global__ void fill_random_kernel(T* p, size_t n, uint64_t seed, float mean, float stddev) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  uint64_t h = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
  float s = 0.f;
  for (int k = 0; k < 4; ++k) {
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
    s += static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
  }
  const float z = (s - 2.0f) * 1.7320508f;  // variance of a sum of 4 uniforms is 1/3
  if constexpr (std::is_same<T, float>::value) p[i] = mean + stddev * z;
  else p[i] = __float2bfloat16_rn(mean + stddev * z);
}
template <class T>
void fill_random(T* p, size_t n, float mean = 0.f, float stddev = 1.f) {
  fill_random_kernel<T><<<static_cast<unsigned>((n + 255) / 256), 256>>>(p, n, rng()(), mean, stddev);
  CUDA_CHECK(cudaGetLastError());
}

template <class T>
std::vector<double> to_double_vector(const std::vector<T>& v) {
  std::vector<double> d(v.size());
  for (size_t i = 0; i < v.size(); ++i) d[i] = to_double(v[i]);
  return d;
}

// Compare one output against its fp64 reference; prints one line and returns whether it passed.
template <class T>
bool compare(const char* what, const std::vector<T>& out, const std::vector<double>& ref,
             double tol = tolerance<T>()) {
  size_t nan = 0;
  double max_diff = 0.0, max_ref = 0.0;
  for (size_t i = 0; i < out.size(); ++i) {
    const double o = to_double(out[i]);
    if (std::isnan(o)) {
      ++nan;
      continue;
    }
    max_diff = std::fmax(max_diff, std::fabs(o - ref[i]));
    max_ref = std::fmax(max_ref, std::fabs(ref[i]));
  }
  const double rel = max_ref > 0 ? max_diff / max_ref : max_diff;
  const bool ok = nan == 0 && rel < tol && out.size() == ref.size();
  std::printf("  %-44s %s  n=%zu  max rel err %.3e (tol %.0e)  NaN/unwritten %zu  %s\n", what, dtype_name<T>(),
              out.size(), rel, tol, nan, ok ? "OK" : "FAIL");
  return ok;
}

// Mean milliseconds of one call of fn over `iters` runs after 3 warm-ups, by CUDA events.
template <class F>
double time_ms(F&& fn, int iters = 20) {
  for (int i = 0; i < 3; ++i) fn();
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  CUDA_CHECK(cudaEventRecord(start));
  for (int i = 0; i < iters; ++i) fn();
  CUDA_CHECK(cudaEventRecord(stop));
  CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0.f;
  CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  CUDA_CHECK(cudaGetLastError());
  return ms / iters;
}

// QFT_CHECK_VALIDATE_ONLY=1 stops a check program after its validation (for compute-sanitizer runs).
inline bool validate_only() {
  const char* e = std::getenv("QFT_CHECK_VALIDATE_ONLY");
  return e != nullptr && std::string(e) == "1";
}

// One row of the results table (grep '^|' to collect them): bytes moved per call -> GB/s and % of peak.
inline void table_row_bandwidth(const std::string& op, const char* dtype, const std::string& shape, double ms,
                                double bytes, double err) {
  const double gbs = bytes / (ms * 1e-3) / 1e9;
  std::printf("| %-30s | %s | %-28s | %.2e | %8.4f ms | %7.0f GB/s | %5.1f %% of 4.8 TB/s |\n", op.c_str(), dtype,
              shape.c_str(), err, ms, gbs, 100.0 * gbs * 1e9 / kPeakBandwidth);
}

inline std::string shape_string(std::initializer_list<long long> dims) {
  std::string s;
  for (long long d : dims) s += (s.empty() ? "" : "x") + std::to_string(d);
  return s;
}

}  // namespace check
