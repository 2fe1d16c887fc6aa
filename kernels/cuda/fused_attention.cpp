// Note [Fused attention] (fused_attention.h): cuDNN's SDPA forward and backward graphs,
// one pair per shape, built on first use and cached. A build without the cuDNN
// frontend's headers (DTRAIN_HAVE_CUDNN_FRONTEND unset) declines every shape.
#include "kernels/cuda/fused_attention.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <sstream>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kernels/check.h"

#if DTRAIN_HAVE_CUDNN_FRONTEND
#include <cudnn_frontend.h>
#include <dlfcn.h>

// The frontend, built with dynamic loading (kernels/CMakeLists.txt), calls cuDNN
// through this handle, which its user opens. dtrain links cuDNN already, so dlopen
// returns the library the process has loaded.
namespace cudnn_frontend {
void* cudnn_dlhandle = nullptr;
}
#endif

namespace dtrain {

namespace {

// Why a shape can never take the fused path, whatever cuDNN says ("" when it may).
std::string shape_rule(const FusedAttentionShape& s, DType type) {
  if (type != DType::kBF16) return "fused attention takes bf16 storage only (cuDNN SDPA); fp32 runs unfused";
  if (s.heads <= 0 || s.channels % s.heads != 0) return "channels do not split into the heads";
  const int64_t hs = s.channels / s.heads;
  if (hs % 8 != 0 || hs > 128) return "head size " + std::to_string(hs) + " is not a multiple of 8 up to 128";
  // cuDNN wants 16-byte aligned tensors; a layout of bf16 tensors of (T, C) and (H, T)
  // floats per sample keeps every tensor 16-byte aligned when both are multiples of 8.
  if (s.channels % 8 != 0 || s.seq % 8 != 0) return "channels and seq must be multiples of 8 (16-byte alignment)";
  return "";
}

}  // namespace

#if DTRAIN_HAVE_CUDNN_FRONTEND

namespace fe = cudnn_frontend;

namespace {

// The graphs' tensor ids (variant-pack keys).
enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV };

// The layouts of Note [Fused attention] as cuDNN's (B, H, T, hs) dims and strides:
// head h of q, k, v at features h*hs of their thirds of qkv (row stride 3C); out and
// dout (row stride C); the statistics (B, H, T, 1) packed.
struct Layout {
  std::vector<int64_t> dims, qkv_stride, out_stride, stats_dims, stats_stride;
  explicit Layout(const FusedAttentionShape& s) {
    const int64_t B = s.batch, T = s.seq, C = s.channels, H = s.heads, hs = C / H;
    dims = {B, H, T, hs};
    qkv_stride = {T * 3 * C, hs, 3 * C, 1};
    out_stride = {T * C, hs, C, 1};
    stats_dims = {B, H, T, 1};
    stats_stride = {H * T, T, 1, 1};
  }
};

std::shared_ptr<fe::graph::Graph> new_graph() {
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  return g;
}

std::shared_ptr<fe::graph::Tensor_attributes> input(fe::graph::Graph& g, const char* name, Uid uid,
                                                    const std::vector<int64_t>& dims,
                                                    const std::vector<int64_t>& stride) {
  return g.tensor(fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim(dims).set_stride(stride));
}

// "" when the graph was built with a plan, else what failed.
std::string finish(fe::graph::Graph& g, cudnnHandle_t handle, int64_t& workspace) {
  for (const auto& [step, status] :
       std::initializer_list<std::pair<const char*, std::function<fe::error_t()>>>{
           {"validate", [&] { return g.validate(); }},
           {"build_operation_graph", [&] { return g.build_operation_graph(handle); }},
           {"create_execution_plans", [&] { return g.create_execution_plans({fe::HeurMode_t::A}); }},
           {"check_support", [&] { return g.check_support(handle); }},
           {"build_plans", [&] { return g.build_plans(handle); }}}) {
    fe::error_t e = status();
    if (!e.is_good()) return std::string("cuDNN SDPA ") + step + ": " + e.get_message();
  }
  workspace = g.get_workspace_size();
  return "";
}

}  // namespace

struct FusedAttention::Graphs {
  std::shared_ptr<fe::graph::Graph> forward, backward;
  size_t workspace = 0;
  std::string declined;  // "" when both graphs built
};

const FusedAttention::Graphs& FusedAttention::graphs(const FusedAttentionShape& s) const {
  const auto key = std::make_tuple(s.batch, s.seq, s.channels, s.heads);
  auto found = cache_.find(key);
  if (found != cache_.end()) return *found->second;
  auto graphs = std::make_unique<Graphs>();
  if (cudnn_frontend::cudnn_dlhandle == nullptr) {
    cudnn_frontend::cudnn_dlhandle = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_GLOBAL);
  }
  if (cudnn_frontend::cudnn_dlhandle == nullptr) {
    graphs->declined = std::string("cannot dlopen libcudnn.so.9: ") + dlerror();
    return *cache_.emplace(key, std::move(graphs)).first->second;
  }
  const Layout l(s);
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.channels / s.heads));
  int64_t forward_ws = 0, backward_ws = 0;

  graphs->forward = new_graph();
  {
    fe::graph::Graph& g = *graphs->forward;
    auto q = input(g, "q", kQ, l.dims, l.qkv_stride);
    auto k = input(g, "k", kK, l.dims, l.qkv_stride);
    auto v = input(g, "v", kV, l.dims, l.qkv_stride);
    auto options = fe::graph::SDPA_attributes().set_name("attention").set_generate_stats(true).set_causal_mask(true).set_attn_scale(scale);
    auto [o, stats] = g.sdpa(q, k, v, options);
    o->set_output(true).set_uid(kO).set_dim(l.dims).set_stride(l.out_stride);
    stats->set_output(true).set_uid(kStats).set_data_type(fe::DataType_t::FLOAT).set_dim(l.stats_dims).set_stride(l.stats_stride);
    graphs->declined = finish(g, handle_, forward_ws);
  }
  if (graphs->declined.empty()) {
    graphs->backward = new_graph();
    fe::graph::Graph& g = *graphs->backward;
    auto q = input(g, "q", kQ, l.dims, l.qkv_stride);
    auto k = input(g, "k", kK, l.dims, l.qkv_stride);
    auto v = input(g, "v", kV, l.dims, l.qkv_stride);
    auto o = input(g, "o", kO, l.dims, l.out_stride);
    auto d_o = input(g, "dO", kDO, l.dims, l.out_stride);
    auto stats = input(g, "stats", kStats, l.stats_dims, l.stats_stride);
    stats->set_data_type(fe::DataType_t::FLOAT);
    auto options = fe::graph::SDPA_backward_attributes()
                       .set_name("attention_backward")
                       .set_causal_mask(true)
                       .set_attn_scale(scale)
                       .set_deterministic_algorithm(deterministic_);
    auto [dq, dk, dv] = g.sdpa_backward(q, k, v, o, d_o, stats, options);
    dq->set_output(true).set_uid(kDQ).set_dim(l.dims).set_stride(l.qkv_stride);
    dk->set_output(true).set_uid(kDK).set_dim(l.dims).set_stride(l.qkv_stride);
    dv->set_output(true).set_uid(kDV).set_dim(l.dims).set_stride(l.qkv_stride);
    graphs->declined = finish(g, handle_, backward_ws);
  }
  if (!graphs->declined.empty()) {
    graphs->forward.reset();
    graphs->backward.reset();
  }
  graphs->workspace = static_cast<size_t>(std::max(forward_ws, backward_ws));
  return *cache_.emplace(key, std::move(graphs)).first->second;
}

std::string FusedAttention::declined(const FusedAttentionShape& s, DType type) const {
  if (!enabled_) return "fused attention is off (CudaOptions::fused_attention)";
  if (std::string rule = shape_rule(s, type); !rule.empty()) return rule;
  return graphs(s).declined;
}

void FusedAttention::forward(const FusedAttentionShape& s, const void* qkv, void* out, float* stats,
                             void* workspace) const {
  const Graphs& g = graphs(s);
  DTRAIN_ASSERT(g.forward, "fused attention forward of a declined shape: " << g.declined);
  auto* base = static_cast<char*>(const_cast<void*>(qkv));
  const size_t third = static_cast<size_t>(s.channels) * sizeof(bf16);
  std::unordered_map<int64_t, void*> pack{
      {kQ, base}, {kK, base + third}, {kV, base + 2 * third}, {kO, out}, {kStats, stats}};
  fe::error_t e = g.forward->execute(handle_, pack, workspace);
  DTRAIN_ASSERT(e.is_good(), "cuDNN SDPA forward failed: " << e.get_message());
}

void FusedAttention::backward(const FusedAttentionShape& s, const void* qkv, const void* out, const void* dout,
                              const float* stats, void* dqkv, void* workspace) const {
  const Graphs& g = graphs(s);
  DTRAIN_ASSERT(g.backward, "fused attention backward of a declined shape: " << g.declined);
  auto* base = static_cast<char*>(const_cast<void*>(qkv));
  auto* dbase = static_cast<char*>(dqkv);
  const size_t third = static_cast<size_t>(s.channels) * sizeof(bf16);
  std::unordered_map<int64_t, void*> pack{{kQ, base},
                                          {kK, base + third},
                                          {kV, base + 2 * third},
                                          {kO, const_cast<void*>(out)},
                                          {kDO, const_cast<void*>(dout)},
                                          {kStats, const_cast<float*>(stats)},
                                          {kDQ, dbase},
                                          {kDK, dbase + third},
                                          {kDV, dbase + 2 * third}};
  fe::error_t e = g.backward->execute(handle_, pack, workspace);
  DTRAIN_ASSERT(e.is_good(), "cuDNN SDPA backward failed: " << e.get_message());
}

size_t FusedAttention::workspace_bytes(const FusedAttentionShape& s) const { return graphs(s).workspace; }

#else  // no cuDNN frontend in this build

struct FusedAttention::Graphs {};

const FusedAttention::Graphs& FusedAttention::graphs(const FusedAttentionShape&) const {
  static const Graphs none;
  return none;
}

std::string FusedAttention::declined(const FusedAttentionShape& s, DType type) const {
  if (!enabled_) return "fused attention is off (CudaOptions::fused_attention)";
  if (std::string rule = shape_rule(s, type); !rule.empty()) return rule;
  return "this build has no cuDNN frontend (scripts/fetch_cudnn_frontend.py fetches its headers)";
}

void FusedAttention::forward(const FusedAttentionShape&, const void*, void*, float*, void*) const {
  DTRAIN_ASSERT(false, "fused attention forward in a build without the cuDNN frontend");
}

void FusedAttention::backward(const FusedAttentionShape&, const void*, const void*, const void*, const float*,
                              void*, void*) const {
  DTRAIN_ASSERT(false, "fused attention backward in a build without the cuDNN frontend");
}

size_t FusedAttention::workspace_bytes(const FusedAttentionShape&) const { return 0; }

#endif

FusedAttention::FusedAttention(cudnnHandle_t handle, bool enabled, bool deterministic)
    : handle_(handle), enabled_(enabled), deterministic_(deterministic) {}

FusedAttention::~FusedAttention() = default;

bool FusedAttention::supports(const FusedAttentionShape& s, DType type) const { return declined(s, type).empty(); }

}  // namespace dtrain
