// qft-dist template: the implementation is torch-free and lives in src/data (template_command.h).
#include "cli/commands.h"
#include "data/template_command.h"

namespace qft::cli {

int cmd_template(const Args& args) { return qft::data::run_template_command(args); }

}  // namespace qft::cli
