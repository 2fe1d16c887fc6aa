// Note [Determinism report]: a layer that some rank runs without a deterministic
// algorithm is said in the plan (text and plan.json) and in the run's summary. The CPU
// ops are all deterministic, so the fact is injected: by hand into a PlanOutcome, and
// through a CPU backend that claims cuDNN's answer for some convolutions.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>

#include "comm/self_communicator.h"
#include "kernels/context.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/ops.h"
#include "models/gpt.h"
#include "runtime/config.h"
#include "runtime/plan_report.h"
#include "runtime/trainer.h"

namespace dtrain {
namespace {

constexpr const char* kRounding = "; resume matches within float rounding, not bit for bit";

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

PlanOutcome two_rank_outcome() {
  PlanOutcome o;
  o.plan.global_batch = 64;
  o.plan.accumulation_steps = 1;
  o.plan.micro_batch = {32, 32};
  o.ranks.resize(2);
  PassDeterminism filter_only;
  filter_only.param_gradient = false;
  PassDeterminism forward_and_filter = filter_only;
  forward_and_filter.forward = false;
  o.ranks[0].nondeterministic = {{2, "conv2d(16->32, 5x5)", filter_only}};
  o.ranks[1].nondeterministic = {{2, "conv2d(16->32, 5x5)", forward_and_filter}};
  return o;
}

TEST(DeterminismReport, NamesTheLayerItsPassesAndTheRanksInOneSentence) {
  const std::vector<std::string> notes = determinism_notes(two_rank_outcome());
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_EQ(notes[0], std::string("layer 2 conv2d(16->32, 5x5): a non-deterministic algorithm for the forward pass "
                                  "on rank 1 and the parameter gradient on ranks 0, 1") + kRounding);
}

TEST(DeterminismReport, PlanTextAndJsonCarryTheSentence) {
  const PlanOutcome o = two_rank_outcome();
  const PlanSummary s{o, 0.1, 0.1, "none", 64, 10, 0};
  const std::string note = determinism_notes(o).at(0);
  const std::string text = plan_text(s);
  EXPECT_EQ(count_of(text, "plan: " + note + "\n"), 1u) << text;
  const std::string json = plan_json(s);
  EXPECT_NE(json.find("\"bit_exact_resume\": false"), std::string::npos) << json;
  EXPECT_NE(json.find("\"determinism_notes\": [\"" + note + "\"]"), std::string::npos) << json;
  EXPECT_NE(json.find("\"nondeterministic\": [{\"layer\": 2, \"name\": \"conv2d(16->32, 5x5)\", "
                      "\"passes\": [\"forward pass\", \"parameter gradient\"]}]"),
            std::string::npos)
      << json;
}

TEST(DeterminismReport, TimedGemmsAreSaidOnceBeforeTheLayersAndEndBitExactResume) {
  PlanOutcome o = two_rank_outcome();
  o.gemm_algorithms_timed = true;
  const std::vector<std::string> notes = determinism_notes(o);
  ASSERT_EQ(notes.size(), 2u);
  EXPECT_EQ(notes[0], std::string("precision.gemm_autotune: each process times the GEMMs' algorithms and may keep "
                                  "others than a resumed run does") + kRounding);
  EXPECT_EQ(notes[1], determinism_notes(two_rank_outcome()).at(0));
  for (RankPlanReport& r : o.ranks) r.nondeterministic.clear();
  const PlanSummary s{o, 0.1, 0.1, "none", 64, 10, 0};
  EXPECT_EQ(determinism_notes(o).size(), 1u);
  EXPECT_NE(plan_json(s).find("\"bit_exact_resume\": false"), std::string::npos) << plan_json(s);
}

TEST(DeterminismReport, ConsecutiveLayersAlikeAreOneSentenceNamingTheSettingWhenItIsTheCause) {
  PlanOutcome o;
  o.plan.global_batch = 8;
  o.plan.accumulation_steps = 1;
  o.plan.micro_batch = {8};
  o.ranks.resize(1);
  PassDeterminism attention;
  attention.input_gradient = false;
  attention.param_gradient = false;
  PassDeterminism filter;
  filter.param_gradient = false;
  o.ranks[0].nondeterministic = {{0, "transformer.h.0", attention}, {1, "transformer.h.1", attention},
                                 {2, "transformer.h.2", attention}, {3, "transformer.h.3", filter},
                                 {5, "transformer.h.5", attention}};
  o.deterministic_preferred = false;
  const std::vector<std::string> notes = determinism_notes(o);
  ASSERT_EQ(notes.size(), 3u);
  const std::string both = "the input gradient on rank 0 and the parameter gradient on rank 0";
  EXPECT_EQ(notes[0], "layers 0 to 2 (transformer.h.0 to transformer.h.2): a non-deterministic algorithm "
                      "(precision.deterministic: false) for " + both + kRounding);
  EXPECT_EQ(notes[1], std::string("layer 3 transformer.h.3: a non-deterministic algorithm (precision.deterministic: "
                                  "false) for the parameter gradient on rank 0") + kRounding);
  EXPECT_EQ(notes[2], "layer 5 transformer.h.5: a non-deterministic algorithm (precision.deterministic: false) "
                      "for " + both + kRounding);  // not consecutive with 0 to 2
}

TEST(DeterminismReport, ADeterministicPlanSaysNothingAndPromisesBitExactResume) {
  PlanOutcome o = two_rank_outcome();
  for (RankPlanReport& r : o.ranks) r.nondeterministic.clear();
  const PlanSummary s{o, 0.1, 0.1, "none", 64, 10, 0};
  EXPECT_TRUE(determinism_notes(o).empty());
  EXPECT_EQ(plan_text(s).find("deterministic"), std::string::npos) << plan_text(s);
  EXPECT_NE(plan_json(s).find("\"bit_exact_resume\": true"), std::string::npos) << plan_json(s);
}

// The CPU ops, except that conv2d_determinism answers as cuDNN would where it has no
// deterministic backward-data algorithm for any shape, nor a backward-filter one for
// convolutions with 4 input channels; and attention's backward answers as cuDNN's
// with precision.deterministic off would, for sequences of 16.
class ClaimingBackend final : public OpsBackend {
 public:
  const char* name() const override { return "cpu (claiming non-deterministic convolutions)"; }
  bool attention_backward_deterministic(int64_t, int64_t seq, int64_t, int64_t, DType) const override {
    return seq != 16;
  }
  Conv2dDeterminism conv2d_determinism(Context&, const Conv2dShape& s) override {
    Conv2dDeterminism d;
    d.backward_data = false;
    d.backward_filter = s.in_channels != 4;
    return d;
  }

  void gemm(Context& c, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, ConstTypedPtr a,
            int64_t lda, ConstTypedPtr b, int64_t ldb, float beta, TypedPtr y, int64_t ldc) override {
    cpu_.gemm(c, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, y, ldc);
  }
  void add_bias(Context& c, TypedPtr y, ConstTypedPtr bias, int64_t o, int64_t ch, int64_t i) override {
    cpu_.add_bias(c, y, bias, o, ch, i);
  }
  void bias_backward(Context& c, ConstTypedPtr dy, float* db, int64_t o, int64_t ch, int64_t i) override {
    cpu_.bias_backward(c, dy, db, o, ch, i);
  }
  void relu_forward(Context& c, const float* x, float* y, int64_t n) override { cpu_.relu_forward(c, x, y, n); }
  void relu_backward(Context& c, const float* y, const float* dy, float* dx, int64_t n) override {
    cpu_.relu_backward(c, y, dy, dx, n);
  }
  size_t conv2d_workspace_bytes(Context& c, const Conv2dShape& s) override {
    return cpu_.conv2d_workspace_bytes(c, s);
  }
  void conv2d_forward(Context& c, const Conv2dShape& s, const float* x, const float* w, const float* b,
                      float* y) override {
    cpu_.conv2d_forward(c, s, x, w, b, y);
  }
  void conv2d_backward_data(Context& c, const Conv2dShape& s, const float* dy, const float* w, float* dx) override {
    cpu_.conv2d_backward_data(c, s, dy, w, dx);
  }
  void conv2d_backward_filter(Context& c, const Conv2dShape& s, const float* x, const float* dy, float* dw,
                              float* db) override {
    cpu_.conv2d_backward_filter(c, s, x, dy, dw, db);
  }
  void maxpool2d_forward(Context& c, const Pool2dShape& s, const float* x, float* y, int32_t* arg) override {
    cpu_.maxpool2d_forward(c, s, x, y, arg);
  }
  void maxpool2d_backward(Context& c, const Pool2dShape& s, const float* dy, const int32_t* arg,
                          float* dx) override {
    cpu_.maxpool2d_backward(c, s, dy, arg, dx);
  }
  void softmax_cross_entropy(Context& c, ConstTypedPtr logits, const int32_t* labels, int64_t batch,
                             int64_t classes, float scale, TypedPtr dlogits, double* stats, double loss_weight) override {
    cpu_.softmax_cross_entropy(c, logits, labels, batch, classes, scale, dlogits, stats, loss_weight);
  }
  size_t softmax_cross_entropy_workspace_bytes(int64_t batch) const override {
    return cpu_.softmax_cross_entropy_workspace_bytes(batch);
  }
  void sgd_update(Context& c, float* p, const float* g, float* m, int64_t n, const SgdHyper& h) override {
    cpu_.sgd_update(c, p, g, m, n, h);
  }
  void adamw_update(Context& c, float* p, const float* g, float* m, float* v, bf16* p16, int64_t n,
                    const AdamWHyper& h) override {
    cpu_.adamw_update(c, p, g, m, v, p16, n, h);
  }
  void fill(Context& c, float* x, int64_t n, float value) override { cpu_.fill(c, x, n, value); }
  void sum_squares(Context& c, const float* x, int64_t n, double scale, double* out) override {
    cpu_.sum_squares(c, x, n, scale, out);
  }
  void copy_from_host(Context& c, void* dst, const void* src, size_t bytes) override {
    cpu_.copy_from_host(c, dst, src, bytes);
  }
  void copy_to_host(Context& c, void* dst, const void* src, size_t bytes) override {
    cpu_.copy_to_host(c, dst, src, bytes);
  }

 private:
  OpsBackend& cpu_ = cpu::backend();
};

Config cnn_config(const std::string& dir) {
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/in.yaml";
  std::ofstream(path) << "model:\n  name: cnn\n  channels: [4, 8]\n  kernel_size: 3\n  cnn_hidden: [16]\n"
                         "data:\n  name: synthetic\n  train_samples: 128\n  test_samples: 32\n"
                         "train:\n  global_batch: 16\n  micro_batch: 8\n  max_steps: 2\n";
  return load_config(path, {});
}

std::string run_log(Context& ctx, const std::string& dir) {
  std::filesystem::remove_all(dir + "/run");
  SelfCommunicator comm;
  std::ostringstream log;
  train(cnn_config(dir), ctx, comm, comm, dir + "/run", log);
  return log.str();
}

TEST(DeterminismReport, TrainingSaysItAtStartUpInPlanJsonAndInTheSummary) {
  const std::string dir = (std::filesystem::temp_directory_path() / "dtrain_determinism_report").string();
  Context ctx(DeviceKind::Cpu, std::make_unique<CpuAllocator>(), std::make_unique<ClaimingBackend>(), 1);
  const std::string log = run_log(ctx, dir);
  // Layers: 0 conv(1->4), 1 relu, 2 pool, 3 conv(4->8), 4 relu, 5 pool, ... Layer 0
  // never computes its input gradient, so only layer 3 is named.
  const std::string note = std::string("layer 3 conv2d(4->8, 3x3): a non-deterministic algorithm for the input "
                                       "gradient on rank 0 and the parameter gradient on rank 0") + kRounding;
  EXPECT_EQ(count_of(log, "non-deterministic algorithm"), 2u) << log;
  EXPECT_EQ(count_of(log, "plan: " + note + "\n"), 1u) << log;
  EXPECT_EQ(count_of(log, "dtrain: " + note + "\n"), 1u) << log;
  EXPECT_LT(log.find("plan: " + note), log.find("final test accuracy")) << log;    // at start-up
  EXPECT_GT(log.find("dtrain: " + note), log.find("final test accuracy")) << log;  // in the summary
  std::ifstream in(dir + "/run/plan.json");
  const std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(json.find("\"determinism_notes\": [\"" + note + "\"]"), std::string::npos) << json;
}

TEST(DeterminismReport, TrainingOnTheCpuSaysNothing) {
  const std::string dir = (std::filesystem::temp_directory_path() / "dtrain_determinism_quiet").string();
  auto ctx = Context::make_cpu(1);
  const std::string log = run_log(*ctx, dir);
  EXPECT_EQ(log.find("deterministic"), std::string::npos) << log;
  EXPECT_NE(log.find("final test accuracy"), std::string::npos) << log;
}

// The GPT's blocks say what the backend says of attention's backward: its dQ reaches
// the block's input gradient and its parameter gradients (c_attn's, through dqkv).
TEST(DeterminismReport, EveryGptBlockNamesItsInputGradientWhereAttentionsBackwardIsNotDeterministic) {
  Context ctx(DeviceKind::Cpu, std::make_unique<CpuAllocator>(), std::make_unique<ClaimingBackend>(), 1);
  GptConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 16;
  c.vocab = 32;
  for (const int64_t seq : {int64_t{16}, int64_t{8}}) {
    SCOPED_TRACE(::testing::Message() << "seq " << seq);
    c.seq_len = seq;
    const Gpt gpt(ctx, c);
    const std::vector<PartDeterminism> parts = gpt.determinism(4);
    ASSERT_EQ(parts.size(), 2u);
    for (const PartDeterminism& p : parts) {
      EXPECT_TRUE(p.passes.forward);
      EXPECT_EQ(p.passes.input_gradient, seq != 16);
      EXPECT_EQ(p.passes.param_gradient, seq != 16);
    }
  }
}

}  // namespace
}  // namespace dtrain
