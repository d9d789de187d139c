// Validation + benchmark of kernels/qk_norm_rope.cu (see check_common.h for the rules).
#include "../qk_norm_rope.cu"
#include "check_common.h"

using namespace check;
namespace k = qft::kernels;

namespace {

constexpr float kEps = 1e-6f;
constexpr double kTheta = 1000000.0;  // Qwen3 rope_theta

// rope_tables (src/model/ops/rope.cpp): emb = [freqs, freqs], freqs = pos * theta^(-2i/D), rounded to T.
template <class T>
void rope_tables(int tokens, int D, std::vector<T>& cos, std::vector<T>& sin) {
  std::uniform_int_distribution<int> pos(0, 40959);
  cos.resize(size_t(tokens) * D);
  sin.resize(size_t(tokens) * D);
  for (int t = 0; t < tokens; ++t) {
    const int p = pos(rng());
    for (int i = 0; i < D; ++i) {
      const double f = p * std::pow(kTheta, -double(2 * (i % (D / 2))) / D);
      cos[size_t(t) * D + i] = from_double<T>(std::cos(f));
      sin[size_t(t) * D + i] = from_double<T>(std::sin(f));
    }
  }
}

struct Errors {
  double fwd = 0, bwd = 0;
  bool ok = true;
};

template <class T>
double rel_err(const std::vector<T>& out, const std::vector<double>& ref) {
  double md = 0, mr = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    md = std::fmax(md, std::fabs(to_double(out[i]) - ref[i]));
    mr = std::fmax(mr, std::fabs(ref[i]));
  }
  return md / mr;
}

template <class T>
Errors validate(int tokens, int heads, int D) {
  std::printf("validate %s tokens=%d heads=%d D=%d\n", dtype_name<T>(), tokens, heads, D);
  const size_t n = size_t(tokens) * heads * D;
  const int rows = tokens * heads, H = D / 2;
  const std::vector<T> x = random_vector<T>(n), w = random_vector<T>(D, 1.0, 0.3), dy = random_vector<T>(n);
  const std::vector<float> dw0 = random_vector<float>(D);
  std::vector<T> cos, sin;
  rope_tables(tokens, D, cos, sin);
  DeviceBuffer<T> dx_(n), dw_(D), ddy(n), dcos(cos.size()), dsin(sin.size()), dout(n), ddx(n);
  DeviceBuffer<float> drstd(rows), ddw(D), scratch(k::qk_norm_rope_backward_scratch_floats(tokens, heads, D));
  dx_.upload(x);
  dw_.upload(w);
  ddy.upload(dy);
  dcos.upload(cos);
  dsin.upload(sin);
  ddw.upload(dw0);
  dout.fill_nan();
  drstd.fill_nan();
  ddx.fill_nan();
  CUDA_CHECK(k::qk_norm_rope_forward(dout.ptr, drstd.ptr, dx_.ptr, dw_.ptr, dcos.ptr, dsin.ptr, tokens, heads, D, kEps, 0));
  CUDA_CHECK(k::qk_norm_rope_backward(ddx.ptr, ddw.ptr, scratch.ptr, ddy.ptr, dx_.ptr, dw_.ptr, drstd.ptr, dcos.ptr,
                                      dsin.ptr, tokens, heads, D, 0));
  CUDA_CHECK(cudaDeviceSynchronize());

  std::vector<double> y(n), rstd(rows), dx(n), dw(dw0.begin(), dw0.end()), nrm(D), dn(D);
  for (int r = 0; r < rows; ++r) {
    const size_t b = size_t(r) * D, tb = size_t(r / heads) * D;
    double ss = 0;
    for (int i = 0; i < D; ++i) ss += to_double(x[b + i]) * to_double(x[b + i]);
    const double rs = 1.0 / std::sqrt(ss / D + kEps);
    rstd[r] = rs;
    for (int i = 0; i < D; ++i) nrm[i] = to_double(w[i]) * to_double(x[b + i]) * rs;
    for (int i = 0; i < H; ++i) {
      const double c = to_double(cos[tb + i]), s = to_double(sin[tb + i]);
      y[b + i] = nrm[i] * c - nrm[i + H] * s;
      y[b + i + H] = nrm[i + H] * c + nrm[i] * s;
      const double d1 = to_double(dy[b + i]), d2 = to_double(dy[b + i + H]);
      dn[i] = d1 * c + d2 * s;
      dn[i + H] = d2 * c - d1 * s;
    }
    double gx = 0;
    for (int i = 0; i < D; ++i) {
      gx += dn[i] * to_double(w[i]) * to_double(x[b + i]);
      dw[i] += dn[i] * to_double(x[b + i]) * rs;
    }
    for (int i = 0; i < D; ++i) dx[b + i] = rs * (dn[i] * to_double(w[i]) - to_double(x[b + i]) * rs * rs * gx / D);
  }
  Errors e;
  const auto out_h = dout.download(), dx_h = ddx.download();
  e.ok &= compare("forward y", out_h, y);
  e.ok &= compare("forward rstd", drstd.download(), rstd, 1e-5);
  e.ok &= compare("backward dx", dx_h, dx);
  e.ok &= compare("backward dw (accumulated, fp32)", ddw.download(), dw, 1e-5);
  e.fwd = rel_err(out_h, y);
  e.bwd = rel_err(dx_h, dx);
  return e;
}

template <class T>
void bench(const char* name, int tokens, int heads, int D, const Errors& e) {
  const size_t n = size_t(tokens) * heads * D;
  const int rows = tokens * heads;
  DeviceBuffer<T> x(n), w(D), dy(n), out(n), dx(n), cos(size_t(tokens) * D), sin(size_t(tokens) * D);
  DeviceBuffer<float> rstd(rows), dw(D), scratch(k::qk_norm_rope_backward_scratch_floats(tokens, heads, D));
  fill_random(x.ptr, n);
  fill_random(w.ptr, D, 1.f, 0.3f);
  fill_random(dy.ptr, n);
  std::vector<T> c, s;
  rope_tables(tokens, D, c, s);
  cos.upload(c);
  sin.upload(s);
  dw.zero();
  const double tensor = double(n) * sizeof(T), tables = 2.0 * tokens * D * sizeof(T);
  const std::string shape = shape_string({tokens, heads, D});
  const double fwd = time_ms([&] {
    CUDA_CHECK(k::qk_norm_rope_forward(out.ptr, rstd.ptr, x.ptr, w.ptr, cos.ptr, sin.ptr, tokens, heads, D, kEps, 0));
  });
  table_row_bandwidth(std::string(name) + " fwd", dtype_name<T>(), shape, fwd, 2 * tensor + tables + 4.0 * rows, e.fwd);
  const double bwd = time_ms([&] {
    CUDA_CHECK(k::qk_norm_rope_backward(dx.ptr, dw.ptr, scratch.ptr, dy.ptr, x.ptr, w.ptr, rstd.ptr, cos.ptr, sin.ptr,
                                        tokens, heads, D, 0));
  });
  table_row_bandwidth(std::string(name) + " bwd (dx+dw)", dtype_name<T>(), shape, bwd, 3 * tensor + tables + 4.0 * rows,
                      e.bwd);
}

}  // namespace

int main() {
  const Errors f32 = validate<float>(515, 16, 128);
  const Errors h16 = validate<bf16>(515, 16, 128);
  const Errors h64 = validate<bf16>(257, 8, 64);
  const Errors f256 = validate<float>(129, 4, 256);
  if (!(f32.ok && h16.ok && h64.ok && f256.ok)) {
    std::printf("qk_norm_rope_check: VALIDATION FAILED\n");
    return 1;
  }
  if (validate_only()) {
    std::printf("qk_norm_rope_check: all validations passed (no benchmark)\n");
    return 0;
  }
  bench<float>("qk_norm_rope q (8B)", 16384, 32, 128, f32);
  bench<bf16>("qk_norm_rope q (8B)", 16384, 32, 128, h16);
  bench<bf16>("qk_norm_rope k (8B)", 16384, 8, 128, h16);
  std::printf("qk_norm_rope_check: all validations passed\n");
  return 0;
}
