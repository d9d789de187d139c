// The `tokenize` subcommand (qft-dist tokenize, and the torch-free qft-tokenize test tool):
// encodes JSONL {"text": ...} lines to JSON id arrays, decodes them back, or benchmarks encoding.
#pragma once

#include <string>
#include <vector>

namespace qft::text {

// `args` are the arguments after the subcommand name; returns the process exit code.
// Bad input throws qft::Error naming the file and line.
int run_tokenize_command(const std::vector<std::string>& args);

}  // namespace qft::text
