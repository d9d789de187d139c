// Subcommands of the qft-dist binary. Each lives in its own cmd_*.cpp and receives the arguments
// after the subcommand name. They return the process exit code; qft::Error escaping them is printed
// by main() and turns into exit code 1. Those that run on every rank of an MPI job (train, eval) also
// receive the MPI runtime main() started, and pass its world communicator down.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "parallel/mpi_communicator.h"

namespace qft::cli {

using Args = std::vector<std::string>;

int cmd_train(const Args& args, parallel::MpiRuntime& mpi);  // qft-dist CONFIG.yaml  (or: qft-dist train CONFIG.yaml)
int cmd_prepare(const Args& args);      // tokenize + template + mask + cache a data set to HDF5
int cmd_tokenize(const Args& args);     // encode / decode text with a tokenizer.json (tests, benchmarks)
int cmd_init_model(const Args& args);   // write a random-init HF Qwen3 model dir
int cmd_merge(const Args& args);        // base + PEFT adapter -> merged HF model dir
int cmd_eval(const Args& args, parallel::MpiRuntime& mpi);  // loss / perplexity of a model (+ adapter) on a config's data
int cmd_eval_generate(const Args& args, parallel::MpiRuntime& mpi);  // eval --generate: answers scored, base vs adapter
void print_eval_generate_usage(std::FILE* out);
int cmd_inspect(const Args& args);      // print a model dir / adapter / safetensors / token cache summary
int cmd_plot(const Args& args);         // (re)draw RUN_DIR/report.html from trainer_log.jsonl
int cmd_chat(const Args& args);         // interactive chat, streaming (src/generate)
int cmd_generate(const Args& args);     // JSONL of prompts -> JSONL of answers, batched (src/generate)
int cmd_template(const Args& args);     // one data record as the model sees it (template, targets, tokens)

}  // namespace qft::cli
