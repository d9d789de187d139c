#include "parallel/communicator.h"

#include "core/error.h"

namespace qft::parallel {

std::vector<Range> split_evenly(int64_t n, int parts) {
  QFT_CHECK(parts >= 1 && n >= 0, "split_evenly: {} elements into {} parts", n, parts);
  std::vector<Range> out(static_cast<size_t>(parts));
  const int64_t base = n / parts, extra = n % parts;
  int64_t begin = 0;
  for (int r = 0; r < parts; ++r) {
    const int64_t size = base + (r < extra ? 1 : 0);
    out[r] = Range{begin, begin + size};
    begin += size;
  }
  return out;
}

void check_ranges(const char* op, const at::Tensor& buffer, const std::vector<Range>& ranges, int group_size) {
  QFT_CHECK(buffer.dim() == 1 && buffer.is_contiguous(), "{}: the buffer must be a contiguous 1-D tensor", op);
  QFT_CHECK(static_cast<int>(ranges.size()) == group_size, "{}: {} ranges for a group of {} ranks", op, ranges.size(),
            group_size);
  for (size_t r = 0; r < ranges.size(); ++r) {
    QFT_CHECK(ranges[r].begin >= 0 && ranges[r].begin <= ranges[r].end && ranges[r].end <= buffer.numel(),
              "{}: range {} [{}, {}) is outside the buffer of {} elements", op, r, ranges[r].begin, ranges[r].end,
              buffer.numel());
    QFT_CHECK(r == 0 || ranges[r].begin == ranges[r - 1].end,
              "{}: range {} starts at {} but range {} ends at {}: the ranges must tile one span in rank order", op, r,
              ranges[r].begin, r - 1, ranges[r - 1].end);
  }
}

double Communicator::all_reduce_sum(double value) {
  if (size() == 1) return value;
  at::Tensor t = at::full({1}, value, at::TensorOptions().dtype(at::kDouble));
  all_reduce_sum(t);
  return t.item<double>();
}

int64_t Communicator::all_reduce_sum(int64_t value) {
  if (size() == 1) return value;
  at::Tensor t = at::full({1}, value, at::TensorOptions().dtype(at::kLong));
  all_reduce_sum(t);
  return t.item<int64_t>();
}

void Communicator::check_same_on_all_ranks(const std::string& what, uint64_t value) {
  if (size() == 1) return;
  at::Tensor all = at::zeros({size()}, at::TensorOptions().dtype(at::kLong));
  all[rank()] = static_cast<int64_t>(value);
  all_gather(all, split_evenly(size(), size()));
  const int64_t* v = all.data_ptr<int64_t>();
  for (int r = 1; r < size(); ++r) {
    QFT_CHECK(v[r] == v[0], "{} differs between rank 0 and rank {} of the {} group: every rank must be started alike",
              what, r, name());
  }
}

}  // namespace qft::parallel
