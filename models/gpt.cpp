#include "models/gpt.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "kernels/check.h"
#include "kernels/dropout_hash.h"
#include "kernels/errors.h"
#include "kernels/ops.h"
#include "kernels/rng.h"

namespace dtrain {
namespace {

// y (rows, out) = x (rows, in) W^T + b, with W (out, in) as nn.Linear: the bias in the
// GEMM's epilogue (Note [Fused linear epilogue], kernels/ops.h).
void linear_forward(Context& ctx, ConstTypedPtr x, ConstTypedPtr w, ConstTypedPtr b, TypedPtr y, int64_t rows,
                    int64_t in, int64_t out) {
  ops::linear_forward(ctx, x, w, b, nullptr, y, rows, in, out, LinearEpilogue::kBias);
}

// dW += dy^T x and db += column sums of dy (Note [Fused bias gradient]), and dx = dy W
// (overwritten).
void linear_backward(Context& ctx, ConstTypedPtr dy, ConstTypedPtr x, ConstTypedPtr w, TypedPtr dx, float* dw,
                     float* db, int64_t rows, int64_t in, int64_t out) {
  ops::linear_parameter_gradients(ctx, dy, x, dw, db, rows, in, out);
  ops::gemm(ctx, false, false, rows, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in);
}

// Dropout sites (the `site` of dropout_key): fixed numbers, so a mask never depends
// on which sites are on.
int64_t embedding_site() { return 0; }
int64_t attention_site(int64_t layer) { return 1 + 2 * layer; }
int64_t mlp_site(int64_t layer) { return 2 + 2 * layer; }

}  // namespace

// Where one block's tensors start in a flat buffer (parameters, their bf16 copy or
// gradients: one layout), in nanoGPT's order, in elements.
struct Gpt::Block {
  int64_t ln1_w;      // (C)
  int64_t ln1_b;      // (C)
  int64_t qkv_w;      // (3C, C)  attn.c_attn
  int64_t qkv_b;      // (3C)
  int64_t attproj_w;  // (C, C)   attn.c_proj
  int64_t attproj_b;  // (C)
  int64_t ln2_w;      // (C)
  int64_t ln2_b;      // (C)
  int64_t fc_w;       // (4C, C)  mlp.c_fc
  int64_t fc_b;       // (4C)
  int64_t fcproj_w;   // (C, 4C)  mlp.c_proj
  int64_t fcproj_b;   // (C)
};

// Note [Gpt activation layout] (gpt.h). The big tensors are in the compute type; the
// row statistics are fp32.
struct Gpt::Acts {
  struct BlockActs {
    TypedPtr ln1;      // (BT, C)
    float* ln1_mean;   // (BT)
    float* ln1_rstd;   // (BT)
    TypedPtr qkv;      // (BT, 3C)
    TypedPtr attn;     // attention's saved state (ops::attention_saved_bytes)
    TypedPtr atty;     // (BT, C)
    TypedPtr res2;     // (BT, C)
    TypedPtr ln2;      // (BT, C)
    float* ln2_mean;   // (BT)
    float* ln2_rstd;   // (BT)
    TypedPtr fch;      // (BT, 4C)
    TypedPtr fch_gelu; // (BT, 4C)
    TypedPtr res3;     // (BT, C)
  };
  TypedPtr encoded;    // (BT, C)
  std::vector<BlockActs> blocks;
  TypedPtr lnf;        // (BT, C)
  float* lnf_mean;     // (BT)
  float* lnf_rstd;     // (BT)
  TypedPtr dres;       // (BT, C)
  TypedPtr dtmp;       // (BT, C)
  TypedPtr dbig;       // (BT, 4C)
  TypedPtr logits;     // (BT, V)
  int64_t batch = 0;        // B
  int64_t elements = 0;     // of the compute type, in all
  int64_t stat_floats = 0;  // the row statistics, in all

  // Block l's input, the residual stream entering it: kept in both layouts.
  ConstTypedPtr input_of(int64_t l) const { return l > 0 ? blocks[static_cast<size_t>(l - 1)].res3 : encoded; }
};

// The dropout of one training step. Each site's mask is a function of (seed, step,
// site, sample id, element) only (DESIGN contract 9), so forward, backward and a
// recompute in backward (Note [Gpt recompute]) all apply the same one.
struct Gpt::StepDropout {
  Context& ctx;
  float p;  // 0: off (an evaluation, or no dropout)
  uint64_t seed;
  int64_t step;
  const int64_t* sample_ids;  // device, one per sample
  int64_t samples;
  int64_t per_sample;

  bool on() const { return p > 0.0f; }
  // x = dropout(x), in place.
  void forward(TypedPtr x, int64_t site) const {
    if (on()) ops::dropout_forward(ctx, x, x, samples, per_sample, sample_ids, dropout_key(seed, step, site), p);
  }
  // dx = dy through the site's mask; dx may be dy.
  void backward(ConstTypedPtr dy, TypedPtr dx, int64_t site) const {
    ops::dropout_backward(ctx, dy, dx, samples, per_sample, sample_ids, dropout_key(seed, step, site), p);
  }
};

int64_t gpt_param_count(const GptConfig& c) {
  const int64_t C = c.n_embd;
  return (c.vocab + c.seq_len) * C + c.n_layer * (12 * C * C + 13 * C) + 2 * C;
}

Gpt::Gpt(Context& ctx, const GptConfig& config)
    : Model(ctx, gpt_param_count(config), config.compute), config_(config) {
  const int64_t L = config_.n_layer, C = config_.n_embd, T = config_.seq_len, V = config_.vocab;
  DTRAIN_ASSERT(L > 0 && C > 0 && T > 0 && V > 0 && config_.n_head > 0 && C % config_.n_head == 0,
                "gpt: invalid shape (build_gpt checks the spec)");
  int64_t offset = 0;
  auto add = [&](const std::string& name, Shape shape) {
    tensors_.push_back(ParamTensor{name, offset, shape});
    offset += shape.numel();
  };
  auto range_from = [&](int64_t start) { ranges_.push_back(ParamRange{start, offset - start}); };

  add("transformer.wte.weight", Shape{V, C});
  range_from(0);
  add("transformer.wpe.weight", Shape{T, C});
  range_from(V * C);
  for (int64_t l = 0; l < L; ++l) {
    const int64_t start = offset;
    const std::string p = "transformer.h." + std::to_string(l) + ".";
    add(p + "ln_1.weight", Shape{C});
    add(p + "ln_1.bias", Shape{C});
    add(p + "attn.c_attn.weight", Shape{3 * C, C});
    add(p + "attn.c_attn.bias", Shape{3 * C});
    add(p + "attn.c_proj.weight", Shape{C, C});
    add(p + "attn.c_proj.bias", Shape{C});
    add(p + "ln_2.weight", Shape{C});
    add(p + "ln_2.bias", Shape{C});
    add(p + "mlp.c_fc.weight", Shape{4 * C, C});
    add(p + "mlp.c_fc.bias", Shape{4 * C});
    add(p + "mlp.c_proj.weight", Shape{C, 4 * C});
    add(p + "mlp.c_proj.bias", Shape{C});
    range_from(start);
  }
  const int64_t start = offset;
  add("transformer.ln_f.weight", Shape{C});
  add("transformer.ln_f.bias", Shape{C});
  range_from(start);
  DTRAIN_ASSERT(offset == param_count(), "gpt: layout covers " << offset << " of " << param_count());
}

Gpt::~Gpt() = default;

std::string Gpt::describe() const {
  std::ostringstream s;
  s << "gpt: " << config_.n_layer << " layers, " << config_.n_head << " heads, n_embd " << config_.n_embd
    << ", seq_len " << config_.seq_len << ", vocab " << config_.vocab << ", dropout " << config_.dropout
    << (config_.recompute == Recompute::kBlocks ? ", blocks recomputed in backward" : "");
  return s.str();
}

SampleLayout Gpt::sample_layout() const {
  SampleLayout layout;
  layout.input = Shape{config_.seq_len};
  layout.input_type = ElementType::kInt32;
  layout.target = Shape{config_.seq_len};
  return layout;
}

Gpt::Block Gpt::block(int64_t l) const {
  const int64_t C = config_.n_embd;
  int64_t p = tensors_[static_cast<size_t>(2 + 12 * l)].offset;
  Block b;
  b.ln1_w = p, p += C;
  b.ln1_b = p, p += C;
  b.qkv_w = p, p += 3 * C * C;
  b.qkv_b = p, p += 3 * C;
  b.attproj_w = p, p += C * C;
  b.attproj_b = p, p += C;
  b.ln2_w = p, p += C;
  b.ln2_b = p, p += C;
  b.fc_w = p, p += 4 * C * C;
  b.fc_b = p, p += 4 * C;
  b.fcproj_w = p, p += 4 * C * C;
  b.fcproj_b = p;
  return b;
}

Gpt::Acts Gpt::acts(int64_t batch, DType type, Recompute recompute) const {
  const int64_t L = config_.n_layer, C = config_.n_embd, T = config_.seq_len, V = config_.vocab,
                H = config_.n_head, BT = batch * T;
  // Null when counting (or for a layout the buffers do not hold).
  const bool live = type == config_.compute && recompute == config_.recompute;
  const TypedPtr base(live ? activations_.data() : nullptr, type);
  float* stats = live ? row_stats_.as<float>() : nullptr;
  Acts a;
  a.batch = batch;
  auto take = [&](int64_t elements) {
    const TypedPtr p = base.at(a.elements);
    a.elements += elements;
    return p;
  };
  auto take_stat = [&] {
    float* p = stats ? stats + a.stat_floats : nullptr;
    a.stat_floats += BT;
    return p;
  };
  // Attention's saved state, in elements of the type: the probabilities (B, H, T, T),
  // or a fused backend's row statistics (Note [Fused attention]). Its bytes are
  // linear in the batch, as the rest of the layout is.
  const size_t saved_bytes = ops::attention_saved_bytes(ctx_, batch, T, C, H, type);
  DTRAIN_ASSERT(saved_bytes % dtype_size(type) == 0, "gpt: attention's saved state is not whole elements");
  const auto saved = static_cast<int64_t>(saved_bytes / dtype_size(type));
  // A block's tensors but its output res3, and its row statistics.
  auto take_inner = [&](Acts::BlockActs& b) {
    b.ln1 = take(BT * C);
    b.qkv = take(BT * 3 * C);
    b.attn = take(saved);
    b.atty = take(BT * C);
    b.res2 = take(BT * C);
    b.ln2 = take(BT * C);
    b.fch = take(BT * 4 * C);
    b.fch_gelu = take(BT * 4 * C);
  };
  auto take_stats = [&](Acts::BlockActs& b) {
    b.ln1_mean = take_stat();
    b.ln1_rstd = take_stat();
    b.ln2_mean = take_stat();
    b.ln2_rstd = take_stat();
  };
  a.blocks.resize(static_cast<size_t>(L));
  a.encoded = take(BT * C);
  // Note [Gpt recompute]: with kBlocks every block's inner tensors are one shared set.
  Acts::BlockActs shared{};
  if (recompute == Recompute::kNone) {
    for (auto& b : a.blocks) {
      take_inner(b);
      b.res3 = take(BT * C);
    }
  } else {
    for (auto& b : a.blocks) b.res3 = take(BT * C);
    take_inner(shared);
  }
  a.lnf = take(BT * C);
  a.dres = take(BT * C);
  a.dtmp = take(BT * C);
  a.dbig = take(BT * 4 * C);
  a.logits = take(BT * V);
  if (recompute == Recompute::kNone) {
    for (auto& b : a.blocks) take_stats(b);
  } else {
    take_stats(shared);
    for (auto& b : a.blocks) {
      const TypedPtr res3 = b.res3;
      b = shared;
      b.res3 = res3;
    }
  }
  a.lnf_mean = take_stat();
  a.lnf_rstd = take_stat();
  return a;
}

Gpt::Acts Gpt::acts(int64_t batch) const { return acts(batch, config_.compute, config_.recompute); }

int64_t Gpt::activation_bytes_per_sample_in(DType type, Recompute recompute) const {
  // The layout's own count for one sample: the layout is linear in the batch.
  const Gpt::Acts one = acts(1, type, recompute);
  return one.elements * static_cast<int64_t>(dtype_size(type)) + one.stat_floats * static_cast<int64_t>(sizeof(float));
}

void Gpt::ensure_activations(int64_t batch) {
  if (batch <= capacity_) return;
  activations_.reset();  // free first: the old and the new need not fit together
  row_stats_.reset();
  capacity_ = 0;
  const Acts a = acts(batch);
  activations_ = Buffer(ctx_.allocator(), static_cast<size_t>(a.elements) * dtype_size(config_.compute),
                        MemoryCategory::Activations);
  row_stats_ = Buffer(ctx_.allocator(), static_cast<size_t>(a.stat_floats) * sizeof(float),
                      MemoryCategory::Activations);
  capacity_ = batch;
}

void Gpt::set_recompute(Recompute recompute) {
  release_activations();
  config_.recompute = recompute;
}

void Gpt::release_activations() {
  activations_.reset();
  row_stats_.reset();
  capacity_ = 0;
  batch_ = 0;
  trained_ = false;
}

int64_t Gpt::forward_flops_per_sample() const {
  const int64_t L = config_.n_layer, C = config_.n_embd, T = config_.seq_len, V = config_.vocab;
  const int64_t matmul_weights = L * 12 * C * C;
  return 2 * matmul_weights * T + L * 2 * 2 * T * T * C + 2 * T * C * V;
}

int64_t Gpt::recompute_flops_per_sample_in(Recompute recompute) const {
  if (recompute == Recompute::kNone) return 0;
  const int64_t L = config_.n_layer, C = config_.n_embd, T = config_.seq_len;
  return (L - 1) * (2 * 8 * C * C * T + 2 * 2 * T * T * C);
}

size_t Gpt::workspace_bytes_in(int64_t batch, DType type) const {
  const int64_t C = config_.n_embd, T = config_.seq_len, V = config_.vocab, H = config_.n_head, BT = batch * T;
  size_t most = std::max({ops::attention_workspace_bytes(ctx_, batch, T, C, H, type),
                          ops::embedding_backward_workspace_bytes(ctx_, batch, T, C, V),
                          ops::softmax_cross_entropy_workspace_bytes(ctx_, BT),
                          ops::layernorm_backward_workspace_bytes(ctx_, BT, C)});
  // Every GEMM of a step, exactly those (a backend's scratch may differ by shape, and
  // the CPU's memory model is exact): each block linear's fused forward (rows x out x
  // in, its epilogue included), the head's plain forward GEMM, and every linear's two
  // backward products, with the head as a linear from C to V, a block linear's weight
  // gradient with its bias's (Note [Fused bias gradient]; the head has no bias).
  most = std::max(most, ops::gemm_workspace_bytes(ctx_, BT, V, C, type, type));
  struct Linear {
    int64_t in, out;
    bool head;
  };
  for (const Linear& l : {Linear{C, 3 * C, false}, Linear{C, C, false}, Linear{C, 4 * C, false},
                          Linear{4 * C, C, false}, Linear{C, V, true}}) {
    const int64_t in = l.in, out = l.out;
    if (l.head) {
      most = std::max(most, ops::gemm_workspace_bytes(ctx_, out, in, BT, type, DType::kF32));
    } else {
      most = std::max({most, ops::linear_forward_workspace_bytes(ctx_, BT, in, out, type),
                       ops::linear_parameter_gradients_workspace_bytes(ctx_, BT, in, out, type)});
    }
    most = std::max(most, ops::gemm_workspace_bytes(ctx_, BT, in, out, type, type));
  }
  return most;
}

// Every op of a block is deterministic but, where the backend says so, attention's
// backward (cuDNN's with CudaOptions::deterministic off: Note [Fused attention]), whose
// dQ reaches the block's input gradient and its own parameter gradients (c_attn's and
// ln_1's come from dqkv).
std::vector<PartDeterminism> Gpt::determinism(int64_t batch) const {
  PassDeterminism block;
  block.input_gradient = ops::attention_backward_deterministic(ctx_, batch, config_.seq_len, config_.n_embd,
                                                               config_.n_head, config_.compute);
  block.param_gradient = block.input_gradient;
  std::vector<PartDeterminism> parts;
  for (int64_t l = 0; l < config_.n_layer; ++l) {
    parts.push_back(PartDeterminism{"transformer.h." + std::to_string(l), block});
  }
  return parts;
}

std::vector<Metric> Gpt::eval_metrics(double, double loss_sum, int64_t samples) const {
  if (!config_.tokens_are_bytes || samples <= 0) return {};
  return {Metric{"bits_per_byte", loss_sum / static_cast<double>(samples) / std::log(2.0)}};
}

void Gpt::init(uint64_t seed) {
  const double proj_std = 0.02 / std::sqrt(2.0 * static_cast<double>(config_.n_layer));
  std::vector<float> host(static_cast<size_t>(param_count()));
  auto ends_with = [](const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
  };
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const ParamTensor& t = tensors_[i];
    float* p = host.data() + t.offset;
    const bool layernorm = t.name.find(".ln_") != std::string::npos;
    if (ends_with(t.name, ".bias")) {
      std::fill(p, p + t.count(), 0.0f);
    } else if (layernorm) {
      std::fill(p, p + t.count(), 1.0f);
    } else {
      Rng rng(Rng::mix(seed, i));
      const double stddev = ends_with(t.name, "c_proj.weight") ? proj_std : 0.02;
      for (int64_t j = 0; j < t.count(); ++j) p[j] = static_cast<float>(stddev * rng.normal());
    }
  }
  load_params(host.data(), param_count());
  zero_grads();
}

void Gpt::layernorm_1(const Acts& a, int64_t l) {
  const int64_t C = config_.n_embd, BT = a.batch * config_.seq_len;
  const TypedPtr w = weights();
  const Block p = block(l);
  const Acts::BlockActs& b = a.blocks[static_cast<size_t>(l)];
  ops::layernorm_forward(ctx_, a.input_of(l), w.at(p.ln1_w), w.at(p.ln1_b), b.ln1, b.ln1_mean, b.ln1_rstd, BT, C);
}

void Gpt::block_forward_to_gelu(const Acts& a, int64_t l, const StepDropout& drop) {
  const int64_t C = config_.n_embd, T = config_.seq_len, H = config_.n_head, B = a.batch, BT = B * T;
  const TypedPtr w = weights();
  const Block p = block(l);
  const Acts::BlockActs& b = a.blocks[static_cast<size_t>(l)];
  linear_forward(ctx_, b.ln1, w.at(p.qkv_w), w.at(p.qkv_b), b.qkv, BT, C, 3 * C);
  ops::attention_forward(ctx_, b.qkv, b.atty, b.attn, B, T, C, H);
  linear_forward(ctx_, b.atty, w.at(p.attproj_w), w.at(p.attproj_b), b.res2, BT, C, C);
  drop.forward(b.res2, attention_site(l));
  ops::add_layernorm_forward(ctx_, b.res2, a.input_of(l), b.res2, w.at(p.ln2_w), w.at(p.ln2_b), b.ln2, b.ln2_mean,
                             b.ln2_rstd, BT, C);
  // c_fc with bias and GELU in one epilogue: fch keeps the pre-GELU value for backward.
  ops::linear_forward(ctx_, b.ln2, w.at(p.fc_w), w.at(p.fc_b), b.fch, b.fch_gelu, BT, C, 4 * C,
                      LinearEpilogue::kBiasGelu);
}

void Gpt::forward(const Batch& batch, Pass pass, float grad_scale, double* stats) {
  const int64_t L = config_.n_layer, C = config_.n_embd, T = config_.seq_len, V = config_.vocab,
                B = batch.size, BT = B * T;
  DTRAIN_ASSERT(B > 0, "gpt forward of an empty batch");
  const bool train = pass == Pass::kTrain;
  const float p_drop = train ? config_.dropout : 0.0f;
  if (p_drop > 0.0f && batch.sample_ids == nullptr) {
    throw Error("gpt: a training forward with dropout needs the batch's sample ids (dropout masks are keyed by them)");
  }
  trained_ = false;
  ensure_activations(B);
  const Acts a = acts(B);
  const TypedPtr w = weights();
  const ConstTypedPtr wte = w;
  const ConstTypedPtr wpe = w.at(tensors_[1].offset);
  const ConstTypedPtr lnf_w = w.at(tensors_[tensors_.size() - 2].offset);
  const ConstTypedPtr lnf_b = w.at(tensors_[tensors_.size() - 1].offset);
  const StepDropout drop{ctx_, p_drop, config_.seed, batch.step, batch.sample_ids, B, T * C};

  ops::embedding_forward(ctx_, batch.token_inputs(), wte, wpe, a.encoded, B, T, C, V);
  drop.forward(a.encoded, embedding_site());
  // Each residual add is fused with the LayerNorm that reads its sum (Note [Fused
  // residual LayerNorm], kernels/ops.h): res2 with ln_2, and each block's res3 with the
  // next block's ln_1 (ln_f after the last). Only block 0's ln_1, on the embedding, is
  // a plain LayerNorm.
  layernorm_1(a, 0);
  for (int64_t l = 0; l < L; ++l) {
    const Block p = block(l);
    const Acts::BlockActs& b = a.blocks[static_cast<size_t>(l)];
    block_forward_to_gelu(a, l, drop);
    linear_forward(ctx_, b.fch_gelu, w.at(p.fcproj_w), w.at(p.fcproj_b), b.res3, BT, 4 * C, C);
    drop.forward(b.res3, mlp_site(l));
    // With recompute the next block's ln_1 goes into the shared set, whose ln_1 this
    // block has read already (c_attn).
    if (l + 1 < L) {
      const Block next = block(l + 1);
      const Acts::BlockActs& nb = a.blocks[static_cast<size_t>(l + 1)];
      ops::add_layernorm_forward(ctx_, b.res3, b.res2, b.res3, w.at(next.ln1_w), w.at(next.ln1_b), nb.ln1,
                                 nb.ln1_mean, nb.ln1_rstd, BT, C);
    } else {
      ops::add_layernorm_forward(ctx_, b.res3, b.res2, b.res3, lnf_w, lnf_b, a.lnf, a.lnf_mean, a.lnf_rstd, BT,
                                 C);
    }
  }
  // logits (BT, V) = lnf (BT, C) wte^T: the head tied to the embedding.
  ops::gemm(ctx_, false, true, BT, V, C, 1.0f, a.lnf, C, wte, C, 0.0f, a.logits, V);
  // A sample's loss is the mean over its T tokens: each row weighs 1/T, and the loss
  // gradient of a row is grad_scale/T (softmax - onehot), written over the logits.
  const double inv_t = 1.0 / static_cast<double>(T);
  ops::softmax_cross_entropy(ctx_, a.logits, batch.targets, BT, V, static_cast<float>(grad_scale * inv_t),
                             train ? a.logits : TypedPtr(), stats, inv_t);

  batch_ = B;
  tokens_ = batch.token_inputs();
  sample_ids_ = batch.sample_ids;
  step_ = batch.step;
  trained_ = train;
}

TypedPtr Gpt::weights() {
  return config_.compute == DType::kBF16 ? TypedPtr(param_copy()) : TypedPtr(params());
}

ConstTypedPtr Gpt::logits() const {
  DTRAIN_ASSERT(batch_ > 0 && !trained_, "gpt: logits() reads the last Pass::kEval forward's logits");
  return acts(batch_).logits;
}

void Gpt::backward(const std::function<void(int)>& on_range_done) {
  DTRAIN_ASSERT(trained_, "gpt: backward without a Pass::kTrain forward before it");
  const int64_t L = config_.n_layer, C = config_.n_embd, T = config_.seq_len, V = config_.vocab,
                H = config_.n_head, B = batch_, BT = B * T;
  const Acts a = acts(B);
  const TypedPtr w = weights();
  float* g = grads();
  const size_t lnf = tensors_.size() - 2;
  const StepDropout drop{ctx_, config_.dropout, config_.seed, step_, sample_ids_, B, T * C};
  auto done = [&](int range) {
    if (on_range_done) on_range_done(range);
  };
  // The gradient of a residual branch's output: dres itself without dropout, else
  // dres through the site's mask, in dtmp.
  auto branch_grad = [&](int64_t site) -> ConstTypedPtr {
    if (!drop.on()) return a.dres;
    drop.backward(a.dres, a.dtmp, site);
    return a.dtmp;
  };

  // Head: dwte += dlogits^T lnf; dlnf = dlogits wte (in dtmp).
  const ConstTypedPtr dlogits = a.logits;
  ops::gemm(ctx_, true, false, V, C, BT, 1.0f, dlogits, V, a.lnf, C, 1.0f, g, C);
  ops::gemm(ctx_, false, false, BT, C, V, 1.0f, dlogits, V, w, C, 0.0f, a.dtmp, C);
  ops::layernorm_backward(ctx_, a.dtmp, a.input_of(L), w.at(tensors_[lnf].offset), a.lnf_mean, a.lnf_rstd, a.dres,
                          g + tensors_[lnf].offset, g + tensors_[lnf + 1].offset, BT, C, false);
  done(static_cast<int>(L + 2));

  for (int64_t l = L - 1; l >= 0; --l) {
    const Block p = block(l);
    const Acts::BlockActs& b = a.blocks[static_cast<size_t>(l)];
    const ConstTypedPtr x_in = a.input_of(l);
    // Note [Gpt recompute]: the shared set still holds the last block from forward.
    if (config_.recompute == Recompute::kBlocks && l + 1 < L) {
      layernorm_1(a, l);
      block_forward_to_gelu(a, l, drop);
    }
    // dres holds d res3. MLP branch: dfch (dbig) from the branch's gradient through
    // c_proj and GELU in one op (Note [Fused GELU backward]), then dln2 (dtmp); ln_2
    // adds its dx into dres (-> d res2).
    const ConstTypedPtr dmlp = branch_grad(mlp_site(l));
    ops::linear_parameter_gradients(ctx_, dmlp, b.fch_gelu, g + p.fcproj_w, g + p.fcproj_b, BT, 4 * C, C);
    ops::linear_backward_input_gelu(ctx_, dmlp, w.at(p.fcproj_w), b.fch, a.dbig, BT, 4 * C, C);
    linear_backward(ctx_, a.dbig, b.ln2, w.at(p.fc_w), a.dtmp, g + p.fc_w, g + p.fc_b, BT, C, 4 * C);
    ops::layernorm_backward(ctx_, a.dtmp, b.res2, w.at(p.ln2_w), b.ln2_mean, b.ln2_rstd, a.dres, g + p.ln2_w,
                            g + p.ln2_b, BT, C, true);
    // Attention branch: datty in dbig[0, BT*C), dqkv in dbig[BT*C, BT*4C), dln1 in
    // dtmp; ln_1 adds its dx into dres (-> d x_in).
    const ConstTypedPtr dattn = branch_grad(attention_site(l));
    const TypedPtr datty = a.dbig;
    const TypedPtr dqkv = a.dbig.at(BT * C);
    linear_backward(ctx_, dattn, b.atty, w.at(p.attproj_w), datty, g + p.attproj_w, g + p.attproj_b, BT, C, C);
    ops::attention_backward(ctx_, datty, b.qkv, b.atty, b.attn, dqkv, B, T, C, H);
    linear_backward(ctx_, dqkv, b.ln1, w.at(p.qkv_w), a.dtmp, g + p.qkv_w, g + p.qkv_b, BT, C, 3 * C);
    ops::layernorm_backward(ctx_, a.dtmp, x_in, w.at(p.ln1_w), b.ln1_mean, b.ln1_rstd, a.dres, g + p.ln1_w,
                            g + p.ln1_b, BT, C, true);
    done(static_cast<int>(2 + l));
  }

  if (drop.on()) drop.backward(a.dres, a.dres, embedding_site());
  ops::embedding_backward(ctx_, a.dres, tokens_, g, g + tensors_[1].offset, B, T, C, V);
  done(1);  // wpe
  done(0);  // wte: the head's and the embedding's gradients are both in
}

std::vector<float> Gpt::next_token_logits(const std::vector<int32_t>& context) {
  const int64_t T = config_.seq_len, V = config_.vocab;
  if (context.empty()) throw Error("gpt: text generation needs at least one token of context");
  const int64_t n = std::min<int64_t>(T, static_cast<int64_t>(context.size()));
  std::vector<int32_t> tokens(static_cast<size_t>(T), 0);
  std::copy(context.end() - n, context.end(), tokens.begin());
  const std::vector<int32_t> targets(static_cast<size_t>(T), 0);
  const double zero_stats[kModelStats] = {0.0, 0.0};

  Allocator& alloc = ctx_.allocator();
  Buffer d_tokens(alloc, static_cast<size_t>(T) * sizeof(int32_t), MemoryCategory::Other);
  Buffer d_targets(alloc, static_cast<size_t>(T) * sizeof(int32_t), MemoryCategory::Other);
  Buffer d_stats(alloc, sizeof(zero_stats), MemoryCategory::Other);
  ops::copy_from_host(ctx_, d_tokens.data(), tokens.data(), d_tokens.bytes());
  ops::copy_from_host(ctx_, d_targets.data(), targets.data(), d_targets.bytes());
  ops::copy_from_host(ctx_, d_stats.data(), zero_stats, sizeof(zero_stats));

  Batch batch;
  batch.size = 1;
  batch.inputs = d_tokens.data();
  batch.targets = d_targets.as<int32_t>();
  forward(batch, Pass::kEval, 0.0f, d_stats.as<double>());
  // The last position's row, in the compute type, widened on the host.
  const ConstTypedPtr row = logits().at((n - 1) * V);
  std::vector<float> out(static_cast<size_t>(V));
  if (row.type == DType::kF32) {
    ops::copy_to_host(ctx_, out.data(), row.data, out.size() * sizeof(float));
  } else {
    std::vector<bf16> narrow(static_cast<size_t>(V));
    ops::copy_to_host(ctx_, narrow.data(), row.data, narrow.size() * sizeof(bf16));
    std::transform(narrow.begin(), narrow.end(), out.begin(), bf16_to_float);
  }
  ctx_.synchronize();  // the buffers above are freed on return
  return out;
}

std::unique_ptr<Model> build_gpt(Context& ctx, const ModelSpec& spec, const DataFacts& data) {
  auto positive = [](const char* key, int64_t v) {
    if (v < 1) {
      throw ConfigError("key 'model." + std::string(key) + "' = " + std::to_string(v) +
                        " is out of range: the gpt needs at least 1");
    }
  };
  positive("n_layer", spec.n_layer);
  positive("n_head", spec.n_head);
  positive("n_embd", spec.n_embd);
  positive("seq_len", spec.seq_len);
  if (spec.n_embd % spec.n_head != 0) {
    throw ConfigError("key 'model.n_embd' = " + std::to_string(spec.n_embd) + " is not a multiple of 'model.n_head' = " +
                      std::to_string(spec.n_head) + ": each attention head takes n_embd / n_head channels");
  }
  if (!(spec.dropout >= 0.0 && spec.dropout < 1.0)) {
    throw ConfigError("key 'model.dropout' = " + std::to_string(spec.dropout) + " is out of range: must be in [0, 1)");
  }
  if (spec.vocab < 0) {
    throw ConfigError("key 'model.vocab' = " + std::to_string(spec.vocab) + " is out of range: must be at least 0");
  }
  const SampleLayout& in = data.layout;
  const Shape window{spec.seq_len};
  if (in.input_type != ElementType::kInt32 || in.input != window || in.target != window) {
    throw ConfigError("model.name 'gpt' takes windows of 'model.seq_len' = " + std::to_string(spec.seq_len) +
                      " int32 tokens with a target token each, but the data's samples are " +
                      element_name(in.input_type) + " " + in.input.str() + " with targets " + in.target.str() +
                      ": use a text dataset, and set model.seq_len to the data's window");
  }
  const int64_t vocab = spec.vocab > 0 ? spec.vocab : data.classes;
  if (vocab < 1) {
    throw ConfigError("key 'model.vocab' is 0 (from the data) and the data does not say how many token values "
                      "it has: set model.vocab");
  }
  if (data.classes > vocab) {
    throw ConfigError("key 'model.vocab' = " + std::to_string(vocab) + " is smaller than the data's " +
                      std::to_string(data.classes) + " token values, which the model could not embed: set "
                      "model.vocab to at least " + std::to_string(data.classes) + " (or 0, from the data)");
  }
  GptConfig config;
  config.n_layer = spec.n_layer;
  config.n_head = spec.n_head;
  config.n_embd = spec.n_embd;
  config.seq_len = spec.seq_len;
  config.vocab = vocab;
  config.dropout = static_cast<float>(spec.dropout);
  config.seed = spec.seed;
  config.tokens_are_bytes = data.tokens_are_bytes;
  config.compute = spec.compute == "bf16" ? DType::kBF16 : DType::kF32;
  config.recompute = spec.recompute == "blocks" ? Recompute::kBlocks : Recompute::kNone;
  return std::make_unique<Gpt>(ctx, config);
}

}  // namespace dtrain
