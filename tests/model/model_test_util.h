// Helpers shared by the model tests: autograd as the oracle, relative errors in float64.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <torch/csrc/autograd/autograd.h>

#include "core/error.h"

namespace qft::test {

// max |a - b| / max |b| (absolute when b is all zeros).
inline double rel_err(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  const at::Tensor ad = a.to(at::kDouble), bd = b.to(at::kDouble);
  const double diff = (ad - bd).abs().max().item<double>();
  const double scale = bd.abs().max().item<double>();
  return scale > 0 ? diff / scale : diff;
}

// Gradients of `out` w.r.t. `inputs` (zeros for unused ones).
inline std::vector<at::Tensor> autograd(const at::Tensor& out, const std::vector<at::Tensor>& inputs) {
  auto g = torch::autograd::grad({out}, inputs, {}, /*retain_graph=*/true, /*create_graph=*/false,
                                 /*allow_unused=*/true);
  for (size_t i = 0; i < g.size(); ++i)
    if (!g[i].defined()) g[i] = at::zeros_like(inputs[i]);
  return g;
}

inline at::Tensor leaf(const at::Tensor& t) { return t.detach().clone().requires_grad_(true); }

// Counts, on this thread while alive, the GEMMs (aten::mm, aten::addmm, aten::addmm_) and the dtype casts
// of tensors (aten::_to_copy of more than a wrapped scalar) that run through the dispatcher.
class OpCounter {
 public:
  OpCounter() {
    QFT_CHECK(counts() == nullptr, "OpCounter: one at a time per thread");
    counts() = &counts_;
    handle_ = at::addThreadLocalCallback(at::RecordFunctionCallback(&OpCounter::on_start)
                                             .needsInputs(true)
                                             .scopes({at::RecordScope::FUNCTION}));
  }
  ~OpCounter() {
    at::removeCallback(handle_);
    counts() = nullptr;
  }
  int gemms() const { return count("aten::mm") + count("aten::addmm") + count("aten::addmm_"); }
  int casts() const { return count("aten::_to_copy"); }

 private:
  static std::map<std::string, int>*& counts() {
    static thread_local std::map<std::string, int>* active = nullptr;
    return active;
  }
  static std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
    if (counts() == nullptr) return nullptr;
    std::string name = fn.name();
    if (name == "aten::_to_copy") {
      const auto inputs = fn.inputs();
      if (inputs.empty() || !inputs[0].isTensor() || inputs[0].toTensor().dim() == 0) name += " (scalar)";
    }
    ++(*counts())[name];
    return nullptr;
  }
  int count(const std::string& name) const {
    const auto it = counts_.find(name);
    return it == counts_.end() ? 0 : it->second;
  }
  std::map<std::string, int> counts_;
  at::CallbackHandle handle_ = 0;
};

constexpr double kTol = 1e-10;

// Checks the error and records it as a test property (in --gtest_output=xml reports), so the measured
// precision of every comparison is kept, not only pass/fail.
#define QFT_EXPECT_CLOSE(a, b, what)                                              \
  do {                                                                            \
    const double qft_e = ::qft::test::rel_err((a), (b));                          \
    ::testing::Test::RecordProperty(std::string("err_") + (what), fmt::format("{:.3e}", qft_e)); \
    EXPECT_LE(qft_e, ::qft::test::kTol) << (what) << " relative error " << qft_e; \
  } while (0)

}  // namespace qft::test
