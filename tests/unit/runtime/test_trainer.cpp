// The trainer through the library API, on synthetic data with one rank: which
// collectives it issues per optimizer step, and what it writes to the run directory.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "comm/self_communicator.h"
#include "kernels/context.h"
#include "kernels/errors.h"
#include "runtime/checkpoint.h"
#include "runtime/config.h"
#include "runtime/trainer.h"

namespace dtrain {
namespace {

// A one-rank communicator that counts the all-reduces of float data (gradients).
class CountingCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend_name() const override { return "counting"; }
  std::unique_ptr<Work> all_reduce(void* buf, size_t count, DataType type, ReduceOp op) override {
    if (type == DataType::Float32) {
      ++float_all_reduces;
      float_elements += count;
    }
    return inner.all_reduce(buf, count, type, op);
  }
  std::unique_ptr<Work> reduce_scatter(const void* s, void* r, size_t n, DataType t, ReduceOp op) override {
    return inner.reduce_scatter(s, r, n, t, op);
  }
  std::unique_ptr<Work> all_gather(const void* s, void* r, size_t n, DataType t) override {
    return inner.all_gather(s, r, n, t);
  }
  std::unique_ptr<Work> broadcast(void* b, size_t n, DataType t, int root) override {
    return inner.broadcast(b, n, t, root);
  }
  std::unique_ptr<Work> barrier() override { return inner.barrier(); }

  SelfCommunicator inner;
  int float_all_reduces = 0;
  size_t float_elements = 0;
};

Config small_config(const std::string& dir, const std::vector<std::string>& sets) {
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/in.yaml";
  std::ofstream(path) << "model:\n  name: mlp\n  hidden: [16]\n"
                         "data:\n  name: synthetic\n  train_samples: 256\n  test_samples: 64\n"
                         "train:\n  global_batch: 32\n  micro_batch: 8\n  max_steps: 3\n"
                         "log:\n  every_steps: 1\n";
  return load_config(path, sets);
}

TEST(Trainer, GradientsAreReducedOnlyOnTheLastMicroStep) {
  const std::string dir = (std::filesystem::temp_directory_path() / "dtrain_trainer_k4").string();
  const Config config = small_config(dir, {});  // k = 32 / 8 = 4
  auto ctx = Context::make_cpu(1);
  CountingCommunicator comm;
  std::ostringstream log;
  const TrainResult r = train(config, *ctx, comm, comm, dir + "/run", log);
  EXPECT_EQ(r.steps, 3);
  // One bucket (the model is far below comm.bucket_mb) per optimizer step, not per micro-step.
  EXPECT_EQ(comm.float_all_reduces, 3);
  const size_t params = 784 * 16 + 16 + 16 * 10 + 10;
  EXPECT_EQ(comm.float_elements, 3 * params);
  EXPECT_NE(log.str().find("global batch 32 = 4 accumulation step(s) x (8)"), std::string::npos) << log.str();
}

TEST(Trainer, SmallBucketsSplitTheReduceButNotTheMicroSteps) {
  const std::string dir = (std::filesystem::temp_directory_path() / "dtrain_trainer_buckets").string();
  const Config config = small_config(dir, {"comm.bucket_mb=0.0001"});  // 26 floats: every layer its own bucket
  auto ctx = Context::make_cpu(1);
  CountingCommunicator comm;
  std::ostringstream log;
  train(config, *ctx, comm, comm, dir + "/run", log);
  EXPECT_EQ(comm.float_all_reduces, 3 * 2);  // two linear layers, three steps
}

TEST(Trainer, WritesEffectiveConfigAndMetrics) {
  const std::string dir = (std::filesystem::temp_directory_path() / "dtrain_trainer_files").string();
  std::filesystem::remove_all(dir + "/run");
  const Config config = small_config(dir, {"eval.every_steps=2"});
  auto ctx = Context::make_cpu(1);
  SelfCommunicator comm;
  std::ostringstream log;
  const TrainResult r = train(config, *ctx, comm, comm, dir + "/run", log);

  const Config reloaded = load_config(dir + "/run/config.yaml", {});
  EXPECT_EQ(reloaded.model.hidden, std::vector<int64_t>{16});
  EXPECT_EQ(reloaded.train.max_steps, 3);

  std::ifstream in(dir + "/run/metrics.jsonl");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 3u + 2u);  // 3 train lines, eval at step 2 and at the end
  for (const char* key : {"\"step\":1,", "\"epoch\":", "\"loss\":", "\"lr\":", "\"samples\":32,",
                          "\"samples_per_s\":", "\"time_s\":"}) {
    EXPECT_NE(lines[0].find(key), std::string::npos) << key << " missing in " << lines[0];
  }
  EXPECT_NE(lines[2].find("\"kind\":\"eval\",\"step\":2,\"eval_loss\":"), std::string::npos) << lines[2];
  EXPECT_NE(lines[4].find("\"eval_accuracy\":"), std::string::npos) << lines[4];
  EXPECT_GT(r.eval_accuracy, 0.0);
  EXPECT_NE(log.str().find("final test accuracy"), std::string::npos);
}

// A checkpoint whose sections pass their checksums but whose optimizer buffer has the
// wrong length (not one dtrain wrote for this run) is refused before anything is
// copied into the model's buffers (on a GPU that copy would overrun device memory).
TEST(Trainer, ResumeRefusesAnOptimizerBufferOfTheWrongLength) {
  const std::string dir = (std::filesystem::temp_directory_path() / "dtrain_trainer_bad_state").string();
  std::filesystem::remove_all(dir);
  const Config config = small_config(dir, {"checkpoint.every_steps=3", "checkpoint.dir=" + dir + "/ckpt"});
  auto ctx = Context::make_cpu(1);
  SelfCommunicator comm;
  std::ostringstream log;
  train(config, *ctx, comm, comm, dir + "/run", log);
  const std::vector<std::string> written = list_checkpoints(dir + "/ckpt");
  ASSERT_FALSE(written.empty()) << log.str();
  CheckpointState state = read_checkpoint(written.back());
  ASSERT_FALSE(state.optimizer_state.empty());
  state.optimizer_state[0].resize(state.optimizer_state[0].size() + 1000, 0.0f);
  write_checkpoint(written.back(), state);

  const Config longer = small_config(dir, {"checkpoint.every_steps=3", "checkpoint.dir=" + dir + "/ckpt",
                                           "train.max_steps=6"});
  TrainOptions options;
  options.resume = written.back();
  try {
    train(longer, *ctx, comm, comm, dir + "/run2", log, options);
    FAIL() << "resumed from a damaged state";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("optimizer buffer 0 holds"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dtrain
