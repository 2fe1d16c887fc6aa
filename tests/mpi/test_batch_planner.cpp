// The batch planner across ranks (run under mpirun with 1, 2 and 4 ranks): every rank
// ends with the same plan, mixed memory gives mixed micro-batches, and a probe step
// that runs out of memory on one rank only makes every rank re-plan together.
#include <gtest/gtest.h>

#include <memory>
#include <span>
#include <vector>

#include "comm/typed_collectives.h"
#include "kernels/context.h"
#include "kernels/errors.h"
#include "models/model.h"
#include "runtime/batch_planner.h"
#include "runtime/config.h"
#include "runtime/dataset.h"
#include "runtime/optimizer.h"
#include "tests/mpi/mpi_env.h"

namespace dtrain {
namespace {

Config mlp_config() {
  Config c;
  c.model.name = "mlp";
  c.data.name = "synthetic";
  c.data.train_samples = 4096;
  c.data.test_samples = 256;
  c.train.micro_batch = kAuto;
  return c;
}

struct Rank {
  Rank(const Config& c, size_t limit) : ctx(Context::make_cpu(1, limit)), data(load_data(c.data, c.model, 1)) {
    model = build_model(*ctx, c.model, data.train->facts());
    model->init(1);
    optimizer = make_optimizer(c.optimizer, *ctx, model->param_count(),
                               decay_spans(model->param_tensors(), model->param_count(), c.optimizer.decay_filter));
  }
  std::unique_ptr<Context> ctx;
  DataSplits data;
  std::unique_ptr<Model> model;
  std::unique_ptr<Optimizer> optimizer;
};

// Every rank's view of the plan, gathered: all must be the same.
void expect_same_plan_everywhere(const BatchPlan& plan) {
  Communicator& comm = testing_mpi::world();
  std::vector<int64_t> mine = plan.micro_batch;
  mine.push_back(plan.accumulation_steps);
  mine.push_back(plan.global_batch);
  std::vector<int64_t> all(mine.size() * static_cast<size_t>(comm.size()));
  all_gather(comm, std::span<const int64_t>(mine), std::span<int64_t>(all))->wait();
  for (int r = 0; r < comm.size(); ++r) {
    for (size_t i = 0; i < mine.size(); ++i) {
      EXPECT_EQ(all[static_cast<size_t>(r) * mine.size() + i], mine[i]) << "rank " << r << " planned differently";
    }
  }
}

size_t limit_of(int rank) { return (size_t{5} << 20) + static_cast<size_t>(rank) * (size_t{1} << 20); }

TEST(BatchPlannerRanks, MixedMemoryGivesMixedMicroBatchesAndTheExactGlobalBatch) {
  Communicator& comm = testing_mpi::world();
  Config c = mlp_config();
  c.train.global_batch = 1200;
  Rank r(c, limit_of(comm.rank()));  // 5, 6, 7, 8 MiB
  const PlanOutcome out = plan_training(c, *r.model, *r.optimizer, *r.ctx, *r.data.train, comm,
                                        PlannerInputs{r.ctx->allocator().capacity(), 1});
  const BatchPlan& p = out.plan;
  expect_same_plan_everywhere(p);
  EXPECT_EQ(p.accumulation_steps * p.samples_per_micro_step(), 1200);
  ASSERT_EQ(out.ranks.size(), static_cast<size_t>(comm.size()));
  for (int q = 0; q < comm.size(); ++q) {
    const RankPlanReport& k = out.ranks[static_cast<size_t>(q)];
    EXPECT_EQ(k.micro_batch, p.micro_batch[static_cast<size_t>(q)]);
    EXPECT_LE(k.micro_batch, k.capacity) << "rank " << q;
    EXPECT_EQ(k.memory.limit, limit_of(q));
    EXPECT_LE(k.probe_peak_bytes, static_cast<int64_t>(limit_of(q)));
    // More memory, more samples.
    if (q > 0) EXPECT_GT(k.micro_batch, p.micro_batch[static_cast<size_t>(q - 1)]) << "rank " << q;
  }
}

TEST(BatchPlannerRanks, OutOfMemoryInOneRanksProbeMakesEveryRankReplanTogether) {
  Communicator& comm = testing_mpi::world();
  const int liar = comm.size() - 1;
  Config c = mlp_config();
  c.train.global_batch = kAuto;
  Rank r(c, limit_of(comm.rank()));
  MemoryCapacity claimed = r.ctx->allocator().capacity();
  if (comm.rank() == liar) claimed.available *= 3;  // this device overstates its free memory
  const PlanOutcome out = plan_training(c, *r.model, *r.optimizer, *r.ctx, *r.data.train, comm,
                                        PlannerInputs{claimed, 1});
  expect_same_plan_everywhere(out.plan);
  for (int q = 0; q < comm.size(); ++q) {
    const RankPlanReport& k = out.ranks[static_cast<size_t>(q)];
    // Every rank probed again after the liar's failure; only the liar changed its plan.
    EXPECT_GE(k.probes, 2) << "rank " << q;
    EXPECT_LE(k.probe_peak_bytes, static_cast<int64_t>(limit_of(q))) << "rank " << q;
  }
  EXPECT_EQ(out.plan.global_batch, out.plan.samples_per_micro_step());
  // The liar backed off to what it really holds: at most what the truth predicts.
  if (comm.rank() == liar) {
    const MemoryModel memory = memory_model_of(*r.model, r.optimizer->state_bytes(), *r.ctx, r.data.train->layout(), c.eval.batch,
                                               c.comm.reduce_dtype);
    EXPECT_LE(memory.predict(out.plan.micro_batch[static_cast<size_t>(liar)]).total(),
              static_cast<int64_t>(limit_of(liar)));
  }
}

}  // namespace
}  // namespace dtrain
