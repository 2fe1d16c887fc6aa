// The planner's memory levers on real models and memory limits (run under mpirun with
// 1 to 4 ranks; Note [Memory levers]): a limit where only sharding fits, one where
// only recompute fits, one where both are needed, and one where neither is, each set
// between the predicted needs of the settings at one sample per rank. Every case then
// plans and probes (setup_training) with the setting chosen.
#include <gtest/gtest.h>

#include <cstdio>
#include <algorithm>
#include <fstream>
#include <memory>
#include <span>
#include <random>
#include <string>

#include "comm/typed_collectives.h"
#include "kernels/context.h"
#include "models/model.h"
#include "runtime/batch_planner.h"
#include "runtime/config.h"
#include "runtime/dataset.h"
#include "runtime/gradient_wire.h"
#include "runtime/optimizer.h"
#include "runtime/optimizer_shards.h"
#include "runtime/training_setup.h"
#include "tests/mpi/mpi_env.h"

namespace dtrain {
namespace {

// Bytes of text for the GPT, the same on every rank (each writes its own copy).
std::string text_file() {
  const std::string path = ::testing::TempDir() + "levers_text_rank" + std::to_string(testing_mpi::world().rank());
  std::mt19937 rng(5);
  std::ofstream out(path, std::ios::binary);
  for (int i = 0; i < 40000; ++i) out.put(static_cast<char>('a' + rng() % 26));
  return path;
}

Config gpt_config() {
  Config c;
  c.model.name = "gpt";
  c.model.n_layer = 4;
  c.model.n_head = 2;
  c.model.n_embd = 32;
  c.model.seq_len = 128;
  c.data.name = "text";
  c.data.path = text_file();
  c.data.val_fraction = 0.1;
  c.optimizer.name = "adamw";
  c.train.global_batch = 8 * testing_mpi::world().size();
  c.train.micro_batch = kAuto;
  c.eval.batch = 1;
  c.memory.fraction = 1.0;  // the budget is the limit
  return c;
}

Config mlp_config() {
  Config c;
  c.model.name = "mlp";
  c.model.hidden = {512, 256};
  c.data.name = "synthetic";
  c.data.train_samples = 2048;
  c.data.test_samples = 64;
  c.optimizer.name = "adamw";
  c.train.global_batch = 16 * testing_mpi::world().size();
  c.train.micro_batch = kAuto;
  c.eval.batch = 1;
  c.memory.fraction = 1.0;
  return c;
}

// What `samples` per rank need under a setting, by the memory model the planner
// uses: the model as built (parameters, gradients, workspace), the optimizer state of
// the whole buffer or of this rank's range (equal budgets: equal ranges), and the
// activations of the recompute setting.
struct Needs {
  int64_t none = 0, shard = 0, recompute = 0, both = 0;
};

Needs needs_at(const Config& c, int64_t samples) {
  Communicator& comm = testing_mpi::world();
  auto ctx = Context::make_cpu(1);
  const DataSplits data = load_data(c.data, c.model, 1);
  ModelSpec spec = c.model;
  spec.recompute = "none";
  auto model = build_model(*ctx, spec, data.train->facts());
  Buffer staging = allocate_gradient_wire_staging(*ctx, c.comm.reduce_dtype, model->param_count());
  MemoryModel m = memory_model_of(*model, 0, *ctx, data.train->layout(), c.eval.batch, c.comm.reduce_dtype);
  const int64_t per_param = optimizer_state_bytes_per_param(c.optimizer);
  std::vector<int64_t> equal(static_cast<size_t>(comm.size()), 1);
  const int64_t mine = shard_ranges(model->param_count(), equal, kShardAlign)[static_cast<size_t>(comm.rank())].count;
  auto at_one = [&](bool shard, Recompute r) {
    MemoryModel x = m;
    x.optimizer_bytes = per_param * (shard && comm.size() > 1 ? mine : model->param_count());
    x.activation_bytes_per_sample = model->activation_bytes_per_sample_in(model->compute_type(), r);
    return x.predict(samples).total();
  };
  return Needs{at_one(false, Recompute::kNone), at_one(true, Recompute::kNone), at_one(false, Recompute::kBlocks),
               at_one(true, Recompute::kBlocks)};
}

Needs needs_at_one_sample(const Config& c) { return needs_at(c, 1); }

// Plans `c` on every rank with memory.limit `limit` (agreed: the largest any rank
// computed, so that all ranks have the same limit); with `gradients`, the world is
// also the gradient communicator whose link a timed choice measures.
struct Planned {
  std::unique_ptr<Context> ctx;  // first: the setup's buffers are freed before it
  TrainingSetup setup;
};

Planned setup_with_limit(Config c, int64_t limit, bool gradients = false) {
  Communicator& comm = testing_mpi::world();
  int64_t agreed = limit;
  std::vector<int64_t> all(static_cast<size_t>(comm.size()));
  all_gather(comm, std::span<const int64_t>(&agreed, 1), std::span<int64_t>(all))->wait();
  agreed = *std::max_element(all.begin(), all.end());
  c.memory.limit = agreed;
  Planned p;
  p.ctx = Context::make_cpu(1, static_cast<size_t>(agreed));
  p.setup = setup_training(c, *p.ctx, comm, 1, "", /*probe_step=*/true, gradients ? &comm : nullptr);
  return p;
}

// The lever chosen for `c` at `limit`, planned as setup_with_limit does.
std::string chosen_with_limit(const Config& c, int64_t limit, bool gradients = false) {
  const Planned p = setup_with_limit(c, limit, gradients);
  EXPECT_GE(p.setup.plan().global_batch, 1);
  return lever_name(p.setup.levers.chosen);
}

TEST(MemoryLeverChoice, NeitherIsNeededWithPlentyOfMemory) {
  Config c = gpt_config();
  const Needs n = needs_at_one_sample(c);
  EXPECT_EQ(chosen_with_limit(c, 50 * n.none), "none");
}

TEST(MemoryLeverChoice, OnlyRecomputeFits) {
  Config c = gpt_config();
  // Sharding fixed off: with it open, shard + recompute would fit too (and may lower k).
  c.optimizer.shard = "false";
  const Needs n = needs_at_one_sample(c);
  // Recompute saves more per sample than sharding's optimizer bytes here (checked).
  ASSERT_LT(n.recompute, n.shard) << "the GPT of this test should gain more from recompute than from sharding";
  // A limit below what the settings without recompute need, above recompute's.
  const int64_t below = std::min(n.none, n.shard);
  EXPECT_EQ(chosen_with_limit(c, n.recompute + (below - n.recompute) / 2), "recompute");
}

TEST(MemoryLeverChoice, BothAreNeeded) {
  Communicator& comm = testing_mpi::world();
  if (comm.size() < 2) GTEST_SKIP() << "sharding needs two ranks or more";
  Config c = gpt_config();
  const Needs n = needs_at_one_sample(c);
  ASSERT_LT(n.both, n.recompute);
  EXPECT_EQ(chosen_with_limit(c, n.both + (n.recompute - n.both) / 2), "shard + recompute");
}

TEST(MemoryLeverChoice, OnlyShardingFits) {
  Communicator& comm = testing_mpi::world();
  if (comm.size() < 2) GTEST_SKIP() << "sharding needs two ranks or more";
  Config c = mlp_config();  // no blocks to recompute
  const Needs n = needs_at_one_sample(c);
  ASSERT_LT(n.shard, n.none);
  EXPECT_EQ(chosen_with_limit(c, n.shard + (n.none - n.shard) / 2), "shard");
}

TEST(MemoryLeverChoice, ShardingThatLowersKOverMpiIsTakenUntimed) {
  Communicator& comm = testing_mpi::world();
  if (comm.size() < 2) GTEST_SKIP() << "sharding needs two ranks or more";
  Config c = mlp_config();
  constexpr int64_t kPerRank = 256;
  c.data.train_samples = 4096;
  c.train.global_batch = kPerRank * comm.size();
  // The limit holds 256 samples a rank sharded, fewer without: k 1 against more.
  const int64_t limit = needs_at(c, kPerRank).shard;
  ASSERT_GT(needs_at(c, kPerRank).none, limit);
  ASSERT_LT(needs_at(c, 1).none, limit) << "without sharding, some k should fit";
  EXPECT_EQ(chosen_with_limit(c, limit, /*gradients=*/true), "shard");
}

TEST(MemoryLeverChoice, ATimedChoiceMeasuresTheGradientLinkAndEveryRankAgrees) {
  Communicator& comm = testing_mpi::world();
  if (comm.size() < 2) GTEST_SKIP() << "the link needs two ranks or more";
  // Recompute that lowers k is timed (Note [Memory levers]); sharding fixed off.
  Config c = gpt_config();
  c.optimizer.shard = "false";
  constexpr int64_t kPerRank = 8;
  const int64_t limit = needs_at(c, kPerRank).recompute;
  ASSERT_GT(needs_at(c, kPerRank).none, limit);
  ASSERT_LT(needs_at(c, 1).none, limit) << "without recompute, some k should fit";
  const Planned p = setup_with_limit(c, limit, /*gradients=*/true);
  const TrainingSetup& s = p.setup;
  const LeverChoice& l = s.levers;
  ASSERT_EQ(l.times.ranks, comm.size()) << "the choice was timed, the link measured";
  EXPECT_GT(l.times.link.link.latency_s, 0.0);
  EXPECT_GT(l.times.link.link.bandwidth_Bps, 0.0);
  EXPECT_FALSE(l.times.link.overlap) << "MPI on the host: buckets after backward";
  EXPECT_NE(l.times.link.source.find("measured on the mpi gradient communicator"), std::string::npos)
      << l.times.link.source;
  ASSERT_EQ(l.candidates.size(), 2u);  // none and recompute
  for (const LeverCandidate& k : l.candidates) {
    ASSERT_TRUE(k.fits) << lever_name(k.setting);
    EXPECT_GT(k.comm_seconds, 0.0) << lever_name(k.setting);
    EXPECT_GT(k.step_seconds, k.comm_seconds) << lever_name(k.setting);
  }
  EXPECT_GT(l.candidates[0].plan.accumulation_steps, l.candidates[1].plan.accumulation_steps);
  // Every rank measured and predicted alike, so every rank chose alike.
  const double mine[4] = {l.times.link.link.latency_s, l.times.link.link.bandwidth_Bps, l.candidates[0].step_seconds,
                          l.candidates[1].step_seconds};
  std::vector<double> all(4 * static_cast<size_t>(comm.size()));
  all_gather(comm, std::span<const double>(mine, 4), std::span<double>(all))->wait();
  for (int r = 1; r < comm.size(); ++r) {
    for (int i = 0; i < 4; ++i) EXPECT_EQ(all[4 * static_cast<size_t>(r) + i], mine[i]) << "rank " << r << ", figure " << i;
  }
  EXPECT_EQ(s.plan().accumulation_steps,
            l.candidates[l.chosen.recompute == Recompute::kBlocks ? 1 : 0].plan.accumulation_steps);
}

TEST(MemoryLeverChoice, ShardingAskedForOnOneRankIsANoOpWithANote) {
  Communicator& comm = testing_mpi::world();
  if (comm.size() != 1) GTEST_SKIP() << "the one-rank case";
  Config c = mlp_config();
  c.optimizer.shard = "true";
  auto ctx = Context::make_cpu(1);
  TrainingSetup s = setup_training(c, *ctx, comm, 1, "");
  EXPECT_FALSE(s.levers.chosen.shard);
  EXPECT_TRUE(s.levers.shards.empty());
  ASSERT_EQ(s.levers.notes.size(), 1u);
  EXPECT_NE(s.levers.notes[0].find("on one rank shards nothing"), std::string::npos);
}

}  // namespace
}  // namespace dtrain
