// Validation + benchmark of kernels/rms_norm.cu (see check_common.h for the rules).
//   make -C kernels && kernels/build/rms_norm_check
#include "../rms_norm.cu"
#include "check_common.h"

using namespace check;
namespace k = qft::kernels;

namespace {

constexpr float kEps = 1e-6f;

struct Errors {
  double fwd = 0, bwd = 0;
  bool ok = true;
};

template <class T>
Errors validate(int N, int C, int version) {
  std::printf("validate %s N=%d C=%d version %d\n", dtype_name<T>(), N, C, version);
  const std::vector<T> x = random_vector<T>(size_t(N) * C), w = random_vector<T>(C, 1.0, 0.2),
                       dy = random_vector<T>(size_t(N) * C);
  const std::vector<float> dw0 = random_vector<float>(C);
  DeviceBuffer<T> dx_(x.size()), dw_(w.size()), ddy(dy.size()), dout(x.size()), ddx(x.size());
  DeviceBuffer<float> drstd(N), ddw(C), scratch(k::rms_norm_backward_scratch_floats(N, C));
  dx_.upload(x);
  dw_.upload(w);
  ddy.upload(dy);
  ddw.upload(dw0);
  dout.fill_nan();
  drstd.fill_nan();
  ddx.fill_nan();
  if (version == 2)  // the default: through the public launchers
    CUDA_CHECK(k::rms_norm_forward(dout.ptr, drstd.ptr, dx_.ptr, dw_.ptr, N, C, kEps, 0));
  else
    CUDA_CHECK(k::forward_impl(dout.ptr, drstd.ptr, dx_.ptr, dw_.ptr, N, C, kEps, 0, version));
  if (version == 2)
    CUDA_CHECK(k::rms_norm_backward(ddx.ptr, ddw.ptr, scratch.ptr, ddy.ptr, dx_.ptr, dw_.ptr, drstd.ptr, N, C, 0));
  else
    CUDA_CHECK(k::backward_impl(ddx.ptr, ddw.ptr, scratch.ptr, ddy.ptr, dx_.ptr, dw_.ptr, drstd.ptr, N, C, 0, version));
  CUDA_CHECK(cudaDeviceSynchronize());

  // fp64 reference
  std::vector<double> y(x.size()), rstd(N), dx(x.size()), dw(C);
  for (int c = 0; c < C; ++c) dw[c] = dw0[c];
  for (int r = 0; r < N; ++r) {
    const size_t b = size_t(r) * C;
    double ss = 0, gx = 0;
    for (int c = 0; c < C; ++c) ss += to_double(x[b + c]) * to_double(x[b + c]);
    const double rs = 1.0 / std::sqrt(ss / C + kEps);
    rstd[r] = rs;
    for (int c = 0; c < C; ++c) {
      y[b + c] = to_double(w[c]) * to_double(x[b + c]) * rs;
      gx += to_double(dy[b + c]) * to_double(w[c]) * to_double(x[b + c]);
      dw[c] += to_double(dy[b + c]) * to_double(x[b + c]) * rs;
    }
    for (int c = 0; c < C; ++c)
      dx[b + c] = rs * (to_double(dy[b + c]) * to_double(w[c]) - to_double(x[b + c]) * rs * rs * gx / C);
  }
  Errors e;
  auto rel = [](const auto& out, const std::vector<double>& ref) {
    double md = 0, mr = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      md = std::fmax(md, std::fabs(to_double(out[i]) - ref[i]));
      mr = std::fmax(mr, std::fabs(ref[i]));
    }
    return md / mr;
  };
  const auto out_h = dout.download();
  const auto dx_h = ddx.download();
  e.ok &= compare("forward y", out_h, y);
  e.ok &= compare("forward rstd", drstd.download(), rstd, 1e-5);
  e.ok &= compare("backward dx", dx_h, dx);
  e.ok &= compare("backward dw (accumulated, fp32)", ddw.download(), dw, 1e-5);
  e.fwd = rel(out_h, y);
  e.bwd = rel(dx_h, dx);
  return e;
}

template <class T>
void bench(int N, int C, int version, const Errors& e) {
  DeviceBuffer<T> x(size_t(N) * C), w(C), dy(size_t(N) * C), out(size_t(N) * C), dx(size_t(N) * C);
  DeviceBuffer<float> rstd(N), dw(C), scratch(k::rms_norm_backward_scratch_floats(N, C));
  fill_random(x.ptr, x.n);
  fill_random(w.ptr, w.n, 1.f, 0.2f);
  fill_random(dy.ptr, dy.n);
  dw.zero();
  const double tensor = double(N) * C * sizeof(T);
  const std::string shape = shape_string({N, C});
  const std::string v = " v" + std::to_string(version);
  const double fwd = time_ms([&] { CUDA_CHECK(k::forward_impl(out.ptr, rstd.ptr, x.ptr, w.ptr, N, C, kEps, 0, version)); });
  table_row_bandwidth("rms_norm fwd" + v, dtype_name<T>(), shape, fwd, 2 * tensor + 4.0 * N, e.fwd);
  const double bwd = time_ms([&] {
    CUDA_CHECK(k::backward_impl(dx.ptr, nullptr, nullptr, dy.ptr, x.ptr, w.ptr, rstd.ptr, N, C, 0, version));
  });
  table_row_bandwidth("rms_norm bwd (dx)" + v, dtype_name<T>(), shape, bwd, 3 * tensor + 4.0 * N, e.bwd);
  const double bwd_dw = time_ms([&] {
    CUDA_CHECK(k::backward_impl(dx.ptr, dw.ptr, scratch.ptr, dy.ptr, x.ptr, w.ptr, rstd.ptr, N, C, 0, version));
  });
  // Counted as the minimum traffic (dy, x read once, dx written); the dw pass re-reads dy and x.
  table_row_bandwidth("rms_norm bwd (dx+dw)" + v, dtype_name<T>(), shape, bwd_dw, 3 * tensor + 4.0 * N, e.bwd);
}

}  // namespace

int main() {
  // Version 1 (two passes over the row) and version 2 (the row in registers, the default where C fits).
  bool ok = true;
  Errors f32[3], h16[3], head[3], wide[3];
  for (int v : {1, 2}) {
    f32[v] = validate<float>(1031, 4096, v);  // an odd row count: the last block is partly idle
    h16[v] = validate<bf16>(1031, 4096, v);
    head[v] = validate<bf16>(4096, 128, v);   // per-head use (q_norm/k_norm)
    wide[v] = validate<bf16>(257, 5120, v);   // Qwen3-14B/32B hidden size: past version 2's registers
    ok = ok && f32[v].ok && h16[v].ok && head[v].ok && wide[v].ok;
  }
  if (!ok) {
    std::printf("rms_norm_check: VALIDATION FAILED\n");
    return 1;
  }
  if (validate_only()) {
    std::printf("rms_norm_check: all validations passed (no benchmark)\n");
    return 0;
  }
  for (int v : {1, 2}) {
    bench<float>(16384, 4096, v, f32[v]);
    bench<bf16>(16384, 4096, v, h16[v]);
    bench<bf16>(16384, 1024, v, h16[v]);
    bench<bf16>(16384 * 32, 128, v, head[v]);
  }
  std::printf("rms_norm_check: all validations passed\n");
  return 0;
}
