// Validation + benchmark of kernels/cross_entropy.cu (see check_common.h for the rules):
//  1. the fused softmax/loss/dlogits kernel on random logits over Qwen3's vocabulary, fp32 and bf16;
//  2. the chunked lm_head driver (cuBLAS GEMMs + the kernel) on a small problem, losses, dh and dW;
//  3. benchmarks: the kernel alone (GB/s) and the whole lm_head loss chunked against one chunk of the
//     full N x V logits (the unfused memory footprint), in TFLOP/s of its three GEMMs.
#include "../cross_entropy.cu"
#include "check_common.h"

using namespace check;
namespace k = qft::kernels;

#define CUBLAS_CHECK(call)                                                             \
  do {                                                                                 \
    if ((call) != CUBLAS_STATUS_SUCCESS) {                                             \
      std::fprintf(stderr, "%s:%d: cuBLAS error in %s\n", __FILE__, __LINE__, #call); \
      std::exit(2);                                                                    \
    }                                                                                  \
  } while (0)

namespace {

constexpr int kVocab = 151936;  // Qwen3

std::vector<int64_t> random_targets(int rows, int V) {
  std::uniform_int_distribution<int64_t> tok(0, V - 1);
  std::bernoulli_distribution ignore(0.15);
  std::vector<int64_t> t(rows);
  for (auto& x : t) x = ignore(rng()) ? -100 : tok(rng());
  return t;
}

// fp64 reference of one row: returns the loss, writes (softmax - onehot) * scale.
template <class T>
double reference_row(const T* z, int V, int64_t t, double scale, double* dlogits) {
  if (t == -100) {
    for (int i = 0; i < V; ++i) dlogits[i] = 0;
    return 0;
  }
  double m = -INFINITY, s = 0;
  for (int i = 0; i < V; ++i) m = std::fmax(m, to_double(z[i]));
  for (int i = 0; i < V; ++i) s += std::exp(to_double(z[i]) - m);
  const double lse = m + std::log(s);
  for (int i = 0; i < V; ++i) dlogits[i] = (std::exp(to_double(z[i]) - lse) - (i == t ? 1.0 : 0.0)) * scale;
  return lse - to_double(z[t]);
}

template <class T>
bool validate_kernel(int rows, int V, double& err) {
  std::printf("validate kernel %s rows=%d V=%d\n", dtype_name<T>(), rows, V);
  const std::vector<T> z = random_vector<T>(size_t(rows) * V, 0.0, 3.0);
  const std::vector<int64_t> t = random_targets(rows, V);
  const double scale = 1.0 / 1000.0;
  DeviceBuffer<T> dz(z.size());
  DeviceBuffer<float> dloss(rows);
  DeviceBuffer<int64_t> dt(rows);
  dz.upload(z);
  dt.upload(t);
  dloss.fill_nan();
  CUDA_CHECK(k::cross_entropy_forward_backward(dz.ptr, dloss.ptr, dt.ptr, rows, V, float(scale), 0));
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> ref_d(z.size()), ref_loss(rows);
  for (int r = 0; r < rows; ++r)
    ref_loss[r] = reference_row(z.data() + size_t(r) * V, V, t[r], scale, ref_d.data() + size_t(r) * V);
  const auto d_out = dz.download();
  // The loss is computed in fp32 from the given logits whatever their dtype.
  bool ok = compare("losses (fp32)", dloss.download(), ref_loss, 1e-5);
  ok &= compare("dlogits (in place)", d_out, ref_d);
  double md = 0, mr = 0;
  for (size_t i = 0; i < ref_d.size(); ++i) {
    md = std::fmax(md, std::fabs(to_double(d_out[i]) - ref_d[i]));
    mr = std::fmax(mr, std::fabs(ref_d[i]));
  }
  err = md / mr;
  return ok;
}

// The chunked driver against fp64: logits = h W^T, loss, dh = dlogits W, dW = dW0 + dlogits^T h.
bool validate_driver(int N, int C, int V, int chunk, cublasHandle_t cublas) {
  std::printf("validate lm_head_cross_entropy bf16 N=%d C=%d V=%d chunk=%d\n", N, C, V, chunk);
  const std::vector<bf16> h = random_vector<bf16>(size_t(N) * C), W = random_vector<bf16>(size_t(V) * C, 0.0, 1.0 / std::sqrt(C));
  const std::vector<int64_t> t = random_targets(N, V);
  const std::vector<float> dW0 = random_vector<float>(size_t(V) * C, 0.0, 1e-3);
  const double scale = 1.0 / N;
  DeviceBuffer<bf16> dh_(h.size()), dW_(W.size()), ddh(h.size()), ws(size_t(chunk) * V);
  DeviceBuffer<float> dloss(N), ddW(W.size());
  DeviceBuffer<int64_t> dt(N);
  dh_.upload(h);
  dW_.upload(W);
  dt.upload(t);
  ddW.upload(dW0);
  dloss.fill_nan();
  ddh.fill_nan();
  CUDA_CHECK(k::lm_head_cross_entropy(dloss.ptr, ddh.ptr, ddW.ptr, dh_.ptr, dW_.ptr, dt.ptr, N, C, V, chunk,
                                      float(scale), ws.ptr, cublas, 0));
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> logits(size_t(N) * V), dlogits(size_t(N) * V), loss(N), dh(size_t(N) * C, 0.0),
      dW(dW0.begin(), dW0.end());
  const std::vector<double> hd = to_double_vector(h), Wd = to_double_vector(W);
  for (int r = 0; r < N; ++r)
    for (int v = 0; v < V; ++v) {
      double s = 0;
      for (int c = 0; c < C; ++c) s += hd[size_t(r) * C + c] * Wd[size_t(v) * C + c];
      logits[size_t(r) * V + v] = s;
    }
  for (int r = 0; r < N; ++r) loss[r] = reference_row(logits.data() + size_t(r) * V, V, t[r], scale, dlogits.data() + size_t(r) * V);
  for (int r = 0; r < N; ++r)
    for (int v = 0; v < V; ++v) {
      const double d = dlogits[size_t(r) * V + v];
      if (d == 0) continue;
      for (int c = 0; c < C; ++c) {
        dh[size_t(r) * C + c] += d * Wd[size_t(v) * C + c];
        dW[size_t(v) * C + c] += d * hd[size_t(r) * C + c];
      }
    }
  // bf16 logits (as transformers' lm_head) bound the accuracy here: bf16 tolerance for all three.
  bool ok = compare("losses", dloss.download(), loss, 1e-2);
  ok &= compare("dh", ddh.download(), dh);
  ok &= compare("dW (accumulated, fp32)", ddW.download(), dW, 1e-2);
  return ok;
}

void bench_kernel(int rows, int V, double err) {
  DeviceBuffer<bf16> z(size_t(rows) * V);
  DeviceBuffer<float> loss(rows);
  DeviceBuffer<int64_t> t(rows);
  t.upload(random_targets(rows, V));
  // Each call rewrites the logits in place (later calls see dlogits): the values only need to be finite.
  fill_random(z.ptr, z.n, 0.f, 3.f);
  const double ms = time_ms([&] { CUDA_CHECK(k::cross_entropy_forward_backward(z.ptr, loss.ptr, t.ptr, rows, V, 1e-3f, 0)); });
  table_row_bandwidth("cross_entropy kernel", "bf16", shape_string({rows, V}), ms, 3.0 * rows * V * sizeof(bf16), err);
}

void bench_driver(int N, int C, int V, int chunk, cublasHandle_t cublas, const char* label) {
  DeviceBuffer<bf16> h(size_t(N) * C), W(size_t(V) * C), dh(size_t(N) * C), ws(size_t(chunk) * V);
  DeviceBuffer<float> loss(N), dW(size_t(V) * C);
  DeviceBuffer<int64_t> t(N);
  fill_random(h.ptr, h.n);
  fill_random(W.ptr, W.n, 0.f, 1.f / std::sqrt(float(C)));
  t.upload(random_targets(N, V));
  dW.zero();
  const double ms = time_ms(
      [&] {
        CUDA_CHECK(k::lm_head_cross_entropy(loss.ptr, dh.ptr, dW.ptr, h.ptr, W.ptr, t.ptr, N, C, V, chunk, 1.f / N,
                                            ws.ptr, cublas, 0));
      },
      5);
  const double flops = 6.0 * N * C * V;
  std::printf("| %-30s | bf16 | %-28s | logits workspace %7.1f MB | %8.3f ms | %6.1f TFLOP/s | %5.1f %% of 790 TFLOP/s |\n",
              label, shape_string({N, C, V}).c_str(), double(ws.n) * sizeof(bf16) / 1e6, ms, flops / (ms * 1e-3) / 1e12,
              100.0 * flops / (ms * 1e-3) / kPeakBf16Flops);
}

}  // namespace

int main() {
  cublasHandle_t cublas;
  CUBLAS_CHECK(cublasCreate(&cublas));
  double err32 = 0, err16 = 0;
  bool ok = validate_kernel<float>(37, kVocab, err32);
  ok &= validate_kernel<bf16>(37, kVocab, err16);
  ok &= validate_driver(300, 256, 4096, 128, cublas);
  if (!ok) {
    std::printf("cross_entropy_check: VALIDATION FAILED\n");
    return 1;
  }
  if (validate_only()) {
    std::printf("cross_entropy_check: all validations passed (no benchmark)\n");
    return 0;
  }
  bench_kernel(2048, kVocab, err16);
  for (int chunk : {1024, 2048, 8192})
    bench_driver(8192, 1024, kVocab, chunk,  cublas,
                 chunk == 8192 ? "lm_head+CE, one chunk (full)" : (chunk == 1024 ? "lm_head+CE, chunk 1024" : "lm_head+CE, chunk 2048"));
  CUBLAS_CHECK(cublasDestroy(cublas));
  std::printf("cross_entropy_check: all validations passed\n");
  return 0;
}
