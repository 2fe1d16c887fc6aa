// The dtrain command line:
//   dtrain --help
//   dtrain train CONFIG.yaml [--set key=value]... [--run-dir DIR]
//   dtrain plan CONFIG.yaml [--set key=value]... [--json] [--predict-ranks N,...] [--cluster FILE]
//   dtrain sample RUN_DIR|CHECKPOINT [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed S]
//   dtrain sweep CONFIG.yaml --target KEY=VALUE [--batches B,B,...|auto] [--seeds N]
//                [--lr-scaling none|linear|sqrt] [--max-epochs E] [--dir SWEEP_DIR]
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace dtrain::launch {

struct CliCommand {
  enum class Kind {
    Help, TrainHelp, Train, PlanHelp, Plan, LaunchHelp, Launch, PlotHelp, Plot, TraceHelp, TraceMerge,
    SampleHelp, Sample, SweepHelp, Sweep
  } kind = Kind::Help;
  std::string config_path;
  std::vector<std::string> overrides;  // "key=value", in order
  std::string run_dir;                 // empty: runs/<config stem>-<time>
  bool json = false;                   // plan: print JSON instead of text
  std::string predict_ranks;           // plan: "N,N,..." to predict the step on (Note [Scaling model])
  std::string cluster;                 // plan: the cluster table; empty: the built-in H100 one
  std::string resume;                  // train: "" | "auto" | a checkpoint path
  int nproc = 0;                       // launch: ranks; 0: auto
  std::vector<std::string> launched;   // launch: the command the ranks run
  std::vector<std::string> plot_runs;  // plot: run directories
  std::string plot_out;                // plot: the image (.png or .svg); empty: plot.png
                                       // trace merge: the merged file; empty: RUN_DIR/trace.json
  std::string sample_from;             // sample: a run directory or a checkpoint file
  std::optional<std::string> prompt;   // sample: none: a newline (bytes) or the last token id
  int64_t sample_tokens = 200;         // sample: tokens to generate
  double temperature = 1.0;            // sample: >= 0; 0 takes the most likely token
  int64_t top_k = 0;                   // sample: 0: all tokens
  uint64_t sample_seed = 1;            // sample: the same seed gives the same text
  struct Sweep {
    std::string target;                // KEY=VALUE, checked against the model's metrics
    std::string batches = "auto";      // "auto" or "B,B,..."
    int64_t seeds = 1;
    std::string lr_scaling;            // empty: the config's optimizer.lr_scaling
    int64_t max_epochs = 0;            // 0: the config's train.epochs
    std::string dir;                   // empty: sweeps/<config name>
  } sweep;
};

// Throws UsageError for anything it does not understand, with the usage line.
CliCommand parse_cli(const std::vector<std::string>& args);

const char* main_help();
std::string train_help();
const char* plan_help();
const char* launch_help();
const char* plot_help();
const char* trace_help();
const char* sample_help();
const char* sweep_help();

}  // namespace dtrain::launch
