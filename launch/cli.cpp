#include "launch/cli.h"

#include "kernels/errors.h"

namespace dtrain::launch {

const char* main_help() {
  return R"(dtrain: data-parallel training across MPI ranks, one per device.

Usage:
  dtrain train CONFIG.yaml [--set key=value]... [--run-dir DIR]
  dtrain train --help
  dtrain --help

Run it as one process, or under MPI for several ranks:
  mpirun -np 2 dtrain train configs/fashion_mnist_cnn.yaml

Exit codes: 0 done; 1 internal error; 2 bad input (command line, config or data
file; the message names the key, file and line); 3 device or communication failure.
)";
}

const char* train_help() {
  return R"(Usage: dtrain train CONFIG.yaml [--set key=value]... [--run-dir DIR]

Trains the model CONFIG.yaml describes on every rank of the job and writes the run
directory: config.yaml (the effective config) and metrics.jsonl (one JSON object per
line: train steps and evaluations).

Options:
  --set key=value   override a config key, e.g. --set train.epochs=3 or
                    --set 'model.hidden=[512, 256]' (the value is parsed as YAML);
                    may be repeated, applied in order after the file
  --run-dir DIR     where to write the run (default: runs/<config name>-<date-time>)
  -h, --help        this text

Config sections and keys (README.md lists them with defaults):
  model.name (mlp|cnn), model.hidden, model.channels, model.kernel_size, model.cnn_hidden
  data.name (fashion_mnist|synthetic), data.path, data.train_samples, data.test_samples
  train.global_batch, train.micro_batch, train.epochs, train.max_steps, train.seed
  optimizer.name (sgd|adamw), optimizer.lr, optimizer.momentum, optimizer.nesterov,
    optimizer.weight_decay, optimizer.beta1, optimizer.beta2, optimizer.eps
  schedule.warmup_steps, schedule.decay (none|cosine|step), schedule.min_lr,
    schedule.step_size, schedule.gamma
  eval.every_steps, eval.batch, log.every_steps
  comm.backend (auto|mpi|self), comm.bucket_mb, device.threads
)";
}

CliCommand parse_cli(const std::vector<std::string>& args) {
  CliCommand cmd;
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") return cmd;
  if (args[0] != "train") {
    throw UsageError("unknown command '" + args[0] + "'; run 'dtrain --help' for the commands");
  }
  cmd.kind = CliCommand::Kind::Train;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](const std::string& flag) -> std::string {
      if (i + 1 >= args.size()) throw UsageError(flag + " needs a value; run 'dtrain train --help'");
      return args[++i];
    };
    if (a == "--help" || a == "-h") {
      cmd.kind = CliCommand::Kind::TrainHelp;
      return cmd;
    } else if (a == "--set") {
      cmd.overrides.push_back(value(a));
    } else if (a.rfind("--set=", 0) == 0) {
      cmd.overrides.push_back(a.substr(6));
    } else if (a == "--run-dir") {
      cmd.run_dir = value(a);
    } else if (a.rfind("--run-dir=", 0) == 0) {
      cmd.run_dir = a.substr(10);
    } else if (!a.empty() && a[0] == '-') {
      throw UsageError("unknown option '" + a + "'; run 'dtrain train --help'");
    } else if (cmd.config_path.empty()) {
      cmd.config_path = a;
    } else {
      throw UsageError("unexpected argument '" + a + "': give one CONFIG.yaml; run 'dtrain train --help'");
    }
  }
  if (cmd.config_path.empty()) {
    throw UsageError("missing CONFIG.yaml: dtrain train CONFIG.yaml [--set key=value]... [--run-dir DIR]");
  }
  return cmd;
}

}  // namespace dtrain::launch
