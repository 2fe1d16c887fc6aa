#include "launch/cli.h"

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <variant>

#include "kernels/errors.h"
#include "runtime/config_schema.h"

namespace dtrain::launch {

namespace {

// The config's sections and keys from the schema itself (runtime/config_schema.h), so
// the help cannot fall behind it: "  optimizer: name (sgd|adamw), lr, ...", wrapped.
std::string config_keys_help() {
  constexpr size_t kWidth = 88;
  std::string out;
  for (const ConfigSection& section : config_schema()) {
    std::string line = "  " + section.name + ":";
    for (size_t i = 0; i < section.keys.size(); ++i) {
      const ConfigKey& key = section.keys[i];
      std::string item = key.name;
      if (const auto* choice = std::get_if<config_kind::Choice>(&key.kind)) {
        std::string values;
        for (const std::string& c : choice->choices) values += (values.empty() ? "" : "|") + c;
        item += " (" + values + ")";
      } else if (std::holds_alternative<config_kind::IntegerOrAuto>(key.kind)) {
        item += " (N|auto)";
      }
      if (i + 1 < section.keys.size()) item += ",";
      if (line.size() + 1 + item.size() > kWidth) {
        out += line + "\n";
        line = "    " + item;
      } else {
        line += " " + item;
      }
    }
    out += line + "\n";
  }
  return out;
}

}  // namespace

const char* main_help() {
  return R"(dtrain: data-parallel training across MPI ranks, one per device.

Usage:
  dtrain train CONFIG.yaml [--set key=value]... [--run-dir DIR] [--resume auto|PATH]
  dtrain plan CONFIG.yaml [--set key=value]... [--json]
                [--predict-ranks N,N,... [--cluster FILE]]
  dtrain launch [--nproc N|auto] [--] train|plan|sweep CONFIG.yaml ...
  dtrain plot RUN_DIR... [--out FILE.png|FILE.svg]
  dtrain trace merge RUN_DIR [--out FILE.json]
  dtrain sample RUN_DIR|CHECKPOINT [--prompt TEXT] [--tokens N] [--temperature T]
                [--top-k K] [--seed S]
  dtrain sweep CONFIG.yaml --target KEY=VALUE [--batches B,B,...|auto] [--seeds N]
               [--lr-scaling none|linear|sqrt] [--max-epochs E] [--dir SWEEP_DIR]
               [--set key=value]...
  dtrain COMMAND --help | dtrain --help

Run it as one process, or under MPI for several ranks:
  mpirun -np 2 dtrain train configs/fashion_mnist_cnn.yaml

Exit codes: 0 done; 1 internal error; 2 bad input (command line, config or data
file; the message names the key, file and line); 3 device or communication failure,
out of memory, non-finite values, or a checkpoint that cannot be written; 4 stopped
by SIGTERM, SIGINT or SIGUSR1 after writing a checkpoint (resume with --resume auto).
)";
}

std::string train_help() {
  std::string text = R"(Usage: dtrain train CONFIG.yaml [--set key=value]... [--run-dir DIR] [--resume auto|PATH]

Trains the model CONFIG.yaml describes on every rank of the job and writes the run
directory: config.yaml (the effective config), plan.json (the batch plan) and
metrics.jsonl (one JSON object per line: train steps and evaluations). It starts by
printing the batch plan (see 'dtrain plan --help').

Options:
  --set key=value   override a config key, e.g. --set train.epochs=3 or
                    --set 'model.hidden=[512, 256]' (the value is parsed as YAML);
                    may be repeated, applied in order after the file
  --run-dir DIR     where to write the run (default: runs/<config name>-<date-time>)
  --resume auto|PATH
                    continue from a checkpoint: auto takes the newest valid one in
                    checkpoint.dir (default RUN_DIR/checkpoints; none: start afresh),
                    skipping corrupt ones; PATH names one. Any number of ranks may
                    resume it; the global batch stays the checkpoint's.
  -h, --help        this text

Config sections and keys (README.md lists them with defaults):
)";
  return text + config_keys_help();
}

const char* plan_help() {
  return R"(Usage: dtrain plan CONFIG.yaml [--set key=value]... [--json]
                   [--predict-ranks N,N,... [--cluster FILE]]

Prints the batch plan of CONFIG.yaml on this job's ranks without training: per rank
the device, its memory (total, free, limit), the bytes by category (parameters,
gradients, optimizer state, activations, workspace), the micro-batch and the
predicted peak; then the accumulation steps k, the global batch and the learning
rate after optimizer.lr_scaling. Run it as 'dtrain train' would be run (one process,
or mpirun -np N), since the plan depends on the ranks and their devices.

How the plan is made: with train.micro_batch: auto each rank takes the largest
micro-batch whose predicted peak fits in memory.fraction of its free memory (or of
memory.limit / memory.limit_per_rank), confirmed by a probe step (a forward and a
backward) that backs off when it runs out of memory. train.global_batch: auto is the
sum of the micro-batches; a number G gives k = ceil(G / sum) and micro-batches
adjusted so that k x their sum is exactly G.

Options:
  --set key=value   override a config key (as for dtrain train)
  --json            print the plan as JSON (as RUN_DIR/plan.json) for scripts
  --predict-ranks N,N,...
                    also predict the step time and scaling efficiency of this config
                    on N ranks each: compute (k micro-steps, timed here at two
                    micro-batches, or from the cluster table's device FLOP/s) plus the
                    collectives an alpha-beta model says backward does not hide
                    (ring or tree all-reduce; sharding's reduce-scatter and
                    all-gather). The global batch is the config's (auto: each rank's
                    micro-batch, weak scaling).
  --cluster FILE    the links and nodes to predict for (configs/clusters/); default:
                    8 x H100 a node, NVLink inside, 400 Gb/s InfiniBand between
  -h, --help        this text
)";
}

const char* launch_help() {
  return R"(Usage: dtrain launch [--nproc N|auto] [--] train|plan|sweep CONFIG.yaml [options]...

Starts the command on N ranks of this machine through mpirun and returns the job's
exit code. auto (the default): one rank per GPU, or 2 on a machine without GPUs.
Ranks on GPUs are bound to their NUMA domain, CPU ranks to their share of the cores;
with more ranks than cores they are not bound (oversubscribed). As root, Open MPI's
root check is passed. SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 are forwarded to the
job. DTRAIN_MPIEXEC names another mpirun. Clusters: see launch/slurm/.
)";
}

const char* plot_help() {
  return R"(Usage: dtrain plot RUN_DIR... [--out FILE.png|FILE.svg]

Draws the training loss, the held-out loss, test accuracy (classifiers) or bits per
byte (text) where the runs have them, learning rate, throughput and gradient noise
scale of one or more finished (or running) runs over the steps, runs overlaid, from
their metrics.jsonl, with gnuplot (Debian: gnuplot-nox). --out defaults to plot.png;
a name ending in .svg gives SVG.
)";
}

const char* trace_help() {
  return R"(Usage: dtrain trace merge RUN_DIR [--out FILE.json]

Training with --set log.trace=true writes a Chrome-trace timeline per rank to
RUN_DIR/trace/rank-R.json (data, forward, backward, each all-reduce, the optimizer
step, evaluation, checkpoints). This lays the ranks side by side, one row each, in one
file (default RUN_DIR/trace.json) for chrome://tracing or ui.perfetto.dev.
)";
}

const char* sample_help() {
  return R"(Usage: dtrain sample RUN_DIR|CHECKPOINT [--prompt TEXT] [--tokens N] [--temperature T]
                     [--top-k K] [--seed S]

Generates text from a trained GPT (model.name: gpt) on this machine's CPU, one
process, no MPI: the model is rebuilt from the checkpoint's own config and its
parameters. RUN_DIR means the newest readable checkpoint of that run (checkpoint.dir
of RUN_DIR/config.yaml, default RUN_DIR/checkpoints); training writes checkpoints
every checkpoint.every_steps steps and at the end of the run when that key is set.
A CHECKPOINT file is used as it is.

A model of bytes (data.name: text) prints the prompt and then the generated bytes to
stdout, nothing else (with a newline after them on a terminal). A model of token
shards (data.name: tokens; dtrain has no tokenizer) takes and prints token ids
separated by spaces. Which checkpoint was used goes to stderr.

Options:
  --prompt TEXT       what the text continues (default: a newline; a token model:
                      space-separated ids, default the last id, GPT-2's <|endoftext|>).
                      A shell writes a newline as $'\n'.
  --tokens N          how many tokens (bytes) to generate (default 200)
  --temperature T     divides the logits: 1 samples the model's distribution (the
                      default), lower is more conservative, 0 always takes the most
                      likely token
  --top-k K           sample among the K most likely tokens only (default 0: all)
  --seed S            the random stream (default 1): the same checkpoint, options and
                      seed give the same text on any machine
  -h, --help          this text
)";
}

const char* sweep_help() {
  return R"(Usage: dtrain sweep CONFIG.yaml --target KEY=VALUE [--batches B,B,...|auto] [--seeds N]
                    [--lr-scaling none|linear|sqrt] [--max-epochs E] [--dir SWEEP_DIR]
                    [--set key=value]...

Does a larger batch (more memory) cut the steps this model needs, or only add epochs?
Trains CONFIG.yaml once per global batch (and seed), each planned as dtrain train
plans it (accumulation where the memory runs out), until the evaluation reaches the
target or the run ends (--max-epochs). Then it fits McCandlish et al.'s relation
(S/S_min - 1)(E/E_min - 1) = 1 to the steps S and samples E of the runs that reached
the target, and says what more memory would buy: B_crit = E_min / S_min with an
interval (from the seeds, or a bootstrap with one seed), beside the gradient noise
scale B_simple at the target (measured at each run's final weights,
log.noise_end_samples). Every rank runs every point; run it as
dtrain train is run (one process, mpirun, srun or dtrain launch).

Options:
  --target KEY=VALUE  e.g. eval_accuracy=0.88 (reached at >=) or eval_loss=1.6 (at
                      <=); the keys are the evaluation's (metrics.jsonl). Runs
                      evaluate at every step up to 20, then each time the step count
                      has grown by 5%: steps to the target are resolved within 5%.
  --batches LIST|auto the global batches, e.g. 32,64,128 (default auto: doubling from
                      a small batch up to the largest the memory plans without
                      accumulation, then two rungs past it, with accumulation)
  --seeds N           runs per batch, with train.seed, +1, ... (default 1)
  --lr-scaling MODE   optimizer.lr_scaling for every run (default: the config's);
                      optimizer.base_batch defaults to the config's train.global_batch
  --max-epochs E      train.epochs of every run: a run that has not reached the
                      target by then is reported and left out of the fit
  --dir SWEEP_DIR     the sweep's folder (default sweeps/<config name>): one run
                      directory per point, sweep.json, report.md and sweep.png
  --set key=value     override a config key (as for dtrain train)
  -h, --help          this text

Running the same command again skips the finished points and resumes an interrupted
one from its checkpoint (each run checkpoints 4 times an epoch unless
checkpoint.every_steps says otherwise). A bad target key, or a batch that cannot be
planned on these ranks, is an error before any run starts.
)";
}

namespace {

// "--flag value" or "--flag=value" at args[i]: the value into `out` (moving i past a
// separate value). `help` ends the error of a missing value.
bool flag_value(const std::vector<std::string>& args, size_t& i, const std::string& flag, const std::string& help,
                std::string& out) {
  const std::string& a = args[i];
  if (a == flag) {
    if (i + 1 >= args.size()) throw UsageError(flag + " needs a value; " + help);
    out = args[++i];
    return true;
  }
  if (a.rfind(flag + "=", 0) == 0) {
    out = a.substr(flag.size() + 1);
    return true;
  }
  return false;
}

// An argument no option took: the one CONFIG.yaml of train, plan and sweep.
void config_argument(CliCommand& cmd, const std::string& a, const std::string& help) {
  if (!a.empty() && a[0] == '-') throw UsageError("unknown option '" + a + "'; " + help);
  if (!cmd.config_path.empty()) throw UsageError("unexpected argument '" + a + "': give one CONFIG.yaml; " + help);
  cmd.config_path = a;
}

// The value of --tokens, --top-k or --seed: a whole number in [lo, hi].
uint64_t parse_count(const std::string& flag, const std::string& v, uint64_t lo, uint64_t hi, const char* what) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
  if (v.empty() || v[0] == '-' || v[0] == '+' || end == v.c_str() || *end != 0 || errno == ERANGE || n < lo ||
      n > hi) {
    throw UsageError(flag + " " + v + ": expected " + what + "; run 'dtrain sample --help'");
  }
  return n;
}

CliCommand parse_sample(const std::vector<std::string>& args) {
  CliCommand cmd;
  cmd.kind = CliCommand::Kind::Sample;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value_of = [&](const std::string& flag, std::string& out) {
      return flag_value(args, i, flag, "run 'dtrain sample --help'", out);
    };
    std::string v;
    if (a == "--help" || a == "-h") {
      cmd.kind = CliCommand::Kind::SampleHelp;
      return cmd;
    } else if (value_of("--prompt", v)) {
      cmd.prompt = v;
    } else if (value_of("--tokens", v)) {
      cmd.sample_tokens = static_cast<int64_t>(parse_count("--tokens", v, 0, 1000000, "a number of tokens from 0 to 1000000"));
    } else if (value_of("--top-k", v)) {
      cmd.top_k = static_cast<int64_t>(parse_count("--top-k", v, 0, 1u << 30, "0 (all tokens) or a positive number of tokens"));
    } else if (value_of("--seed", v)) {
      cmd.sample_seed = parse_count("--seed", v, 0, UINT64_MAX, "a whole number from 0 to 2^64-1");
    } else if (value_of("--temperature", v)) {
      char* end = nullptr;
      const double t = std::strtod(v.c_str(), &end);
      if (v.empty() || end == v.c_str() || *end != 0 || !std::isfinite(t) || t < 0.0) {
        throw UsageError("--temperature " + v + ": expected a number >= 0 (1: the model's distribution, 0: the most "
                         "likely token); run 'dtrain sample --help'");
      }
      cmd.temperature = t;
    } else if (!a.empty() && a[0] == '-') {
      throw UsageError("unknown option '" + a + "'; run 'dtrain sample --help'");
    } else if (cmd.sample_from.empty()) {
      cmd.sample_from = a;
    } else {
      throw UsageError("unexpected argument '" + a + "': give one RUN_DIR or CHECKPOINT; run 'dtrain sample --help'");
    }
  }
  if (cmd.sample_from.empty()) {
    throw UsageError("missing RUN_DIR: dtrain sample RUN_DIR|CHECKPOINT [--prompt TEXT] [--tokens N] ...");
  }
  return cmd;
}

CliCommand parse_sweep(const std::vector<std::string>& args) {
  CliCommand cmd;
  cmd.kind = CliCommand::Kind::Sweep;
  const std::string help = "run 'dtrain sweep --help'";
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value_of = [&](const std::string& flag, std::string& out) { return flag_value(args, i, flag, help, out); };
    auto whole = [&](const std::string& flag, const std::string& v) {
      char* end = nullptr;
      errno = 0;
      const long long n = std::strtoll(v.c_str(), &end, 10);
      if (v.empty() || end != v.c_str() + v.size() || errno != 0 || n < 1 || n > 1000000) {
        throw UsageError(flag + " " + v + ": expected a positive whole number; " + help);
      }
      return static_cast<int64_t>(n);
    };
    std::string v;
    if (a == "--help" || a == "-h") {
      cmd.kind = CliCommand::Kind::SweepHelp;
      return cmd;
    } else if (value_of("--target", v)) {
      cmd.sweep.target = v;
    } else if (value_of("--batches", v)) {
      cmd.sweep.batches = v;
    } else if (value_of("--seeds", v)) {
      cmd.sweep.seeds = whole("--seeds", v);
    } else if (value_of("--lr-scaling", v)) {
      if (v != "none" && v != "linear" && v != "sqrt") {
        throw UsageError("--lr-scaling " + v + ": accepted values: none, linear, sqrt; " + help);
      }
      cmd.sweep.lr_scaling = v;
    } else if (value_of("--max-epochs", v)) {
      cmd.sweep.max_epochs = whole("--max-epochs", v);
    } else if (value_of("--dir", v)) {
      cmd.sweep.dir = v;
    } else if (value_of("--set", v)) {
      cmd.overrides.push_back(v);
    } else {
      config_argument(cmd, a, help);
    }
  }
  if (cmd.config_path.empty()) throw UsageError("missing CONFIG.yaml: dtrain sweep CONFIG.yaml --target KEY=VALUE ...");
  if (cmd.sweep.target.empty()) {
    throw UsageError("missing --target KEY=VALUE, e.g. --target eval_accuracy=0.88; " + help);
  }
  return cmd;
}

CliCommand parse_trace(const std::vector<std::string>& args) {
  CliCommand cmd;
  if (args.size() >= 2 && (args[1] == "--help" || args[1] == "-h")) {
    cmd.kind = CliCommand::Kind::TraceHelp;
    return cmd;
  }
  if (args.size() < 3 || args[1] != "merge") throw UsageError("usage: dtrain trace merge RUN_DIR [--out FILE.json]");
  cmd.kind = CliCommand::Kind::TraceMerge;
  for (size_t i = 2; i < args.size(); ++i) {
    if (args[i] == "--out" && i + 1 < args.size()) {
      cmd.plot_out = args[++i];
    } else if (!args[i].empty() && args[i][0] == '-') {
      throw UsageError("unknown option '" + args[i] + "'; run 'dtrain trace --help'");
    } else if (cmd.plot_runs.empty()) {
      cmd.plot_runs.push_back(args[i]);
    } else {
      throw UsageError("dtrain trace merge takes one RUN_DIR");
    }
  }
  if (cmd.plot_runs.empty()) throw UsageError("missing RUN_DIR: dtrain trace merge RUN_DIR [--out FILE.json]");
  return cmd;
}

CliCommand parse_plot(const std::vector<std::string>& args) {
  CliCommand cmd;
  cmd.kind = CliCommand::Kind::Plot;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      cmd.kind = CliCommand::Kind::PlotHelp;
      return cmd;
    } else if (a == "--out") {
      if (i + 1 >= args.size()) throw UsageError("--out needs a file name; run 'dtrain plot --help'");
      cmd.plot_out = args[++i];
    } else if (a.rfind("--out=", 0) == 0) {
      cmd.plot_out = a.substr(6);
    } else if (!a.empty() && a[0] == '-') {
      throw UsageError("unknown option '" + a + "'; run 'dtrain plot --help'");
    } else {
      cmd.plot_runs.push_back(a);
    }
  }
  if (cmd.plot_runs.empty()) throw UsageError("missing RUN_DIR: dtrain plot RUN_DIR... [--out FILE.png]");
  const std::string& out = cmd.plot_out;
  if (!out.empty() && !(out.size() > 4 && (out.compare(out.size() - 4, 4, ".png") == 0 ||
                                           out.compare(out.size() - 4, 4, ".svg") == 0))) {
    throw UsageError("--out " + out + ": the image must end in .png or .svg");
  }
  return cmd;
}

CliCommand parse_launch(const std::vector<std::string>& args) {
  CliCommand cmd;
  cmd.kind = CliCommand::Kind::Launch;
  size_t i = 1;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      cmd.kind = CliCommand::Kind::LaunchHelp;
      return cmd;
    } else if (a == "--nproc" || a.rfind("--nproc=", 0) == 0) {
      std::string v;
      if (a == "--nproc") {
        if (i + 1 >= args.size()) throw UsageError("--nproc needs a value (a number or auto); run 'dtrain launch --help'");
        v = args[++i];
      } else {
        v = a.substr(8);
      }
      if (v == "auto") {
        cmd.nproc = 0;
      } else {
        char* end = nullptr;
        const long n = std::strtol(v.c_str(), &end, 10);
        if (end == v.c_str() || *end != 0 || n < 1 || n > 4096) {
          throw UsageError("--nproc " + v + ": expected a number of ranks from 1 to 4096, or auto");
        }
        cmd.nproc = static_cast<int>(n);
      }
    } else if (a == "--") {
      ++i;
      break;
    } else if (!a.empty() && a[0] == '-') {
      throw UsageError("unknown option '" + a + "'; run 'dtrain launch --help'");
    } else {
      break;
    }
  }
  cmd.launched.assign(args.begin() + static_cast<std::ptrdiff_t>(i), args.end());
  if (cmd.launched.empty() ||
      (cmd.launched[0] != "train" && cmd.launched[0] != "plan" && cmd.launched[0] != "sweep")) {
    throw UsageError("dtrain launch needs the command the ranks run (train, plan or sweep): dtrain launch "
                     "[--nproc N] -- train CONFIG.yaml");
  }
  parse_cli(cmd.launched);  // the command's own errors, said here once
  return cmd;
}

}  // namespace

CliCommand parse_cli(const std::vector<std::string>& args) {
  CliCommand cmd;
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") return cmd;
  if (args[0] == "launch") return parse_launch(args);
  if (args[0] == "plot") return parse_plot(args);
  if (args[0] == "trace") return parse_trace(args);
  if (args[0] == "sample") return parse_sample(args);
  if (args[0] == "sweep") return parse_sweep(args);
  if (args[0] != "train" && args[0] != "plan") {
    throw UsageError("unknown command '" + args[0] + "'; run 'dtrain --help' for the commands");
  }
  const bool plan = args[0] == "plan";
  const std::string help = plan ? "run 'dtrain plan --help'" : "run 'dtrain train --help'";
  cmd.kind = plan ? CliCommand::Kind::Plan : CliCommand::Kind::Train;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](const std::string& flag) -> std::string {
      if (i + 1 >= args.size()) throw UsageError(flag + " needs a value; " + help);
      return args[++i];
    };
    if (a == "--help" || a == "-h") {
      cmd.kind = plan ? CliCommand::Kind::PlanHelp : CliCommand::Kind::TrainHelp;
      return cmd;
    } else if (plan && a == "--json") {
      cmd.json = true;
    } else if (plan && a == "--predict-ranks") {
      cmd.predict_ranks = value(a);
    } else if (plan && a == "--cluster") {
      cmd.cluster = value(a);
    } else if (a == "--set") {
      cmd.overrides.push_back(value(a));
    } else if (a.rfind("--set=", 0) == 0) {
      cmd.overrides.push_back(a.substr(6));
    } else if (!plan && a == "--resume") {
      cmd.resume = value(a);
    } else if (!plan && a.rfind("--resume=", 0) == 0) {
      cmd.resume = a.substr(9);
    } else if (!plan && a == "--run-dir") {
      cmd.run_dir = value(a);
    } else if (!plan && a.rfind("--run-dir=", 0) == 0) {
      cmd.run_dir = a.substr(10);
    } else {
      config_argument(cmd, a, help);
    }
  }
  if (!cmd.cluster.empty() && cmd.predict_ranks.empty()) {
    throw UsageError("--cluster goes with --predict-ranks N,N,...; " + help);
  }
  if (cmd.config_path.empty()) {
    throw UsageError(plan ? "missing CONFIG.yaml: dtrain plan CONFIG.yaml [--set key=value]... [--json]"
                          : "missing CONFIG.yaml: dtrain train CONFIG.yaml [--set key=value]... [--run-dir DIR]");
  }
  return cmd;
}

}  // namespace dtrain::launch
