// The README demo's data set, generated deterministically by the project itself: short samples mixing
// Chinese and English chat, a system-prompt persona, tool calls with tool results and reasoning in
// <think> blocks, in three of the supported formats. `qft-dist prepare --write-demo-data DIR` writes
// it; the committed copy under configs/demo-data/ is checked against this generator by a test.
#pragma once

#include <string>
#include <vector>

namespace qft::data {

struct DemoFile {
  std::string name;   // e.g. "demo_chat.jsonl"
  std::string contents;
};

std::vector<DemoFile> demo_dataset_files();

// Writes every demo file into `directory` (created if missing); returns the paths written.
std::vector<std::string> write_demo_dataset(const std::string& directory);

}  // namespace qft::data
