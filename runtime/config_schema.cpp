#include "runtime/config_schema.h"

namespace dtrain {
namespace {

using namespace config_kind;

// The field `member` of the section `section` of Config.
template <class S, class T>
ConfigField<T> field(S Config::*section, T S::*member) {
  return {[section, member](Config& c) -> T& { return c.*section.*member; },
          [section, member](const Config& c) -> const T& { return c.*section.*member; }};
}

// Fields of one section: model(&ModelSpec::name). A member of another struct does not compile.
template <class S>
auto fields_of(S Config::*section) {
  return [section](auto member) { return field(section, member); };
}

bool is_odd(int64_t v) { return v % 2 != 0; }

std::vector<ConfigSection> make_schema() {
  const auto model = fields_of(&Config::model);
  const auto data = fields_of(&Config::data);
  const auto train = fields_of(&Config::train);
  const auto optimizer = fields_of(&Config::optimizer);
  const auto schedule = fields_of(&Config::schedule);
  const auto eval = fields_of(&Config::eval);
  const auto log = fields_of(&Config::log);
  const auto checkpoint = fields_of(&Config::checkpoint);
  const auto memory = fields_of(&Config::memory);
  const auto comm = fields_of(&Config::comm);
  const auto device = fields_of(&Config::device);
  const auto precision = fields_of(&Config::precision);

  return {
      {"model",
       {
           {"name", Choice{model(&ModelSpec::name), {"mlp", "cnn", "gpt", "linear"}},
            "the model: mlp, cnn, gpt or linear (regression data)"},
           {"hidden", PositiveList{model(&ModelSpec::hidden), true}, "mlp: hidden widths (784-256-128-10)"},
           {"channels", PositiveList{model(&ModelSpec::channels), false},
            "cnn: output channels of each conv-relu-pool"},
           {"kernel_size",
            Integer{.field = model(&ModelSpec::kernel_size), .lo = 1, .hi = 15, .rule = is_odd,
                    .rule_says = "must be odd (same padding keeps the image size)"},
            "cnn: square kernel, same padding, stride 1"},
           {"cnn_hidden", PositiveList{model(&ModelSpec::cnn_hidden), true},
            "cnn: fully connected widths before the classifier"},
           // gpt (models/gpt.h); the builder checks them against the data.
           {"n_layer", Integer{model(&ModelSpec::n_layer), 1}, "gpt: transformer blocks"},
           {"n_head", Integer{model(&ModelSpec::n_head), 1}, "gpt: attention heads; n_embd must be a multiple"},
           {"n_embd", Integer{model(&ModelSpec::n_embd), 1}, "gpt: the residual stream's width"},
           {"seq_len", Integer{model(&ModelSpec::seq_len), 1}, "gpt: tokens per sample (the context length)"},
           {"vocab", Integer{model(&ModelSpec::vocab), 0}, "gpt: token values; 0: from the data (256 for bytes)"},
           {"dropout", Real{.field = model(&ModelSpec::dropout), .lo = 0.0, .hi = 1.0, .hi_open = true},
            "gpt: on the embeddings and both residual branches of each block"},
       }},
      {"data",
       {
           {"name", Choice{data(&DataConfig::name), {"fashion_mnist", "synthetic", "regression", "text", "tokens"}},
            "the dataset: fashion_mnist, synthetic, regression, text or tokens"},
           {"path", Text{data(&DataConfig::path), "a path"}, "fashion_mnist: its folder; text: a file, a folder or a glob"},
           {"train_samples", Integer{data(&DataConfig::train_samples), 1, int64_t{1} << 31}, "synthetic only"},
           {"test_samples", Integer{data(&DataConfig::test_samples), 1, int64_t{1} << 31}, "synthetic only"},
           {"features", Integer{data(&DataConfig::features), 1, int64_t{1} << 20}, "regression: input dimension"},
           {"noise", Real{.field = data(&DataConfig::noise), .lo = 0.0, .hi = 1e6}, "regression: the targets' noise"},
           {"val_fraction",
            Real{.field = data(&DataConfig::val_fraction), .lo = 0.0, .hi = 1.0, .lo_open = true, .hi_open = true},
            "text: the last fraction of the byte stream is validation"},
           {"train_files", Text{data(&DataConfig::train_files), "a path or glob"},
            "tokens: a glob of llm.c token shards for training"},
           {"val_files", Text{data(&DataConfig::val_files), "a path or glob"}, "tokens: a glob of shards for validation"},
       }},
      {"train",
       {
           {"global_batch", IntegerOrAuto{train(&TrainConfig::global_batch)},
            "samples per step over all ranks; auto: the sum of the ranks' micro-batches"},
           {"micro_batch", IntegerOrAuto{train(&TrainConfig::micro_batch)},
            "per rank, per micro-step; auto: the batch planner's"},
           // Left out when max_steps ends the run and epochs was not written, so that the
           // effective config does not claim an epoch count the user never gave
           // (Config::epochs_given). Loading it back restores the default.
           {"epochs", Integer{train(&TrainConfig::epochs), 1}, "passes over the training data",
            [](const Config& c) { return c.epochs_given || c.train.max_steps == 0; }},
           {"max_steps", Integer{train(&TrainConfig::max_steps), 0}, "0: no step limit"},
           {"seed", Unsigned{train(&TrainConfig::seed)}, "the run's seed"},
           {"on_nonfinite", Choice{train(&TrainConfig::on_nonfinite), {"stop", "skip"}},
            "on a NaN or Inf loss or gradient: stop, or skip the step"},
       }},
      {"optimizer",
       {
           {"name", Choice{optimizer(&OptimizerConfig::name), {"sgd", "adamw"}}, "sgd or adamw"},
           {"lr", Real{.field = optimizer(&OptimizerConfig::lr), .lo = 0.0, .hi = 1e3, .lo_open = true},
            "the learning rate"},
           {"momentum", Real{.field = optimizer(&OptimizerConfig::momentum), .lo = 0.0, .hi = 1.0, .hi_open = true},
            "sgd"},
           {"nesterov", Boolean{optimizer(&OptimizerConfig::nesterov)}, "sgd"},
           {"weight_decay", Real{.field = optimizer(&OptimizerConfig::weight_decay), .lo = 0.0, .hi = 1e3},
            "decoupled, both optimizers"},
           {"beta1", Real{.field = optimizer(&OptimizerConfig::beta1), .lo = 0.0, .hi = 1.0, .hi_open = true}, "adamw"},
           {"beta2", Real{.field = optimizer(&OptimizerConfig::beta2), .lo = 0.0, .hi = 1.0, .hi_open = true}, "adamw"},
           {"eps", Real{.field = optimizer(&OptimizerConfig::eps), .lo = 0.0, .hi = 1.0, .lo_open = true}, "adamw"},
           {"lr_scaling", Choice{optimizer(&OptimizerConfig::lr_scaling), {"none", "linear", "sqrt"}},
            "none, linear or sqrt: lr x (G / base_batch)^(1 | 1/2)"},
           // Left out while 0 (not given), which the reader does not accept (at least 1).
           {"base_batch", Integer{optimizer(&OptimizerConfig::base_batch), 1}, "the global batch `lr` was tuned for",
            [](const Config& c) { return c.optimizer.base_batch > 0; }},
           {"max_lr", Real{.field = optimizer(&OptimizerConfig::max_lr), .lo = 0.0, .hi = 1e3},
            "cap on the lr after lr_scaling (linear scaling up to a stable lr); 0: no cap"},
           {"decay_filter", Choice{optimizer(&OptimizerConfig::decay_filter), {"matrices", "all"}},
            "weight decay on matrices (weights of 2 or more dimensions) or all parameters"},
           {"clip_grad_norm", Real{.field = optimizer(&OptimizerConfig::clip_grad_norm), .lo = 0.0, .hi = 1e9},
            "clip the reduced gradient's global norm to this; 0: off"},
           {"shard", Choice{optimizer(&OptimizerConfig::shard), {"auto", "true", "false"}},
            "each rank keeps the optimizer state of its range of the parameters alone; auto: when it pays"},
       }},
      {"schedule",
       {
           {"warmup_steps", Integer{schedule(&ScheduleConfig::warmup_steps), 0},
            "linear warmup from lr/warmup_steps to lr"},
           {"warmup_epochs", Real{.field = schedule(&ScheduleConfig::warmup_epochs), .lo = 0.0, .hi = 1e6},
            "the same, in epochs (steps derived from the plan)"},
           {"decay", Choice{schedule(&ScheduleConfig::decay), {"none", "cosine", "step"}}, "none, cosine or step"},
           {"min_lr", Real{.field = schedule(&ScheduleConfig::min_lr), .lo = 0.0, .hi = 1e3},
            "cosine: the floor reached at the last step"},
           {"step_size", Integer{schedule(&ScheduleConfig::step_size), 1},
            "step: multiply by gamma every step_size steps after warmup"},
           {"gamma", Real{.field = schedule(&ScheduleConfig::gamma), .lo = 0.0, .hi = 1.0, .lo_open = true}, "step"},
       }},
      {"eval",
       {
           {"every_steps", Integer{eval(&EvalConfig::every_steps), 0}, "0: only at the end"},
           {"batch", Integer{eval(&EvalConfig::batch), 1}, "per rank"},
       }},
      {"log",
       {
           {"every_steps", Integer{log(&LogConfig::every_steps), 1}, "steps between log lines"},
           {"noise_scale", Boolean{log(&LogConfig::noise_scale)}, "estimate the gradient noise scale B_simple"},
           {"noise_ema", Real{.field = log(&LogConfig::noise_ema), .lo = 0.0, .hi = 1.0, .hi_open = true},
            "the decay of its moving averages"},
           {"noise_end_samples", Integer{log(&LogConfig::noise_end_samples), 0},
            "a run to a target measures B_simple at its final weights from about this many samples; 0: off"},
           {"trace", Boolean{log(&LogConfig::trace)}, "a Chrome-trace timeline per rank in RUN_DIR/trace/"},
       }},
      {"checkpoint",
       {
           {"dir", Text{checkpoint(&CheckpointConfig::dir), "a path"}, "empty: RUN_DIR/checkpoints"},
           {"every_steps", Integer{checkpoint(&CheckpointConfig::every_steps), 0},
            "write one every N steps and at the end; 0: only on a stop signal"},
           {"keep", Integer{checkpoint(&CheckpointConfig::keep), 1}, "the newest N are kept"},
           {"on_error", Choice{checkpoint(&CheckpointConfig::on_error), {"stop", "continue"}},
            "a checkpoint that cannot be written: stop, or continue"},
       }},
      {"memory",
       {
           {"fraction", Real{.field = memory(&MemoryConfig::fraction), .lo = 0.0, .hi = 1.0, .lo_open = true},
            "of the free memory the plan may use"},
           {"limit", ByteSize{memory(&MemoryConfig::limit)}, "per rank; 0: the device's memory"},
           // Left out while empty: the reader does not accept an empty list.
           {"limit_per_rank", ByteSizeList{memory(&MemoryConfig::limit_per_rank)}, "one per rank; overrides `limit`",
            [](const Config& c) { return !c.memory.limit_per_rank.empty(); }},
           {"recompute", Choice{memory(&MemoryConfig::recompute), {"auto", "none", "blocks"}},
            "none, or blocks: each gpt block keeps its input and recomputes its forward in backward; auto: when it pays"},
       }},
      {"comm",
       {
           {"backend", Choice{comm(&CommConfig::backend), {"auto", "mpi", "nccl", "self"}},
            "auto, mpi, nccl or self"},
           {"bucket_mb", Real{.field = comm(&CommConfig::bucket_mb), .lo = 0.0, .hi = 1e4, .lo_open = true},
            "gradient all-reduce bucket size"},
           {"timeout_s", Real{.field = comm(&CommConfig::timeout_s), .lo = 0.0, .hi = 1e6},
            "a collective waiting longer ends the job (0: no watchdog)"},
           {"reduce_dtype", Choice{comm(&CommConfig::reduce_dtype), {"fp32", "bf16"}},
            "the gradients' type on the wire: fp32, or bf16 (half the bytes)"},
       }},
      {"device",
       {
           {"kind", Choice{device(&DeviceConfig::kind), {"auto", "cpu", "cpu-async", "cuda"}},
            "auto (a GPU when the node has one), cpu, cpu-async or cuda"},
           {"share", Boolean{device(&DeviceConfig::share)}, "allow more ranks than GPUs on a node"},
           {"threads", Integer{device(&DeviceConfig::threads), 0, 1024},
            "CPU threads per rank; 0: the node's cores shared among its ranks"},
       }},
      {"precision",
       {
           {"tf32", Boolean{precision(&PrecisionConfig::tf32)}, "allow TF32 tensor-core math on GPUs"},
           {"compute", Choice{precision(&PrecisionConfig::compute), {"fp32", "bf16"}},
            "fp32, or bf16 activations and GEMM inputs with fp32 master weights (gpt only)"},
           {"gemm_autotune", Boolean{precision(&PrecisionConfig::gemm_autotune)},
            "time cuBLASLt's algorithms for each bf16 GEMM shape on GPUs and keep the fastest"},
           {"deterministic", Boolean{precision(&PrecisionConfig::deterministic)},
            "false: take faster non-deterministic GPU algorithms (cuDNN's attention, convolutions)"},
       }},
  };
}

}  // namespace

std::vector<std::string> ConfigSection::key_names() const {
  std::vector<std::string> names;
  for (const ConfigKey& key : keys) names.push_back(key.name);
  return names;
}

const std::vector<ConfigSection>& config_schema() {
  static const std::vector<ConfigSection> schema = make_schema();
  return schema;
}

}  // namespace dtrain
