// The typed configuration of a run, loaded from YAML (yaml-cpp) with `--set`
// overrides. Loading is strict: an unknown key, a value of the wrong type or out of
// range is a ConfigError naming the key and where it was written (FILE:LINE, or the
// --set argument). Values derived later (the batch plan) report errors through
// Config::where(key) so they can name the same place. Which keys exist, what each
// accepts and the order they are written in is one table, runtime/config_schema.h: a
// field added here needs its entry there (a test counts the fields).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "models/model_spec.h"

namespace dtrain {

struct DataConfig {
  std::string name = "fashion_mnist";  // fashion_mnist | synthetic | regression | text | tokens
  std::string path = "/usr/share/datasets/fashion-mnist";  // text: a file, a folder or a glob
  int64_t train_samples = 8192;  // synthetic only
  int64_t test_samples = 2048;   // synthetic only
  int64_t features = 16;         // regression: the inputs' dimension
  double noise = 1.0;            // regression: the training targets' noise (standard deviation)
  double val_fraction = 0.1;     // text: the last fraction of the byte stream is validation
  std::string train_files;       // tokens: a glob of llm.c token shards for training
  std::string val_files;         // tokens: a glob of shards for validation
};

// train.global_batch and train.micro_batch take a number or `auto`, stored as kAuto.
inline constexpr int64_t kAuto = 0;

struct TrainConfig {
  int64_t global_batch = 64;       // kAuto: the sum of the ranks' micro-batches (k = 1)
  int64_t micro_batch = kAuto;     // per rank, per micro-step; kAuto: the batch planner's
  int64_t epochs = 1;
  int64_t max_steps = 0;     // 0: no step limit
  uint64_t seed = 1;
  std::string on_nonfinite = "stop";  // stop | skip: a NaN or Inf loss or gradient
};

struct CheckpointConfig {
  std::string dir;                 // empty: RUN_DIR/checkpoints
  int64_t every_steps = 0;         // every N steps and at the end; 0: only on a stop signal
  int64_t keep = 3;                // the newest N are kept
  std::string on_error = "stop";   // stop | continue: a checkpoint that cannot be written
};

struct OptimizerConfig {
  std::string name = "sgd";  // sgd | adamw
  double lr = 0.05;
  double momentum = 0.9;     // sgd
  bool nesterov = false;     // sgd
  double weight_decay = 0.0; // decoupled, both optimizers
  double beta1 = 0.9;        // adamw
  double beta2 = 0.999;      // adamw
  double eps = 1e-8;         // adamw
  std::string lr_scaling = "none";  // none | linear | sqrt: lr x (G / base_batch)^(1 | 1/2)
  int64_t base_batch = 0;           // the global batch `lr` was tuned for; 0: not given
  double max_lr = 0.0;              // the scaled lr is capped here; 0: no cap
  std::string decay_filter = "matrices";  // matrices (weights of 2 or more dimensions) | all
  double clip_grad_norm = 0.0;      // clip the reduced gradient's global norm to this; 0: off
  // auto | true | false: each rank keeps the optimizer state of its range of the
  // parameters alone (ZeRO stage 1; runtime/optimizer_shards.h). auto: the planner
  // decides (runtime/memory_levers.h).
  std::string shard = "auto";
};

struct ScheduleConfig {
  int64_t warmup_steps = 0;     // linear warmup from lr/warmup_steps to lr
  double warmup_epochs = 0.0;   // the same, in epochs (steps derived from the plan)
  std::string decay = "none";   // none | cosine | step
  double min_lr = 0.0;          // cosine: the floor reached at the last step
  int64_t step_size = 1000;     // step: multiply by gamma every step_size steps after warmup
  double gamma = 0.1;           // step
};

struct EvalConfig {
  int64_t every_steps = 0;  // 0: only at the end
  int64_t batch = 500;      // per rank
};

struct LogConfig {
  int64_t every_steps = 50;
  bool noise_scale = true;   // estimate the gradient noise scale B_simple
  bool trace = false;        // a Chrome-trace timeline per rank in RUN_DIR/trace/
  double noise_ema = 0.95;   // the decay of its moving averages
  // A run to a target (dtrain sweep) measures the noise scale once more at its final
  // weights from about this many samples (Note [Noise scale at the end of a run]);
  // 0: it reports the moving average instead.
  int64_t noise_end_samples = 4096;
};

// Device memory for the batch planner. Sizes are bytes, or strings like 512MiB, 2GB.
struct MemoryConfig {
  double fraction = 0.9;                 // of the free memory the plan may use
  int64_t limit = 0;                     // per rank; 0: the device's memory
  std::vector<int64_t> limit_per_rank;   // one per rank; overrides `limit`
  // auto | none | blocks: a GPT block keeps its input, recomputes the rest. auto: the
  // planner decides (runtime/memory_levers.h).
  std::string recompute = "auto";
};

struct CommConfig {
  std::string backend = "auto";  // auto | mpi | nccl | self
  double bucket_mb = 25.0;       // gradient all-reduce bucket size
  double timeout_s = 300.0;      // a collective waiting longer ends the job (0: no watchdog)
  std::string reduce_dtype = "fp32";  // fp32 | bf16: the gradients' type on the wire
};

struct DeviceConfig {
  std::string kind = "auto";  // auto (a GPU when the node has one) | cpu | cuda
  bool share = false;         // allow more ranks than GPUs on a node (they share GPUs)
  int64_t threads = 0;        // CPU threads per rank; 0: the node's cores shared among its ranks
};

struct PrecisionConfig {
  bool tf32 = false;  // allow TF32 tensor-core math on GPUs (fp32 results then differ)
  std::string compute = "fp32";  // fp32 | bf16: activations and GEMM inputs (Note [bf16 storage])
  // Time cuBLASLt's candidate algorithms for each bf16 GEMM shape on a GPU and keep the
  // fastest (Note [GEMM autotuning], kernels/cuda/linear_lt.h); runs then repeat each
  // other only to the last bits.
  bool gemm_autotune = false;
  // false: take a library's faster non-deterministic algorithm where it has one (on a
  // GPU, cuDNN's attention backward and convolutions; Note [Fused attention], Note
  // [cuDNN algorithm choice]); runs then repeat each other only to the last bits.
  bool deterministic = true;
};

struct Config {
  ModelSpec model;
  DataConfig data;
  TrainConfig train;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  EvalConfig eval;
  LogConfig log;
  MemoryConfig memory;
  CheckpointConfig checkpoint;
  CommConfig comm;
  DeviceConfig device;
  PrecisionConfig precision;

  std::string source;                          // the config file's path
  std::map<std::string, std::string> origins;  // "train.epochs" -> "cfg.yaml:7" or "--set ..."
  bool epochs_given = false;                   // train.epochs was written, not defaulted

  // Where a key was set ("FILE:LINE", "--set key=value"), or the file with "(default)".
  std::string where(const std::string& key) const;
  // The memory limit of `rank` in a world of `world_size`: limit_per_rank's entry
  // (ConfigError naming the key when the list has another length), else `limit`.
  int64_t memory_limit_of(int rank, int world_size) const;
};

// Loads FILE and applies `overrides` ("a.b=value", value parsed as YAML) in order.
Config load_config(const std::string& file, const std::vector<std::string>& overrides);

// Loads a config from YAML text (a checkpoint's effective config). `source` names
// where the text came from; errors say SOURCE:LINE as they say FILE:LINE.
Config load_config_from_string(const std::string& yaml, const std::string& source);

// The effective config as YAML that load_config accepts again. `trailer` lines are
// appended as comments (the plan, the world size).
std::string config_to_yaml(const Config& config, const std::vector<std::string>& trailer = {});

}  // namespace dtrain
