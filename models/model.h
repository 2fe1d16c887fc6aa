// A model (DESIGN contract 1 and 2): parameters in one flat device buffer, gradients
// in a mirror buffer, and a forward that owns the loss. The trainer, the evaluator
// and the planner's probe see only this interface: they hand the model a batch and
// get back sums of per-sample losses and the model's own statistics, never logits.
//
// Implementations: SequentialClassifier (the MLP and the CNN: a chain of layers and a
// softmax cross-entropy), Gpt (a transformer language model with an explicit layout).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/dtype.h"
#include "kernels/flat_range.h"
#include "kernels/memory.h"
#include "models/batch.h"
#include "models/layer.h"
#include "models/model_spec.h"

namespace dtrain {

struct ParamRange {
  int64_t offset = 0;  // in floats, into the flat buffers
  int64_t count = 0;
};

// One parameter tensor: its name (as PyTorch's state_dict would say it, e.g.
// "blocks.0.attn.qkv.weight"), where it lives and its shape.
struct ParamTensor {
  std::string name;
  int64_t offset = 0;
  Shape shape;
  int64_t count() const { return shape.numel(); }
};

// The determinism of one part of the model (a layer) in a training step.
struct PartDeterminism {
  std::string name;
  PassDeterminism passes;
};

// A number evaluation reports, e.g. {"accuracy", 0.91} or {"bits_per_byte", 2.1}.
struct Metric {
  std::string name;
  double value = 0.0;
};

// The device doubles a forward adds into (kernels/ops.h softmax_cross_entropy order).
enum ModelStat : int {
  kModelLossSum = 0,  // sum of the batch's per-sample losses
  kModelMetric = 1,   // the model's statistic: correct predictions for a classifier
  kModelStats = 2,
};

enum class Pass { kTrain, kEval };

// memory.recompute: what a training forward keeps for backward. kNone keeps every
// activation; kBlocks keeps each block's input and recomputes the block's forward in
// backward (models with blocks only: Model::can_recompute).
enum class Recompute { kNone, kBlocks };

class Model {
 public:
  virtual ~Model() = default;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  virtual std::string describe() const = 0;  // one line for the log
  // What a sample of this model is; the data must give the same.
  virtual SampleLayout sample_layout() const = 0;

  int64_t param_count() const { return param_count_; }
  // All param_count() fp32 parameters (device memory); not after keep_master_range.
  float* params() { return whole_params(); }
  float* grads() { return grads_.as<float>(); }    // device memory
  const float* params() const { return const_cast<Model*>(this)->whole_params(); }
  const float* grads() const { return grads_.as<float>(); }
  // The type the model computes and stores activations in (Note [bf16 storage] in
  // kernels/dtype.h). With bf16 the model computes with a bf16 copy of the fp32
  // parameters: param_copy() (device, param_count() elements; null in fp32). The
  // optimizer refreshes it in its update pass; whatever else writes params() calls
  // params_changed() after (load_params does).
  DType compute_type() const { return compute_; }
  bf16* param_copy() { return param_copy_.as<bf16>(); }
  const bf16* param_copy() const { return param_copy_.as<bf16>(); }
  void params_changed();
  // Parameter bytes on the device: the fp32 parameters (of the master range) and, in
  // bf16, their copy.
  int64_t param_bytes() const {
    return param_bytes_in(compute_) - (param_count_ - master_range_.count) * static_cast<int64_t>(sizeof(float));
  }
  int64_t param_bytes_in(DType compute) const {
    return param_count_ * static_cast<int64_t>(sizeof(float) + (compute == DType::kBF16 ? sizeof(bf16) : 0));
  }

  // Note [Sharded master weights]
  // A bf16 model computes with its bf16 copy alone; its fp32 parameters are master
  // weights that only the optimizer reads. With optimizer-state sharding each rank
  // updates one range of them (Note [Shard ranges]), so it keeps that range alone:
  // keep_master_range frees the rest. Then master() holds master_range().count values
  // (master()[0] is parameter master_range().offset), params() is no longer whole,
  // the optimizer refreshes the copy's range in its pass and the trainer all-gathers the
  // copy (2 bytes a parameter on the wire), and checkpoints gather the ranges.
  // load_params still takes every parameter: it keeps the range and rounds the whole
  // copy from the host values.
  FlatRange master_range() const { return master_range_; }
  float* master() { return params_.as<float>(); }
  const float* master() const { return params_.as<float>(); }
  bool master_is_sharded() const { return master_range_.count != param_count_; }
  // bf16 models only: keep `range` of the fp32 parameters and free the rest.
  void keep_master_range(FlatRange range);
  // The ranges the gradient reducer buckets: contiguous, in order, covering the flat
  // buffer; backward reports each done (on_range_done(i)) once its gradient is final.
  // A parameter two parts share (tied weights) is one range, reported when its last
  // user has written its gradient.
  virtual const std::vector<ParamRange>& param_ranges() const = 0;
  // Every parameter tensor with its name and shape, in buffer order.
  virtual std::vector<ParamTensor> param_tensors() const = 0;

  // Fills the parameters from the seed (the same on every rank) and zeroes the grads.
  virtual void init(uint64_t seed) = 0;
  // Copies `count` host floats into the parameters (fixtures, checkpoints) and
  // refreshes the bf16 copy; throws DataError when `count` is not param_count().
  void load_params(const float* host, int64_t count);
  void zero_grads();

  // Forward of a batch on the device. Adds the sum of its per-sample losses to
  // stats[kModelLossSum] and its statistic to stats[kModelMetric] (device doubles).
  // Pass::kTrain keeps what backward needs (the batch's memory included, which must
  // stay valid until backward is done) and the loss gradient with each sample's loss
  // scaled by grad_scale (1/G, contract 2); Pass::kEval keeps nothing for backward
  // and turns dropout off.
  virtual void forward(const Batch& batch, Pass pass, float grad_scale, double* stats) = 0;
  // Backward of the last Pass::kTrain forward. ADDS into the gradients.
  // on_range_done(i) runs as soon as param_ranges()[i] is final (on a GPU: enqueued on
  // the context's stream), so buckets can be reduced while backward goes on; it runs
  // once for every range, highest first.
  virtual void backward(const std::function<void(int)>& on_range_done = {}) = 0;

  // Activation bytes one sample of training costs, the loss gradient included: after
  // a Pass::kTrain forward of N samples the allocator holds N times this as Activations.
  int64_t activation_bytes_per_sample() const { return activation_bytes_per_sample_in(compute_, recompute()); }
  // The same were the model to compute in `compute` and recompute as `recompute` (the
  // plan compares precisions and recompute settings). A model that cannot recompute
  // (can_recompute() false) keeps everything whatever `recompute` says.
  virtual int64_t activation_bytes_per_sample_in(DType compute, Recompute recompute) const = 0;
  // The recompute setting this model trains with (memory.recompute).
  virtual Recompute recompute() const { return Recompute::kNone; }
  // Whether the model has blocks to recompute (Recompute::kBlocks); the GPT has.
  virtual bool can_recompute() const { return false; }
  // Sets the recompute setting (memory.recompute: auto, once the planner has chosen);
  // frees the activations, which the next forward allocates for the new setting. A
  // model that cannot recompute accepts only kNone.
  virtual void set_recompute(Recompute recompute);
  // FLOPs of one sample's forward pass (a multiply-add counts two); training is 3x.
  // These are the model's FLOPs: throughput and MFU count them alone, as PaLM's MFU
  // does, never the work recomputation repeats.
  virtual int64_t forward_flops_per_sample() const = 0;
  int64_t training_flops_per_sample() const { return 3 * forward_flops_per_sample(); }
  // The FLOPs recomputation adds to one sample's training step under `recompute`
  // (counted as forward_flops_per_sample counts): the price the planner weighs against
  // the activation bytes it saves. 0 for Recompute::kNone and for a model without blocks.
  int64_t recompute_flops_per_sample() const { return recompute_flops_per_sample_in(recompute()); }
  virtual int64_t recompute_flops_per_sample_in(Recompute) const { return 0; }
  // The most workspace one training forward and backward of `batch` samples takes.
  size_t workspace_bytes(int64_t batch) const { return workspace_bytes_in(batch, compute_); }
  virtual size_t workspace_bytes_in(int64_t batch, DType compute) const = 0;
  // The determinism of each part in a training step of `batch` samples.
  virtual std::vector<PartDeterminism> determinism(int64_t batch) const = 0;
  // Frees the activations; the next forward allocates them again (after an
  // out-of-memory probe, so that a smaller batch starts from a clean slate).
  virtual void release_activations() = 0;

  // What an evaluation of `samples` samples reports beside its mean loss, from the
  // summed statistic (accuracy for a classifier, bits per byte for bytes of text).
  virtual std::vector<Metric> eval_metrics(double metric_sum, double loss_sum, int64_t samples) const = 0;

  // Text generation (dtrain sample, the sample at the end of training;
  // models/sampling.h draws the tokens). Whether the model predicts the next token of
  // a sequence, and if so, the logits of the token after `context` (host tokens, at
  // least one) as host floats, one per token value. A model that does not generate
  // (a classifier) throws ConfigError naming itself.
  virtual bool can_generate() const = 0;
  virtual std::vector<float> next_token_logits(const std::vector<int32_t>& context) = 0;

 protected:
  // Allocates the flat buffers (zeroed) for `param_count` parameters, and their bf16
  // copy when the model computes in bf16.
  Model(Context& ctx, int64_t param_count, DType compute = DType::kF32);
  Context& ctx_;

 private:
  int64_t param_count_;
  DType compute_;
  Buffer params_;
  Buffer grads_;
  Buffer param_copy_;
  FlatRange master_range_;  // the fp32 parameters params_ holds (all, unless sharded)
  float* whole_params();
};

}  // namespace dtrain

namespace dtrain {

// What the data tells the model builder: the sample layout, the number of classes (a
// classifier) or of token values (a language model's vocabulary), and whether the
// tokens are bytes (bits per byte can then be reported).
struct DataFacts {
  SampleLayout layout;
  int64_t classes = 0;
  bool tokens_are_bytes = false;
};

// Builds the model a spec names for the data. Throws ConfigError naming the model key
// when the spec does not fit the data.
std::unique_ptr<Model> build_model(Context& ctx, const ModelSpec& spec, const DataFacts& data);

}  // namespace dtrain
