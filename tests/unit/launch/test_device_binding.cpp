#include <gtest/gtest.h>

#include "kernels/errors.h"
#include "launch/device_binding.h"

namespace dtrain::launch {
namespace {

TEST(DeviceBinding, AutoUsesTheCpuWithoutGpus) {
  const DeviceChoice c = choose_device("auto", false, 1, 2, 0, "n1");
  EXPECT_EQ(c.kind, DeviceKind::Cpu);
}

TEST(DeviceBinding, LocalRankPicksItsGpu) {
  for (int r = 0; r < 4; ++r) {
    const DeviceChoice c = choose_device("auto", false, r, 4, 4, "n1");
    EXPECT_EQ(c.kind, DeviceKind::Cuda);
    EXPECT_EQ(c.index, r);
  }
}

TEST(DeviceBinding, MoreRanksThanGpusNamesNodeAndCounts) {
  try {
    choose_device("cuda", false, 0, 4, 1, "gpu-node-7");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("node gpu-node-7 runs 4 ranks but has 1 visible GPU(s)"), std::string::npos) << m;
    EXPECT_NE(m.find("device.share: true"), std::string::npos) << m;
  }
}

TEST(DeviceBinding, SharingWrapsRanksOverGpus) {
  EXPECT_EQ(choose_device("auto", true, 3, 4, 2, "n").index, 1);
  EXPECT_EQ(choose_device("cuda", true, 2, 3, 1, "n").index, 0);
}

TEST(DeviceBinding, CpuIsAlwaysAllowed) {
  EXPECT_EQ(choose_device("cpu", false, 3, 8, 1, "n").kind, DeviceKind::Cpu);
}

TEST(DeviceBinding, CudaWithoutGpuIsAnError) {
  EXPECT_THROW(choose_device("cuda", false, 0, 1, 0, "n"), ConfigError);
}

}  // namespace
}  // namespace dtrain::launch
