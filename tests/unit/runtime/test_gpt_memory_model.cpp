// The planner's memory model of the GPT against the probe step's measured peak, for
// three shapes in fp32 and in bf16, with and without recompute (memory.recompute:
// blocks) (the issue asks within 10%; on the CPU the two agree to the byte, since the
// model's activation blocks are sized by the same formula it reports and every op's
// workspace formula is exact).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include "kernels/context.h"
#include "runtime/batch_planner.h"
#include "runtime/config.h"
#include "runtime/dataset.h"
#include "runtime/memory_probe.h"
#include "runtime/optimizer.h"

namespace dtrain {
namespace {

namespace fs = std::filesystem;

struct Shape4 {
  int64_t layers, heads, embd, seq;
  const char* compute;
  const char* recompute = "none";
};

class GptPredictionVsProbe : public ::testing::TestWithParam<Shape4> {};

TEST_P(GptPredictionVsProbe, MeasuredPeakIsThePredictionToTheByte) {
  const Shape4 s = GetParam();
  // One file per process: CTest runs each case in its own process, several at once
  // (and the sanitizer build's beside them), and a shared name let one case remove the
  // file another was about to read.
  const fs::path file =
      fs::temp_directory_path() / ("dtrain_gpt_memory_model." + std::to_string(::getpid()) + ".txt");
  {
    std::ofstream out(file, std::ios::binary);
    for (int i = 0; i < 40000; ++i) out.put(static_cast<char>('a' + (i * 7919) % 26));
  }
  Config c;
  c.model.name = "gpt";
  c.model.n_layer = s.layers;
  c.model.n_head = s.heads;
  c.model.n_embd = s.embd;
  c.model.seq_len = s.seq;
  c.model.compute = s.compute;
  c.model.recompute = s.recompute;
  c.data.name = "text";
  c.data.path = file.string();
  c.optimizer.name = "adamw";
  c.eval.batch = 4;
  auto ctx = Context::make_cpu(1);
  const DataSplits data = load_data(c.data, c.model, 1);
  auto model = build_model(*ctx, c.model, data.train->facts());
  model->init(1);
  const int64_t n = model->param_count();
  auto optimizer = make_optimizer(c.optimizer, *ctx, n, decay_spans(model->param_tensors(), n, "matrices"));
  const MemoryModel memory = memory_model_of(*model, optimizer->state_bytes(), *ctx, data.train->layout(), c.eval.batch,
                                             c.comm.reduce_dtype);
  EXPECT_EQ(memory.optimizer_bytes, 8 * n);
  for (int64_t micro : {1, 3, 8}) {
    model->release_activations();
    ctx->release_workspace();
    const int64_t peak = probe_micro_batch(*model, *ctx, *data.train, micro, std::min<int64_t>(micro, c.eval.batch));
    const int64_t predicted = memory.predict(micro).total();
    EXPECT_EQ(predicted, peak) << "micro-batch " << micro << ": the CPU's figures are exact";
    RecordProperty("peak_" + std::to_string(micro), std::to_string(peak));
    RecordProperty("predicted_" + std::to_string(micro), std::to_string(predicted));
  }
  fs::remove(file);
}

INSTANTIATE_TEST_SUITE_P(Shapes, GptPredictionVsProbe,
                         ::testing::Values(Shape4{1, 1, 16, 16, "fp32"}, Shape4{2, 2, 32, 32, "fp32"},
                                           Shape4{3, 4, 64, 64, "fp32"}, Shape4{1, 1, 16, 16, "bf16"},
                                           Shape4{2, 2, 32, 32, "bf16"}, Shape4{3, 4, 64, 64, "bf16"},
                                           Shape4{1, 1, 16, 16, "fp32", "blocks"},
                                           Shape4{3, 4, 64, 64, "fp32", "blocks"},
                                           Shape4{2, 2, 32, 32, "bf16", "blocks"},
                                           Shape4{3, 4, 64, 64, "bf16", "blocks"}),
                         [](const auto& info) {
                           const Shape4& s = info.param;
                           return "L" + std::to_string(s.layers) + "H" + std::to_string(s.heads) + "C" +
                                  std::to_string(s.embd) + "T" + std::to_string(s.seq) + s.compute +
                                  (std::string(s.recompute) == "blocks" ? "Recompute" : "");
                         });

}  // namespace
}  // namespace dtrain
