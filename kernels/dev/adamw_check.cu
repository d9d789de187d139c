// Validation + benchmark of kernels/adamw.cu (see check_common.h for the rules): several steps of the
// update on a flat buffer whose weight-decay ranges have random lengths (so they cross the 4-element
// vectors) and random flags, against torch.optim.AdamW's formulas evaluated in fp64.
#include "../adamw.cu"
#include "check_common.h"

using namespace check;
namespace k = qft::kernels;

namespace {

constexpr double kLr = 1e-2, kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8, kWeightDecay = 0.1;

void random_ranges(int64_t n, std::vector<int64_t>& ends, std::vector<uint8_t>& decay) {
  std::uniform_int_distribution<int64_t> len(1, 2 * n / 64);
  std::uniform_int_distribution<int64_t> tiny(1, 7);  // ranges shorter than a 4-element vector
  std::bernoulli_distribution flag(0.5), pick_tiny(0.3);
  for (int64_t e = 0; e < n;) {
    e = std::min(n, e + (pick_tiny(rng()) ? tiny(rng()) : len(rng())));
    ends.push_back(e);
    decay.push_back(flag(rng()) ? 1 : 0);
  }
}

bool validate(int64_t n, int steps, double& err) {
  std::printf("validate fp32 n=%lld steps=%d\n", static_cast<long long>(n), steps);
  std::vector<int64_t> ends;
  std::vector<uint8_t> decay;
  random_ranges(n, ends, decay);
  std::printf("  %zu weight-decay ranges\n", ends.size());
  std::vector<float> p = random_vector<float>(n), m(n, 0.f), v(n, 0.f);
  DeviceBuffer<float> dp(n), dg(n), dm(n), dv(n);
  DeviceBuffer<int64_t> dends(ends.size());
  DeviceBuffer<uint8_t> ddecay(decay.size());
  dp.upload(p);
  dm.upload(m);
  dv.upload(v);
  dends.upload(ends);
  ddecay.upload(decay);
  std::vector<double> rp(p.begin(), p.end()), rm(n, 0.0), rv(n, 0.0);
  for (int step = 1; step <= steps; ++step) {
    const std::vector<float> g = random_vector<float>(n, 0.0, 0.1 * step);
    dg.upload(g);
    CUDA_CHECK(k::adamw_step(dp.ptr, dg.ptr, dm.ptr, dv.ptr, n, dends.ptr, ddecay.ptr, int(ends.size()),
                             k::adamw_scalars(kLr, kBeta1, kBeta2, kEps, kWeightDecay, step), 0));
    const double bc1 = 1.0 - std::pow(kBeta1, step), bc2 = 1.0 - std::pow(kBeta2, step);
    size_t r = 0;
    for (int64_t i = 0; i < n; ++i) {
      while (ends[r] <= i) ++r;
      if (decay[r]) rp[i] *= 1.0 - kLr * kWeightDecay;
      rm[i] = kBeta1 * rm[i] + (1.0 - kBeta1) * g[i];
      rv[i] = kBeta2 * rv[i] + (1.0 - kBeta2) * double(g[i]) * g[i];
      rp[i] -= (kLr / bc1) * rm[i] / (std::sqrt(rv[i]) / std::sqrt(bc2) + kEps);
    }
  }
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto p_out = dp.download();
  bool ok = compare("params", p_out, rp);
  ok &= compare("exp_avg", dm.download(), rm);
  ok &= compare("exp_avg_sq", dv.download(), rv);
  double md = 0, mr = 0;
  for (int64_t i = 0; i < n; ++i) {
    md = std::fmax(md, std::fabs(p_out[i] - rp[i]));
    mr = std::fmax(mr, std::fabs(rp[i]));
  }
  err = md / mr;
  return ok;
}

void bench(int64_t n, double err) {
  DeviceBuffer<float> p(n), g(n), m(n), v(n);
  fill_random(p.ptr, n);
  fill_random(g.ptr, n, 0.f, 0.1f);
  m.zero();
  v.zero();
  std::vector<int64_t> ends;
  std::vector<uint8_t> decay;
  for (int i = 1; i <= 400; ++i) {  // ~ the tensor count of a Qwen3 model
    ends.push_back(n * i / 400);
    decay.push_back(i % 3 != 0);
  }
  DeviceBuffer<int64_t> dends(ends.size());
  DeviceBuffer<uint8_t> ddecay(decay.size());
  dends.upload(ends);
  ddecay.upload(decay);
  const auto s = k::adamw_scalars(kLr, kBeta1, kBeta2, kEps, kWeightDecay, 10);
  const double ms = time_ms([&] {
    CUDA_CHECK(k::adamw_step(p.ptr, g.ptr, m.ptr, v.ptr, n, dends.ptr, ddecay.ptr, int(ends.size()), s, 0));
  });
  table_row_bandwidth("adamw step (400 ranges)", "fp32", shape_string({n}), ms, 28.0 * n, err);
}

}  // namespace

int main() {
  double err = 0;
  if (!validate(4 * 1000000 + 3, 5, err)) {
    std::printf("adamw_check: VALIDATION FAILED\n");
    return 1;
  }
  if (validate_only()) {
    std::printf("adamw_check: all validations passed (no benchmark)\n");
    return 0;
  }
  bench(int64_t(256) << 20, err);
  std::printf("adamw_check: all validations passed\n");
  return 0;
}
