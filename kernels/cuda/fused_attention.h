// Causal self-attention as one fused kernel per pass: cuDNN's scaled-dot-product
// attention (SDPA) graphs, built with the cuDNN frontend (scripts/
// fetch_cudnn_frontend.py fetches its headers; a build without them has no fused path).
//
// Note [Fused attention]
// The unfused path (attention.cu) writes the T x T probabilities of every head and
// keeps them for backward: B*H*T*T values a layer, 400 MB for GPT-2 124M at B=16 in
// bf16, read and written several times a step. The fused kernels never store them:
// forward keeps each row's log-sum-exp of its scaled scores (fp32, B*H*T), and
// backward recomputes the probabilities from Q, K and that statistic, as
// FlashAttention does. So backward reads the forward's output too (for
// D_i = dO_i . O_i), and the op's saved state is the statistic, not the probabilities
// (ops.h, attention_saved_bytes).
//
// Where it runs: bf16 storage (cuDNN's SDPA takes fp16/bf16 inputs, fp32 softmax and
// accumulation); a head size that is a multiple of 8 and at most 128; channels and
// seq multiples of 8 (so that every tensor is 16-byte aligned, as cuDNN wants); a GPU
// and cuDNN that build both graphs.
// Anything else takes the unfused path, which is also the fp32 one.
//
// Determinism: backward asks for cuDNN's deterministic algorithm (on Hopper, dQ is
// reduced through a dP workspace of B*H*T*T bf16 instead of atomics), so a run repeats
// bit for bit, as the project's other ops do. A GPU or cuDNN that cannot do it gets the
// unfused path, never a nondeterministic one. With CudaOptions::deterministic off
// (precision.deterministic: false), backward takes cuDNN's other algorithm, as
// PyTorch's flash attention does: dQ summed over the key blocks by fp32 atomics into a
// B*H*T*head-size accumulator, in the order the blocks finish, instead of through the
// dP workspace (384 MiB against the accumulator's 48 MiB at GPT-2 124M's B = 16) and
// the separate dQ product that reads it back (4.2% of the GPT-2 step's kernel time on
// an H100, bench/RESULTS.md); dQ then differs between runs in its last bits.
//
// Numerics against the CPU oracle: the probabilities are rounded to bf16 before the
// P V and P^T dO products, unnormalised in forward (exp(S - running max)) and
// normalised in backward, and dS = P * (dP - D) is rounded to bf16 before dQ = dS K and
// dK = dS^T Q; the CPU rounds P once, normalised, and keeps dS in fp32. The GPU tests
// derive the bound that follows (tests/gpu/test_fused_attention.cpp).
#pragma once

#include <cudnn.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "kernels/dtype.h"

namespace dtrain {

struct FusedAttentionShape {
  int64_t batch, seq, channels, heads;
};

class FusedAttention {
 public:
  // `handle` runs the graphs (on its stream); `enabled` false declines every shape;
  // `deterministic` false lets backward sum dQ by atomics (Note [Fused attention]).
  FusedAttention(cudnnHandle_t handle, bool enabled, bool deterministic);
  ~FusedAttention();
  FusedAttention(const FusedAttention&) = delete;
  FusedAttention& operator=(const FusedAttention&) = delete;

  // Whether both graphs run this shape in `type`; they are built (and cached) on the
  // first ask, so the answer never changes for a shape.
  bool supports(const FusedAttentionShape& s, DType type) const;
  // Why supports() said no ("" when it said yes): the first reason found.
  std::string declined(const FusedAttentionShape& s, DType type) const;
  // Whether backward asks for cuDNN's deterministic algorithm (Note [Fused attention]).
  bool deterministic() const { return deterministic_; }
  // The workspace either graph takes (the larger); only for a supported shape.
  size_t workspace_bytes(const FusedAttentionShape& s) const;

  // qkv (B, T, 3C), out (B, T, C), dout (B, T, C), dqkv (B, T, 3C) in bf16; stats
  // (B, H, T) fp32: each row's log-sum-exp of its scaled scores. `workspace` holds
  // workspace_bytes(s). Queued on the handle's stream.
  void forward(const FusedAttentionShape& s, const void* qkv, void* out, float* stats, void* workspace) const;
  void backward(const FusedAttentionShape& s, const void* qkv, const void* out, const void* dout,
                const float* stats, void* dqkv, void* workspace) const;

 private:
  struct Graphs;  // a shape's forward and backward graphs, or why they failed
  const Graphs& graphs(const FusedAttentionShape& s) const;

  cudnnHandle_t handle_;
  bool enabled_;
  bool deterministic_;
  mutable std::map<std::tuple<int64_t, int64_t, int64_t, int64_t>, std::unique_ptr<Graphs>> cache_;
};

}  // namespace dtrain
