// qft-dist plot RUN_DIR
// (Re)draws RUN_DIR/report.html from what the run left there: trainer_log.jsonl (required),
// qft_config.yaml and run_summary.json (when present). Works during a run, after it, and on runs of
// older qft versions that wrote only the log.
#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "report/html_report.h"

namespace qft::cli {

namespace {

void print_plot_usage(std::FILE* out) {
  std::fprintf(out,
               "usage: qft-dist plot RUN_DIR\n\n"
               "Writes RUN_DIR/report.html (loss, eval loss, learning rate, gradient norm, throughput and memory\n"
               "curves as inline SVG, the run summary and config) from RUN_DIR/trainer_log.jsonl.\n");
}

}  // namespace

int cmd_plot(const Args& args) {
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    print_plot_usage(stdout);
    return 0;
  }
  if (args.size() != 1 || args[0].rfind("-", 0) == 0) {
    print_plot_usage(stderr);
    return 2;
  }
  std::printf("%s\n", report::write_report(args[0]).c_str());
  return 0;
}

}  // namespace qft::cli
