// qft-tokenize: `qft-dist tokenize` without libtorch, so that the tokenizer reference test and
// benchmark only need the qft_text library. Same arguments as `qft-dist tokenize`.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "core/error.h"
#include "text/tokenize_command.h"

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  try {
    return qft::text::run_tokenize_command(args);
  } catch (const qft::Error& e) {
    std::fprintf(stderr, "qft-tokenize: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qft-tokenize: internal error: %s\n", e.what());
    return 1;
  }
}
