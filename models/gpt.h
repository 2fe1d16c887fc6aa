// GPT-2 (Radford et al. 2019, as nanoGPT writes it) with an explicit layout of its
// parameters and activations, as llm.c's train_gpt2.c lays them out: not a chain of
// layers but one flat parameter buffer in nanoGPT's parameters() order and one
// activation buffer per batch, each tensor at a fixed offset.
//
//   x = wte[tokens] + wpe[0..T)                    (dropout site 0)
//   for each block l:  x = x + drop(c_proj(attn(c_attn(ln_1(x)))))   (site 1 + 2l)
//                      x = x + drop(c_proj(gelu(c_fc(ln_2(x)))))     (site 2 + 2l)
//   logits = ln_f(x) @ wte^T                        (the head is tied to wte, no bias)
//
// Attention is causal and multi-head (kernels/ops.h, Note [Transformer ops]); GELU is
// the tanh form; LayerNorm's eps is 1e-5. Dropout (spec.dropout, training only) acts
// at the three sites above and NOT on the attention probabilities: the op set keeps
// no mask for them, and nanoGPT's default (flash attention) drops none either when
// dropout is 0. Each site's mask is a function of (seed, step, site, sample id,
// element) only (DESIGN contract 9), so any layout of ranks and micro-steps drops
// the same units of a sample.
//
// Loss (DESIGN contract 2): a sample is a window of T tokens; its loss is the mean of
// its T token cross-entropies. The logits (B*T, V) are the largest activation; a
// training forward overwrites them in place with the loss gradient, so they are held
// once.
//
// Invariants: backward ADDS into the parameter gradients; activation gradients live
// in three scratch buffers of the activation block (Note [Gpt activation layout]).
// With recompute (Recompute::kBlocks, Note [Gpt recompute]) every number it computes
// is the same, bit for bit; only what it keeps between forward and backward changes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/memory.h"
#include "kernels/tensor.h"
#include "models/model.h"

namespace dtrain {

struct GptConfig {
  int64_t n_layer = 0;   // L
  int64_t n_head = 0;    // H
  int64_t n_embd = 0;    // C
  int64_t seq_len = 0;   // T
  int64_t vocab = 0;     // V
  float dropout = 0.0f;  // p, in [0, 1)
  uint64_t seed = 1;     // the run's seed, for the dropout masks
  bool tokens_are_bytes = false;  // eval reports bits per byte
  DType compute = DType::kF32;    // Note [bf16 storage] (kernels/dtype.h)
  Recompute recompute = Recompute::kNone;  // memory.recompute (Note [Gpt recompute])
};

class Gpt final : public Model {
 public:
  // `config` must be valid (build_gpt checks a spec against the data).
  Gpt(Context& ctx, const GptConfig& config);
  ~Gpt() override;

  std::string describe() const override;
  SampleLayout sample_layout() const override;
  const GptConfig& config() const { return config_; }

  // Range 0: wte (tied: written by the head and by the embedding, final after the
  // embedding's backward, which runs last); 1: wpe; 2 + l: block l (all its
  // tensors); L + 2: ln_f. Backward reports ln_f, blocks L-1..0, wpe, then wte.
  const std::vector<ParamRange>& param_ranges() const override { return ranges_; }
  // nanoGPT's names and order: transformer.wte.weight (V, C), transformer.wpe.weight
  // (T, C), transformer.h.<l>.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc,
  // mlp.c_proj}.{weight, bias}, transformer.ln_f.{weight, bias}. Linear weights are
  // (out, in).
  std::vector<ParamTensor> param_tensors() const override { return tensors_; }

  // GPT-2's init: every weight normal(0, 0.02), both embeddings included; the two
  // c_proj weights of each block normal(0, 0.02 / sqrt(2 L)); biases 0; LayerNorm
  // weights 1, biases 0. Tensor i of param_tensors() draws from
  // Rng(Rng::mix(seed, i)), so a tensor's values do not depend on where it lives.
  void init(uint64_t seed) override;

  // The batch's inputs and targets are (B, T) int32 tokens. Pass::kTrain keeps the
  // activations and writes the loss gradient over the logits; Pass::kEval keeps the
  // logits readable through logits() until the next forward.
  void forward(const Batch& batch, Pass pass, float grad_scale, double* stats) override;
  void backward(const std::function<void(int)>& on_range_done = {}) override;

  // (B*T, V) logits of the last Pass::kEval forward (device memory, in the compute
  // type). After a Pass::kTrain forward the same memory holds the loss gradient.
  ConstTypedPtr logits() const;

  // Text generation (dtrain sample): an eval forward of the last min(T, n) tokens of
  // `context` (host tokens, n >= 1) as a batch of one; returns the V logits of the
  // last position (host floats). A shorter context is padded after its end, which
  // causal attention never lets the last real position see.
  std::vector<float> next_token_logits(const std::vector<int32_t>& context) override;
  bool can_generate() const override { return true; }

  // Note [Gpt activation layout]: two Activations buffers per batch of B samples:
  // one in the compute type (fp32 or bf16) holds the big tensors (elements; BT = B*T),
  // in this order:
  //   encoded (BT, C)                     embedding sum, after its dropout
  //   per block l:
  //     ln1 (BT, C)                       ln_1 output, c_attn's input
  //     qkv (BT, 3C)                      c_attn output
  //     attn (S / e elements)             attention's saved state, S bytes a sample:
  //                                       the softmax (H*T*T values) where the backend
  //                                       materialises it, or each row's log-sum-exp
  //                                       (H*T floats) where it fuses (CUDA bf16)
  //     atty (BT, C)                      the heads' outputs, attn.c_proj's input
  //     res2 (BT, C)                      x + attention branch
  //     ln2 (BT, C)                       ln_2 output, c_fc's input
  //     fch (BT, 4C)                      c_fc output, GELU's input
  //     fch_gelu (BT, 4C)                 GELU output, mlp.c_proj's input
  //     res3 (BT, C)                      res2 + MLP branch: the block's output
  //   lnf (BT, C)                         ln_f output, the head's input
  //   dres (BT, C)                        backward: gradient of the residual stream
  //   dtmp (BT, C)                        backward: a LayerNorm's dy, a branch's dy
  //   dbig (BT, 4C)                       backward: dfch; or datty then dqkv
  //   logits (BT, V)                      the loss gradient in place after training
  // and one of fp32 holds the row statistics:
  //   per block l: ln1 mean, rstd, ln2 mean, rstd (BT each); ln_f mean, rstd (BT each)
  // Two buffers keep every tensor aligned whatever the element size: with C and T
  // multiples of 8 every big tensor starts 16-byte aligned. A branch's output (each
  // c_proj) is never stored: it is written into its residual's slot, dropped out in
  // place, and the residual added in the same pass as the LayerNorm that reads the sum
  // (ln_2, the next block's ln_1, or ln_f: Note [Fused residual LayerNorm] in
  // kernels/ops.h). Nothing else is allocated per batch, so a sample
  // costs activation_bytes_per_sample() exactly, with e the compute type's size:
  //   e * (T*C*(16 L + 8) + T*V) + L*S + 4 * (4 L + 2) T,
  // with S = attention_saved_bytes for one sample (e*H*T*T unfused, 4*H*T fused).
  //
  // With recompute (Note [Gpt recompute]) each block keeps only res3, its output (the
  // next block's input; the last one's is ln_f's), and every other tensor of a block,
  // its row statistics included, is one set that all blocks share, in the same order:
  //   encoded (BT, C)
  //   per block l: res3 (BT, C)
  //   shared: ln1 (BT, C), qkv (BT, 3C), attn (S / e), atty, res2, ln2 (BT, C each),
  //           fch, fch_gelu (BT, 4C each)
  //   lnf, dres, dtmp, dbig, logits               as above
  // and in fp32: shared ln1 mean, rstd, ln2 mean, rstd; ln_f mean, rstd (BT each). A
  // sample then costs
  //   e * (T*C*(L + 23) + T*V) + S + 4 * 6 T.
  // With C and T multiples of 8 every big tensor still starts 16-byte aligned.
  int64_t activation_bytes_per_sample_in(DType compute, Recompute recompute) const override;
  Recompute recompute() const override { return config_.recompute; }
  bool can_recompute() const override { return true; }
  void set_recompute(Recompute recompute) override;
  // 2 * (the blocks' matmul weights, 12 C^2 per block) * T, plus attention's two
  // T x T x C products per layer (2 * 2 * T*T*C, the causal half counted as full, as
  // GPT-2 and PaLM FLOP counts do), plus the head 2 * T*C*V. LayerNorm, GELU, the
  // softmax and the embedding lookup are left out (a few percent at most).
  int64_t forward_flops_per_sample() const override;
  // Recompute::kBlocks repeats, for every block but the last, its forward up to c_fc's
  // GELU: c_attn, attn.c_proj and c_fc (2 * 8 C^2 * T) and attention (2 * 2 * T*T*C),
  // counted as forward_flops_per_sample counts: (L - 1) * (16 C^2 T + 4 T^2 C).
  int64_t recompute_flops_per_sample_in(Recompute recompute) const override;
  size_t workspace_bytes_in(int64_t batch, DType compute) const override;
  // One part per block, all deterministic: the CPU ops are, and the CUDA ops are by
  // design (the embedding backward sums in a fixed order).
  std::vector<PartDeterminism> determinism(int64_t batch) const override;
  void release_activations() override;
  // Note [Gpt recompute]
  // With Recompute::kBlocks a training forward keeps each block's input (encoded, or
  // the block before's res3) and writes the rest of every block into one shared set
  // (Note [Gpt activation layout]); backward, before block l's backward, runs block
  // l's forward again from its input into that set: ln_1, c_attn, attention,
  // attn.c_proj, its dropout, the residual add with ln_2, and c_fc with GELU. It stops
  // there: backward never reads the MLP branch's output, and res3 is kept. The last
  // block is not recomputed: the shared set still holds it when backward starts
  // (backward runs only when the last forward was a training one).
  // The recomputed tensors are forward's, bit for bit, because
  //   - every op is deterministic (the CPU's are; the CUDA ops are by design, cuDNN's
  //     attention included) and runs on the same inputs, of the same shapes;
  //   - dropout's masks are functions of (seed, step, site, sample id, element) only
  //     (DESIGN contract 9), so the recompute draws forward's masks again;
  //   - forward computes block l's ln_1 (l > 0) in the previous block's fused residual
  //     add (add_layernorm_forward), while the recompute runs layernorm_forward on the
  //     stored sum, res3: the fused op's contract is that chain, bit for bit, on the
  //     STORED (rounded) sum (Note [Fused residual LayerNorm], kernels/ops.h);
  //   - on a GPU a kernel may pick its vector width or GEMM algorithm from its
  //     pointers' alignment: with C and T multiples of 8 every tensor of both layouts
  //     is 16-byte aligned, so both take the same. (The CPU's results do not depend on
  //     alignment; the unit tests use odd sizes to show it.)
  // So losses, gradients and the trajectory are the same as without recompute, and
  // resuming a checkpoint with the other setting continues it exactly.
  // bits_per_byte = mean loss / ln 2 when the tokens are bytes; nothing otherwise.
  std::vector<Metric> eval_metrics(double metric_sum, double loss_sum, int64_t samples) const override;

 private:
  struct Block;        // where one block's tensors are in the flat buffers
  struct Acts;         // the activation buffers' tensors for a batch
  struct StepDropout;  // the dropout masks of one training step
  void ensure_activations(int64_t batch);
  // The tensors of a batch laid out in `type` with `recompute`: live pointers when
  // those are the model's and the buffers are allocated, null ones (for counting)
  // otherwise.
  Acts acts(int64_t batch, DType type, Recompute recompute) const;
  Acts acts(int64_t batch) const;  // the model's own layout
  // Block l's ln_1 of its input: block 0's in forward, any block's in a recompute.
  void layernorm_1(const Acts& a, int64_t l);
  // Block l's forward from its ln_1 output through c_fc's GELU (all that its backward
  // reads but its input): forward's first part, and a recompute's (Note [Gpt recompute]).
  void block_forward_to_gelu(const Acts& a, int64_t l, const StepDropout& drop);
  Block block(int64_t l) const;
  // The parameters the ops read: params() in fp32, param_copy() in bf16.
  TypedPtr weights();

  GptConfig config_;
  std::vector<ParamTensor> tensors_;
  std::vector<ParamRange> ranges_;
  Buffer activations_;  // the big tensors, in the compute type
  Buffer row_stats_;    // LayerNorm's mean and 1/std, fp32
  int64_t capacity_ = 0;          // samples the activation buffer holds
  int64_t batch_ = 0;             // samples of the last forward
  bool trained_ = false;          // the last forward was Pass::kTrain (backward may run)
  const int32_t* tokens_ = nullptr;       // of the last forward (embedding backward)
  const int64_t* sample_ids_ = nullptr;   // of the last forward (dropout backward)
  int64_t step_ = 0;
};

// The number of parameters of a GPT of this shape: (V + T) C + L (12 C^2 + 13 C) + 2 C.
int64_t gpt_param_count(const GptConfig& config);

// Builds a Gpt for the data: vocab = spec.vocab, or the data's token count when 0.
// Throws ConfigError naming the model key when the spec is inconsistent (n_embd not a
// multiple of n_head) or does not fit the data (samples that are not windows of
// seq_len tokens, tokens beyond the vocabulary).
std::unique_ptr<Model> build_gpt(Context& ctx, const ModelSpec& spec, const DataFacts& data);

}  // namespace dtrain
