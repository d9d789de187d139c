// qft-dist tokenize: the implementation is torch-free and lives in src/text so that the
// qft-tokenize test tool can share it.
#include "cli/commands.h"
#include "text/tokenize_command.h"

namespace qft::cli {

int cmd_tokenize(const Args& args) { return qft::text::run_tokenize_command(args); }

}  // namespace qft::cli
