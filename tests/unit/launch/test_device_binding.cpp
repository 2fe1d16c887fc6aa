// Device binding from every local rank's list of visible GPUs: the cases of mpirun
// (all ranks see all GPUs), srun with per-task GPUs (each sees its own), ranks that
// share, and ranks without GPUs. Expected choices are worked out by hand per case.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/errors.h"
#include "launch/device_binding.h"

namespace dtrain::launch {
namespace {

using Table = std::vector<std::vector<std::string>>;

// `ranks` local ranks that all see GPUs g0..g{gpus-1}.
Table all_see(int ranks, int gpus) {
  std::vector<std::string> list;
  for (int g = 0; g < gpus; ++g) list.push_back("GPU-" + std::to_string(g));
  return Table(static_cast<size_t>(ranks), list);
}

TEST(DeviceBinding, AutoUsesTheCpuWithoutGpus) {
  const DeviceChoice c = choose_device("auto", false, 1, all_see(2, 0), "n1");
  EXPECT_EQ(c.kind, DeviceKind::Cpu);
  EXPECT_EQ(c.ranks_sharing, 2);  // the node's memory is shared by its ranks
}

TEST(DeviceBinding, LocalRankPicksItsGpuWhenAllSeeAll) {
  for (int r = 0; r < 4; ++r) {
    const DeviceChoice c = choose_device("auto", false, r, all_see(4, 4), "n1");
    EXPECT_EQ(c.kind, DeviceKind::Cuda);
    EXPECT_EQ(c.index, r);
    EXPECT_EQ(c.ranks_sharing, 1);
  }
}

// srun --gpus-per-task=1: every rank sees one GPU, its own, as device 0.
TEST(DeviceBinding, EachRankSeeingItsOwnGpuTakesIt) {
  const Table table{{"GPU-a"}, {"GPU-b"}, {"GPU-c"}, {"GPU-d"}};
  for (int r = 0; r < 4; ++r) {
    const DeviceChoice c = choose_device("cuda", false, r, table, "n1");
    EXPECT_EQ(c.kind, DeviceKind::Cuda);
    EXPECT_EQ(c.index, 0);
    EXPECT_EQ(c.ranks_sharing, 1);
  }
}

// Two pairs of ranks, each pair seeing two GPUs of its own (--gpus-per-task=2 with
// two ranks per task set, or a wrapper): each pair spreads over its two.
TEST(DeviceBinding, RanksSeeingTheSameSubsetSpreadOverIt) {
  const Table table{{"GPU-0", "GPU-1"}, {"GPU-2", "GPU-3"}, {"GPU-0", "GPU-1"}, {"GPU-2", "GPU-3"}};
  EXPECT_EQ(choose_device("cuda", false, 0, table, "n").index, 0);
  EXPECT_EQ(choose_device("cuda", false, 1, table, "n").index, 0);
  EXPECT_EQ(choose_device("cuda", false, 2, table, "n").index, 1);
  EXPECT_EQ(choose_device("cuda", false, 3, table, "n").index, 1);
}

TEST(DeviceBinding, MoreRanksThanGpusNamesNodeRanksAndCounts) {
  try {
    choose_device("cuda", false, 0, all_see(4, 1), "gpu-node-7");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("node gpu-node-7 runs 4 ranks but has 1 visible GPU(s)"), std::string::npos) << m;
    EXPECT_NE(m.find("local ranks 0, 1, 2, 3 would share GPU GPU-0"), std::string::npos) << m;
    EXPECT_NE(m.find("device.share: true"), std::string::npos) << m;
  }
}

// Each rank sees one GPU but two of them see the same one (a wrong wrapper): caught
// although no rank alone sees more ranks than GPUs.
TEST(DeviceBinding, TwoRanksHandedTheSameGpuAreCaught) {
  const Table table{{"GPU-a"}, {"GPU-b"}, {"GPU-a"}};
  const DeviceChoice alone = choose_device("cuda", false, 1, table, "n");  // GPU-b: its own
  EXPECT_EQ(alone.kind, DeviceKind::Cuda);
  EXPECT_EQ(alone.index, 0);  // the one GPU rank 1 sees
  EXPECT_EQ(alone.ranks_sharing, 1);
  try {
    choose_device("cuda", false, 2, table, "n");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("local ranks 0, 2 would share GPU GPU-a"), std::string::npos) << e.what();
  }
}

TEST(DeviceBinding, SharingWrapsRanksOverGpusAndCountsTheSharers) {
  const DeviceChoice c = choose_device("auto", true, 3, all_see(4, 2), "n");
  EXPECT_EQ(c.index, 1);
  EXPECT_EQ(c.ranks_sharing, 2);
  const DeviceChoice d = choose_device("cuda", true, 2, all_see(3, 1), "n");
  EXPECT_EQ(d.index, 0);
  EXPECT_EQ(d.ranks_sharing, 3);
}

TEST(DeviceBinding, CpuIsAlwaysAllowed) {
  EXPECT_EQ(choose_device("cpu", false, 3, all_see(8, 1), "n").kind, DeviceKind::Cpu);
}

// The asynchronous CPU device is the CPU's: any number of ranks, GPUs or not, each
// with its share of the node's cores.
TEST(DeviceBinding, CpuAsyncIsAlwaysAllowed) {
  for (int gpus : {0, 1, 8}) {
    const DeviceChoice c = choose_device("cpu-async", false, 2, all_see(4, gpus), "n");
    EXPECT_EQ(c.kind, DeviceKind::CpuAsync);
    EXPECT_EQ(c.ranks_sharing, 4);
  }
}

TEST(DeviceBinding, CudaWithoutGpuIsAnError) {
  EXPECT_THROW(choose_device("cuda", false, 0, all_see(1, 0), "n"), ConfigError);
}

// The node gather carries each rank's list as one string (launch/device_setup.cpp).
TEST(DeviceBinding, GpuListsTravelAsOneStringAndBack) {
  const std::vector<std::string> ids{"GPU-5b1c", "GPU-77aa"};
  EXPECT_EQ(join_device_ids(ids), "GPU-5b1c,GPU-77aa");
  EXPECT_EQ(split_device_ids("GPU-5b1c,GPU-77aa"), ids);
  EXPECT_EQ(join_device_ids({}), "");
  EXPECT_TRUE(split_device_ids("").empty());  // a rank without GPUs
}

}  // namespace
}  // namespace dtrain::launch
