// The step prediction of Note [Scaling model] (runtime/scaling_model.h) on cases
// worked by hand, and the cluster table it reads (runtime/cluster_spec.h).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/errors.h"
#include "runtime/cluster_spec.h"
#include "runtime/config.h"
#include "runtime/scaling_model.h"

namespace dtrain {
namespace {

TEST(ExposedCommunication, WithoutOverlapEveryBucketWaitsForTheEndOfBackward) {
  EXPECT_DOUBLE_EQ(exposed_after_backward({0.1, 0.2, 0.3}, {0.2, 0.5, 1.0}, 1.0, false), 0.6);
}

TEST(ExposedCommunication, OverlapHidesAllButTheLastBucket) {
  // Ready at 0.5 and 1.0 of a 1 s backward, 0.1 s each: 0.6, then max(0.6, 1.0) + 0.1.
  EXPECT_NEAR(exposed_after_backward({0.1, 0.1}, {0.5, 1.0}, 1.0, true), 0.1, 1e-12);
}

TEST(ExposedCommunication, CollectivesLongerThanBackwardQueueUp) {
  // 0.5 + 1 = 1.5, then max(1.5, 1.0) + 1 = 2.5: 1.5 s after backward.
  EXPECT_NEAR(exposed_after_backward({1.0, 1.0}, {0.5, 1.0}, 1.0, true), 1.5, 1e-12);
  EXPECT_EQ(exposed_after_backward({}, {}, 1.0, true), 0.0);
}

// Free links: any communication costs nothing.
ClusterSpec free_links(int ranks_per_node, int devices_per_node) {
  ClusterSpec c;
  c.name = "test";
  c.ranks_per_node = ranks_per_node;
  c.devices_per_node = devices_per_node;
  c.intra_node = {0.0, 1e30};
  c.inter_node = {0.0, 1e30};
  return c;
}

ScalingInputs one_bucket(int64_t elements, int64_t capacity, int64_t global_batch) {
  ScalingInputs in;
  in.bucket_elements = {elements};
  in.fixed_s = 0.0;
  in.per_sample_s = 1e-3;
  in.capacity = capacity;
  in.global_batch = global_batch;
  return in;
}

TEST(ScalingModel, WeakScalingOnFreeLinksIsPerfect) {
  const ScalingInputs in = one_bucket(1000, 10, kAuto);
  for (int n : {1, 2, 8, 64}) {
    const ScalingPoint p = predict_scaling(in, free_links(8, 8), n);
    ASSERT_TRUE(p.plannable);
    EXPECT_EQ(p.global_batch, 10 * n);
    EXPECT_EQ(p.accumulation, 1);
    EXPECT_NEAR(p.step_s, 10e-3, 1e-12);
    EXPECT_NEAR(p.efficiency, 1.0, 1e-9);
    EXPECT_EQ(p.dominant, "compute");
  }
}

TEST(ScalingModel, RanksBeyondTheDevicesShareThem) {
  // 4 ranks on a node of 2 devices: each micro-step takes twice as long.
  const ScalingPoint p = predict_scaling(one_bucket(1000, 10, kAuto), free_links(4, 2), 4);
  EXPECT_NEAR(p.compute_s, 2 * 10e-3, 1e-12);
  EXPECT_NEAR(p.efficiency, 0.5, 1e-9);
  // 3 ranks on 2 devices: two share one, and the step waits for them.
  const ScalingPoint three = predict_scaling(one_bucket(1000, 10, kAuto), free_links(4, 2), 3);
  EXPECT_NEAR(three.compute_s, 2 * 10e-3, 1e-12);
}

TEST(ScalingModel, TheRestOfAStepByHand) {
  // Micro-steps of 10 samples at 1 ms a sample; gathering a sample 0.1 ms; a pass over
  // the gradients 2 ms, zeroing them 1 ms; free links.
  ScalingInputs in = one_bucket(1000, 10, kAuto);
  in.data_per_sample_s = 1e-4;
  in.gradient_pass_s = 2e-3;
  in.zero_s = 1e-3;
  in.noise_scale = true;
  // One rank, k = 1: no noise probes; 10 + 1 (data) + 2 (norm) + 1 (zero) ms.
  EXPECT_NEAR(predict_scaling(in, free_links(8, 8), 1).compute_s, 14e-3, 1e-12);
  // Two ranks: the noise scale's two probes are two more passes.
  EXPECT_NEAR(predict_scaling(in, free_links(8, 8), 2).compute_s, 18e-3, 1e-12);
  // Sharded on two ranks: the norm covers half the buffer.
  in.shard = true;
  EXPECT_NEAR(predict_scaling(in, free_links(8, 8), 2).compute_s, 17e-3, 1e-12);
  // A device that computes while the host gathers hides the data; without the noise
  // scale only the norm and the zeroing remain.
  in.shard = false;
  in.data_overlaps = true;
  in.noise_scale = false;
  EXPECT_NEAR(predict_scaling(in, free_links(8, 8), 2).compute_s, 13e-3, 1e-12);
  // Two ranks sharing one device: all of it twice.
  in.data_overlaps = false;
  EXPECT_NEAR(predict_scaling(in, free_links(2, 1), 2).compute_s, 2 * 14e-3, 1e-12);
}

TEST(ScalingModel, HostCollectivesOfRanksSharingADeviceShareItToo) {
  // 4 ranks on one node of 2 devices, one bucket of 1e6 fp32 on a 4 GB/s link: the
  // ring all-reduce moves 2 * 3/4 * 4 MB, 1.5 ms, and the sums' 64 bytes 24 ns. On the
  // host (no overlap) two ranks share each core for that too: twice as long.
  ClusterSpec host = free_links(4, 2);
  host.intra_node = {0.0, 4e9};
  host.overlap = false;
  const double alone = 1.5e-3 + 2 * 0.75 * 64 / 4e9;
  EXPECT_NEAR(predict_scaling(one_bucket(1000000, 10, kAuto), host, 4).exposed_s, 2 * alone, 1e-12);
  // With a device's own collectives (overlap: NCCL), the link is the limit, not the
  // host; the single bucket is ready as backward ends, so all of it shows, once.
  ClusterSpec device = host;
  device.overlap = true;
  EXPECT_NEAR(predict_scaling(one_bucket(1000000, 10, kAuto), device, 4).exposed_s, alone, 1e-12);
}

TEST(ScalingModel, AFixedGlobalBatchOnTwoRanksByHand) {
  // Global 20, capacity 10. One rank: k = 2, 20 ms, no communication: 1000 samples/s.
  // Two ranks (one node, no latency, 4 GB/s): b = 10, k = 1, 10 ms of compute; the
  // one bucket of 1e6 fp32 (4 MB) is ready at the end of backward and takes
  // 2 * 1/2 * 4 MB / 4 GB/s = 1 ms; the step's 64 bytes of sums add 16 ns.
  ClusterSpec c = free_links(8, 8);
  c.intra_node = {0.0, 4e9};
  const ScalingPoint one = predict_scaling(one_bucket(1000000, 10, 20), c, 1);
  EXPECT_EQ(one.accumulation, 2);
  EXPECT_NEAR(one.step_s, 20e-3, 1e-12);
  EXPECT_NEAR(one.efficiency, 1.0, 1e-12);
  const ScalingPoint two = predict_scaling(one_bucket(1000000, 10, 20), c, 2);
  EXPECT_EQ(two.micro_batch, 10);
  EXPECT_EQ(two.accumulation, 1);
  EXPECT_NEAR(two.compute_s, 10e-3, 1e-12);
  EXPECT_NEAR(two.exposed_s, 1e-3 + 16e-9, 1e-12);
  EXPECT_NEAR(two.step_s, 11e-3 + 16e-9, 1e-12);
  EXPECT_NEAR(two.efficiency, (20 / two.step_s) / (2 * 1000.0), 1e-9);
  EXPECT_EQ(two.dominant, "compute");  // 1 ms is under a tenth of 11 ms
}

TEST(ScalingModel, ShardingReduceScattersThenAllGathersTheParameters) {
  // 2 ranks, 4 GB/s: the bucket's reduce-scatter moves 1/2 of 4 MB (0.5 ms) and the
  // all-gather of the fp32 parameters another 0.5 ms, after the step.
  ClusterSpec c = free_links(8, 8);
  c.intra_node = {0.0, 4e9};
  ScalingInputs in = one_bucket(1000000, 10, 20);
  in.shard = true;
  const ScalingPoint p = predict_scaling(in, c, 2);
  EXPECT_NEAR(p.exposed_s, 0.5e-3 + 0.5e-3 + 16e-9, 1e-12);
}

TEST(ScalingModel, TheOptimizerStepIsOnceAStepAndShardedOverTheRanks) {
  // Global 40, capacity 10, 4 ranks on free links: k = 1, 10 ms; the optimizer's 8 ms
  // once a step; sharded, each rank updates a quarter: 2 ms. One rank: k = 4, 48 ms.
  ScalingInputs in = one_bucket(1000, 10, 40);
  in.optimizer_s = 8e-3;
  EXPECT_NEAR(predict_scaling(in, free_links(8, 8), 1).step_s, 40e-3 + 8e-3, 1e-12);
  const ScalingPoint p = predict_scaling(in, free_links(8, 8), 4);
  EXPECT_NEAR(p.compute_s, 10e-3 + 8e-3, 1e-12);
  in.shard = true;
  const ScalingPoint sharded = predict_scaling(in, free_links(8, 8), 4);
  EXPECT_NEAR(sharded.compute_s, 10e-3 + 2e-3, 1e-12);
  // Shared devices slow it as they slow the micro-steps: 4 ranks on 2 devices.
  in.shard = false;
  EXPECT_NEAR(predict_scaling(in, free_links(4, 2), 4).compute_s, 2 * (10e-3 + 8e-3), 1e-12);
}

TEST(ScalingModel, NamesLatencyWhenManySmallBucketsCrossManyNodes) {
  ClusterSpec c = free_links(8, 8);
  c.intra_node = {5e-6, 300e9};
  c.inter_node = {10e-6, 300e9};
  c.overlap = false;
  ScalingInputs in = one_bucket(100, 1, kAuto);
  in.bucket_elements = std::vector<int64_t>(50, 100);
  const ScalingPoint p = predict_scaling(in, c, 1024);
  ASSERT_TRUE(p.plannable);
  EXPECT_EQ(p.nodes, 128);
  EXPECT_EQ(p.dominant, "latency");
  EXPECT_EQ(p.algorithm, AllReduceAlgorithm::kTree);
  EXPECT_LT(p.efficiency, 0.5);
}

TEST(ScalingModel, AGlobalBatchSmallerThanTheRanksDoesNotPlan) {
  const ScalingPoint p = predict_scaling(one_bucket(10, 10, 64), free_links(8, 8), 128);
  EXPECT_FALSE(p.plannable);
  EXPECT_NE(p.why_not.find("train.global_batch"), std::string::npos);
  EXPECT_NE(scaling_text({one_bucket(10, 10, 64), free_links(8, 8), {p}}).find("does not plan"), std::string::npos);
}

// Every row of the table has as many cells as the header, however wide the figures.
TEST(ScalingModel, TheTablesColumnsStayApartWhenFiguresOutgrowThem) {
  ScalingPoint p = predict_scaling(one_bucket(10, 10, 64), free_links(8, 8), 8);
  ASSERT_TRUE(p.plannable);
  p.micro_batch = 60000, p.global_batch = 30720000, p.samples_per_s = 1.208569221e9;
  p.compute_s = p.comm_s = p.exposed_s = p.step_s = 123456.0;  // 123456000.00 ms
  const std::string text = scaling_text({one_bucket(10, 10, 64), free_links(8, 8), {p}});
  std::istringstream lines(text);
  std::vector<std::string> rows;
  for (std::string line; std::getline(lines, line);) rows.push_back(line);
  ASSERT_GE(rows.size(), 2u);
  const auto words = [](const std::string& line) {
    std::istringstream in(line);
    return std::vector<std::string>(std::istream_iterator<std::string>(in), std::istream_iterator<std::string>());
  };
  // The header's 12 columns in 18 words ("micro x k", "compute ms" and the like).
  EXPECT_EQ(words(rows[rows.size() - 2]).size(), 18u) << rows[rows.size() - 2];
  // A row: ranks, nodes, "60000 x 1" (3 words) and 9 more cells.
  const std::vector<std::string> cells = words(rows.back());
  ASSERT_EQ(cells.size(), 14u) << rows.back();
  EXPECT_EQ(cells[10], "1208569221.0");
  EXPECT_EQ(cells[9], "123456000.00");
}

TEST(ScalingModel, RankListsParseAndBadEntriesAreNamed) {
  EXPECT_EQ(parse_rank_list("8,64,512"), (std::vector<int>{8, 64, 512}));
  for (const char* bad : {"", "8,,16", "0", "-2", "4x", "two"}) {
    try {
      parse_rank_list(bad);
      FAIL() << "accepted '" << bad << "'";
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find("--predict-ranks"), std::string::npos) << e.what();
    }
  }
}

std::string write_table(const std::string& name, const std::string& text) {
  const std::string path = (std::filesystem::temp_directory_path() / name).string();
  std::ofstream(path) << text;
  return path;
}

const char* kTable =
    "name: two test nodes\n"
    "ranks_per_node: 2\n"
    "devices_per_node: 1\n"
    "overlap: false\n"
    "intra_node: {latency_us: 20, bandwidth_GBps: 2.5, source: measured}\n"
    "inter_node: {latency_us: 50, bandwidth_GBps: 0.5, source: measured}\n"
    "device: {flops: 2e10, source: given}\n";

TEST(ClusterSpec, ReadsEveryKeyInItsUnits) {
  const ClusterSpec s = load_cluster_spec(write_table("dtrain_cluster_ok.yaml", kTable));
  EXPECT_EQ(s.name, "two test nodes");
  EXPECT_EQ(s.ranks_per_node, 2);
  EXPECT_EQ(s.devices_per_node, 1);
  EXPECT_FALSE(s.overlap);
  EXPECT_DOUBLE_EQ(s.intra_node.latency_s, 20e-6);
  EXPECT_DOUBLE_EQ(s.intra_node.bandwidth_Bps, 2.5e9);
  EXPECT_DOUBLE_EQ(s.inter_node.latency_s, 50e-6);
  EXPECT_DOUBLE_EQ(s.inter_node.bandwidth_Bps, 0.5e9);
  EXPECT_DOUBLE_EQ(s.device_flops, 2e10);
}

// The shipped tables load, and their figures are in the units the model computes in:
// a latency written in ms where us is meant, or a bandwidth in Gb/s where GB/s is, or
// left in GB/s unconverted, falls outside what any GPU link or GPU is.
TEST(ClusterSpec, TheExamplesInConfigsLoadInTheModelsUnits) {
  int tables = 0;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(DTRAIN_SOURCE_DIR) + "/configs/clusters")) {
    SCOPED_TRACE(entry.path().string());
    const ClusterSpec s = load_cluster_spec(entry.path().string());
    ++tables;
    for (const Link& link : {s.intra_node, s.inter_node}) {
      EXPECT_GT(link.latency_s, 1e-7);  // 0.1 us
      EXPECT_LT(link.latency_s, 1e-3);  // 1 ms
      EXPECT_GT(link.bandwidth_Bps, 1e9);
      EXPECT_LT(link.bandwidth_Bps, 1e12);
    }
    EXPECT_LT(s.inter_node.bandwidth_Bps, s.intra_node.bandwidth_Bps);
    EXPECT_TRUE(s.device_flops == 0.0 || (s.device_flops > 1e12 && s.device_flops < 1e16)) << s.device_flops;
  }
  EXPECT_GE(tables, 2);  // h100_nvlink_ib400.yaml and h100_eth25.yaml
}

TEST(ClusterSpec, BadTablesNameTheFileLineAndKey) {
  struct Case {
    std::string edit_from, edit_to, expect;
  };
  const std::vector<Case> cases = {
      {"ranks_per_node: 2\n", "", "ranks_per_node: missing"},
      {"bandwidth_GBps: 2.5", "bandwidth_GBps: -1", "intra_node.bandwidth_GBps: must be a positive number"},
      {"latency_us: 50", "latency_us: fast", "inter_node.latency_us: must be a number"},
      {"overlap: false", "overlap: maybe", "overlap: must be true or false"},
      {"devices_per_node: 1", "gpus: 1", "gpus: unknown key"},
  };
  for (const Case& c : cases) {
    std::string text = kTable;
    text.replace(text.find(c.edit_from), c.edit_from.size(), c.edit_to);
    const std::string path = write_table("dtrain_cluster_bad.yaml", text);
    try {
      load_cluster_spec(path);
      FAIL() << "accepted: " << text;
    } catch (const ConfigError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(path + ":"), std::string::npos) << what;
      EXPECT_NE(what.find(c.expect), std::string::npos) << what;
    }
  }
  EXPECT_THROW(load_cluster_spec("/nonexistent/cluster.yaml"), ConfigError);
}

}  // namespace
}  // namespace dtrain
