// Validation + benchmark of kernels/nf4.cu against the CPU reference src/model/nf4.cpp, and (given a
// directory of cases written by kernels/dev/nf4_bnb_dump.py) of both against bitsandbytes itself:
//   nf4_check              GPU dequantize == CPU dequantize, bit for bit, on fresh random tensors; benchmark
//   nf4_check DIR          also: for each DIR/case_*.bin, CPU quantize == bitsandbytes quantize_4bit (packed
//                          bytes, absmax codes, absmax2, offset, map) and CPU/GPU dequantize == bitsandbytes
//                          dequantize_4bit (bf16 bits)
#include <dirent.h>

#include <algorithm>
#include <cstring>
#include <fstream>

#include "../../src/model/nf4.cpp"
#include "../nf4.cu"
#include "check_common.h"

using namespace check;
namespace k = qft::kernels;
namespace nf4 = qft::model::nf4;

namespace {

std::vector<float> random_bf16_values(int64_t n, double stddev) {
  std::normal_distribution<double> dist(0.0, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = nf4::bf16_bits_to_float(nf4::float_to_bf16_bits(static_cast<float>(dist(rng()))));
  return v;
}

// GPU dequantization of q (nested or plain) into bf16 bits; the output buffer starts as NaN sentinels.
std::vector<uint16_t> gpu_dequantize(const nf4::Quantized& q, double* ms = nullptr) {
  const int64_t n = q.numel;
  DeviceBuffer<uint8_t> packed(q.packed.size());
  DeviceBuffer<bf16> out(n);
  packed.upload(q.packed);
  out.fill_nan();
  std::vector<float> map(nf4::kDynamicMap, nf4::kDynamicMap + 256);
  DeviceBuffer<float> code2(256), absmax2(std::max<size_t>(q.absmax2.size(), 1)), absmax(q.absmax.size());
  DeviceBuffer<uint8_t> codes(std::max<size_t>(q.absmax_codes.size(), 1));
  code2.upload(map);
  absmax.upload(q.absmax);
  if (q.nested) {
    absmax2.upload(q.absmax2);
    codes.upload(q.absmax_codes);
  }
  auto run = [&] {
    if (q.nested)
      CUDA_CHECK(k::nf4_dequantize(out.ptr, packed.ptr, codes.ptr, absmax2.ptr, code2.ptr, q.offset, n, q.blocksize,
                                   q.nested_blocksize, 0));
    else
      CUDA_CHECK(k::nf4_dequantize_plain(out.ptr, packed.ptr, absmax.ptr, n, q.blocksize, 0));
  };
  run();
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<uint16_t> bits(n);
  CUDA_CHECK(cudaMemcpy(bits.data(), out.ptr, n * 2, cudaMemcpyDeviceToHost));
  if (ms != nullptr) *ms = time_ms(run);
  return bits;
}

size_t count_mismatches(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  size_t m = 0;
  for (size_t i = 0; i < a.size(); ++i) m += a[i] != b[i];
  return m + (a.size() > b.size() ? a.size() - b.size() : b.size() - a.size());
}

size_t count_nan(const std::vector<uint16_t>& a) {
  size_t m = 0;
  for (uint16_t x : a) m += std::isnan(nf4::bf16_bits_to_float(x));
  return m;
}

// Max |dequantized - original| / max |original|, against the NF4 definition in fp64.
double dequant_rel_err(const std::vector<float>& values, const std::vector<uint16_t>& bits) {
  double md = 0, mr = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    md = std::fmax(md, std::fabs(double(nf4::bf16_bits_to_float(bits[i])) - values[i]));
    mr = std::fmax(mr, std::fabs(double(values[i])));
  }
  return md / mr;
}

bool validate(int64_t n, bool nested) {
  const std::vector<float> values = random_bf16_values(n, 0.02);
  const nf4::Quantized q = nf4::quantize(values.data(), n, nested);
  const std::vector<uint16_t> cpu = nf4::dequantize_bf16(q), gpu = gpu_dequantize(q);
  const size_t mism = count_mismatches(cpu, gpu), nan = count_nan(gpu);
  const double err = dequant_rel_err(values, gpu);
  // The NF4 grid's widest gap is 0.3038 (between -1.0 and -0.696): rounding error <= 0.152 of the absmax, plus the 8-bit absmax error and bf16. plus the 8-bit absmax error and bf16.
  const bool ok = mism == 0 && nan == 0 && err < 0.17;
  std::printf("  dequantize n=%-9lld %-6s GPU vs CPU reference: %zu bf16 mismatches, %zu NaN; quantization rel err %.3f  %s\n",
              static_cast<long long>(n), nested ? "nested" : "plain", mism, nan, err, ok ? "OK" : "FAIL");
  return ok;
}

// ---- bitsandbytes cases (nf4_bnb_dump.py): little-endian raw sections in this order ----
struct BnbCase {
  int64_t n = 0;
  std::vector<uint16_t> input;
  std::vector<uint8_t> packed, absmax_codes, packed_plain;
  std::vector<float> absmax2, code2, absmax_plain;
  float offset = 0;
  std::vector<uint16_t> dequant, dequant_plain;
};

template <class T>
void read_section(std::ifstream& f, std::vector<T>& v, size_t count) {
  v.resize(count);
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(count * sizeof(T)));
}

bool read_case(const std::string& path, BnbCase& c) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  f.read(reinterpret_cast<char*>(&c.n), 8);
  const size_t n = size_t(c.n), bytes = (n + 1) / 2, blocks = (n + 63) / 64, chunks = (blocks + 255) / 256;
  read_section(f, c.input, n);
  read_section(f, c.packed, bytes);
  read_section(f, c.absmax_codes, blocks);
  read_section(f, c.absmax2, chunks);
  f.read(reinterpret_cast<char*>(&c.offset), 4);
  read_section(f, c.code2, 256);
  read_section(f, c.dequant, n);
  read_section(f, c.packed_plain, bytes);
  read_section(f, c.absmax_plain, blocks);
  read_section(f, c.dequant_plain, n);
  return static_cast<bool>(f);
}

template <class T>
size_t mismatches(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return std::max(a.size(), b.size());
  size_t m = 0;
  for (size_t i = 0; i < a.size(); ++i) m += std::memcmp(&a[i], &b[i], sizeof(T)) != 0;
  return m;
}

bool compare_bnb_case(const std::string& path) {
  BnbCase c;
  if (!read_case(path, c)) {
    std::printf("  %s: cannot read (truncated or missing)\n", path.c_str());
    return false;
  }
  std::vector<float> values(c.n);
  for (int64_t i = 0; i < c.n; ++i) values[i] = nf4::bf16_bits_to_float(c.input[i]);
  const std::vector<float> map(nf4::kDynamicMap, nf4::kDynamicMap + 256);
  const size_t map_mism = mismatches(map, c.code2);

  // Plain (no double quantization): packed bytes and absmax must be identical.
  const nf4::Quantized plain = nf4::quantize(values.data(), c.n, false);
  const size_t plain_packed = mismatches(plain.packed, c.packed_plain), plain_absmax = mismatches(plain.absmax, c.absmax_plain);
  const size_t plain_deq = count_mismatches(nf4::dequantize_bf16(plain), c.dequant_plain);
  const size_t plain_gpu = count_mismatches(gpu_dequantize(plain), c.dequant_plain);

  // Nested with our own offset (fp64 mean), then with bitsandbytes' offset (torch's fp32 mean).
  const nf4::Quantized own = nf4::quantize(values.data(), c.n, true);
  nf4::Quantized same_offset = plain;
  nf4::quantize_absmax(same_offset, c.offset);
  const size_t packed_mism = mismatches(own.packed, c.packed);
  const size_t codes_own = mismatches(own.absmax_codes, c.absmax_codes);
  const size_t codes_same = mismatches(same_offset.absmax_codes, c.absmax_codes);
  const size_t absmax2_same = mismatches(same_offset.absmax2, c.absmax2);
  const size_t deq_cpu = count_mismatches(nf4::dequantize_bf16(same_offset), c.dequant);
  // GPU dequantization of bitsandbytes' own quantization state.
  nf4::Quantized theirs = same_offset;
  theirs.packed = c.packed;
  theirs.absmax_codes = c.absmax_codes;
  theirs.absmax2 = c.absmax2;
  theirs.offset = c.offset;
  const size_t deq_gpu = count_mismatches(gpu_dequantize(theirs), c.dequant);
  int32_t own_bits, their_bits;
  std::memcpy(&own_bits, &own.offset, 4);
  std::memcpy(&their_bits, &c.offset, 4);
  const bool ok = map_mism == 0 && plain_packed == 0 && plain_absmax == 0 && plain_deq == 0 && plain_gpu == 0 &&
                  packed_mism == 0 && codes_same == 0 && absmax2_same == 0 && deq_cpu == 0 && deq_gpu == 0;
  std::printf("  %s n=%lld: map %zu | plain: packed %zu absmax %zu dequant cpu %zu gpu %zu | nested: packed %zu, codes "
              "%zu (own offset: %zu, offset ulps %d), absmax2 %zu, dequant cpu %zu gpu %zu mismatches  %s\n",
              path.c_str(), static_cast<long long>(c.n), map_mism, plain_packed, plain_absmax, plain_deq, plain_gpu,
              packed_mism, codes_same, codes_own, own_bits - their_bits, absmax2_same, deq_cpu, deq_gpu,
              ok ? "OK" : "FAIL");
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  bool ok = true;
  std::printf("validate GPU dequantize against the CPU reference\n");
  for (int64_t n : {int64_t(64) * 256 * 7, int64_t(1000003), int64_t(4096) * 4096 + 17})
    for (bool nested : {true, false}) ok &= validate(n, nested);
  if (!ok) {
    std::printf("nf4_check: VALIDATION FAILED\n");
    return 1;
  }
  // The comparison with bitsandbytes is reported (and sets the exit code) but does not stop the benchmark.
  bool bnb_ok = true;
  if (argc > 1) {
    std::printf("compare with bitsandbytes cases in %s\n", argv[1]);
    std::vector<std::string> files;
    if (DIR* d = opendir(argv[1])) {
      while (dirent* e = readdir(d))
        if (std::strncmp(e->d_name, "case_", 5) == 0) files.push_back(std::string(argv[1]) + "/" + e->d_name);
      closedir(d);
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) {
      std::printf("  no case_*.bin files\n");
      bnb_ok = false;
    }
    for (const auto& f : files) bnb_ok &= compare_bnb_case(f);
  }
  if (!validate_only()) {
    const int64_t n = int64_t(12288) * 4096;  // one Qwen3-8B MLP projection
    const std::vector<float> values = random_bf16_values(n, 0.02);
    const nf4::Quantized q = nf4::quantize(values.data(), n, true);
    double ms = 0;
    const std::vector<uint16_t> bits = gpu_dequantize(q, &ms);
    const double bytes = n / 2.0 + 2.0 * n + double(q.absmax_codes.size()) + 4.0 * q.absmax2.size();
    table_row_bandwidth("nf4 dequantize (nested)", "bf16", shape_string({12288, 4096}), ms, bytes,
                        dequant_rel_err(values, bits));
  }
  if (!bnb_ok) {
    std::printf("nf4_check: GPU dequantize validated; COMPARISON WITH BITSANDBYTES FAILED\n");
    return 1;
  }
  std::printf("nf4_check: all validations passed\n");
  return 0;
}
