// `qft-dist template DATA.jsonl --tokenizer PATH [--index N] ...`: what the model will see for one
// record. The record is read, rendered with the Qwen3 template and tokenized exactly as `prepare` does;
// the rendered text is printed with the target tokens between « and », then the token counts. Torch-free
// (src/data) so the tests can run it without libtorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/formats.h"
#include "data/tokenize_sample.h"
#include "text/tokenizer.h"

namespace qft::data {

struct TemplateRequest {
  std::string data_path;
  int64_t index = 0;  // 0-based record position in the file (blank JSONL lines not counted)
  DataFormat format = DataFormat::auto_detect;
  MaskOptions mask;
};

// The report printed by the command. Throws qft::Error naming file:line and the reason when the record
// is unusable (the reason `prepare` would skip it for), or when there are not enough records.
std::string template_view(const TemplateRequest& request, const text::Tokenizer& tokenizer);

// `text` with `begin_marker` / `end_marker` around every run of target tokens; token i covers
// text[offsets[i], offsets[i + 1]).
std::string mark_targets(const std::string& text, const std::vector<uint32_t>& offsets,
                         const std::vector<uint8_t>& targets, const std::string& begin_marker,
                         const std::string& end_marker);

int run_template_command(const std::vector<std::string>& args);

}  // namespace qft::data
