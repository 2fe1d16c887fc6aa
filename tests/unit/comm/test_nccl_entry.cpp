// make_nccl_communicator exists in every build; on a CPU context it refuses with a
// typed error (CommError in builds without NCCL, DeviceError from the CUDA backend
// otherwise) before any collective, so it cannot leave other ranks waiting.
#include <gtest/gtest.h>

#include <string>

#include "comm/device_communicator.h"
#include "comm/self_communicator.h"
#include "kernels/errors.h"

namespace dtrain {
namespace {

TEST(NcclEntry, ACpuContextIsRefusedWithATypedError) {
  auto ctx = Context::make_cpu(1);
  SelfCommunicator self;
  try {
    make_nccl_communicator(self, *ctx, /*timeout_s=*/300.0);
    FAIL() << "NCCL on a CPU context was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_code(), kExitRuntime) << e.what();
    const std::string what = e.what();
    EXPECT_TRUE(what.find("comm.backend: mpi") != std::string::npos ||
                what.find("device.kind: cuda") != std::string::npos)
        << "the message must say what to do: " << what;
  }
}

}  // namespace
}  // namespace dtrain
