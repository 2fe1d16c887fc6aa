// Note [No GPU versus a broken GPU] (kernels/cuda_device_count.h): which answers of
// cudaGetDeviceCount mean "no GPU" and which are errors, with injected answers, so it
// is checked on machines without a GPU. The expected messages are the versions as
// CUDA encodes them (1000 * major + 10 * minor) written out by hand.
#include <gtest/gtest.h>

#include <string>

#include "kernels/cuda_device_count.h"
#include "kernels/errors.h"

namespace dtrain {
namespace {

CudaDeviceQuery answer(int error, const std::string& name, int driver, int runtime = 13000) {
  CudaDeviceQuery q;
  q.error = error;
  q.error_name = name;
  q.error_text = "text of " + name;
  q.driver_version = driver;
  q.runtime_version = runtime;
  return q;
}

// The message of the DeviceError `query` raises, or "" (and a test failure) if none.
std::string error_of(const CudaDeviceQuery& query) {
  try {
    const int count = cuda_device_count_from(query);
    ADD_FAILURE() << query.error_name << " (driver " << query.driver_version << ") gave " << count
                  << " devices instead of a DeviceError";
  } catch (const DeviceError& e) {
    return e.what();
  }
  return "";
}

TEST(CudaDeviceCount, SuccessGivesTheCount) {
  CudaDeviceQuery q = answer(kCudaSuccess, "cudaSuccess", 13000);
  q.count = 3;
  EXPECT_EQ(cuda_device_count_from(q), 3);
}

TEST(CudaDeviceCount, NoDeviceIsZero) {
  EXPECT_EQ(cuda_device_count_from(answer(kCudaErrorNoDevice, "cudaErrorNoDevice", 13000)), 0);
}

// A machine without libcuda (the CPU machines): CUDA reports an insufficient driver
// and a driver version of 0. That is no GPU, not an error.
TEST(CudaDeviceCount, NoDriverInstalledIsZero) {
  EXPECT_EQ(cuda_device_count_from(answer(kCudaErrorInsufficientDriver, "cudaErrorInsufficientDriver", 0)), 0);
}

TEST(CudaDeviceCount, DriverOlderThanTheRuntimeIsAnErrorNamingBothVersionsAndTheRemedy) {
  const std::string m = error_of(answer(kCudaErrorInsufficientDriver, "cudaErrorInsufficientDriver", 12020));
  EXPECT_NE(m.find("cudaErrorInsufficientDriver"), std::string::npos) << m;
  EXPECT_NE(m.find("text of cudaErrorInsufficientDriver"), std::string::npos) << m;
  EXPECT_NE(m.find("CUDA 12.2"), std::string::npos) << m;  // driver 12020
  EXPECT_NE(m.find("CUDA 13.0"), std::string::npos) << m;  // runtime 13000
  EXPECT_NE(m.find("supports CUDA 13.0"), std::string::npos) << m;
  EXPECT_NE(m.find("device.kind: cpu"), std::string::npos) << m;
}

TEST(CudaDeviceCount, AStubDriverIsAnErrorThatPointsAtTheLibraryPath) {
  const std::string m = error_of(answer(kCudaErrorStubLibrary, "cudaErrorStubLibrary", 0));
  EXPECT_NE(m.find("cudaErrorStubLibrary"), std::string::npos) << m;
  EXPECT_NE(m.find("LD_LIBRARY_PATH"), std::string::npos) << m;
  EXPECT_NE(m.find("device.kind: cpu"), std::string::npos) << m;
}

// Any other answer (here a driver/kernel-module mismatch, 803) is an error too, with
// both versions, since those are what the user compares first.
TEST(CudaDeviceCount, AnyOtherErrorNamesTheErrorAndBothVersions) {
  const std::string m = error_of(answer(803, "cudaErrorSystemDriverMismatch", 12080, 13000));
  EXPECT_NE(m.find("cudaErrorSystemDriverMismatch"), std::string::npos) << m;
  EXPECT_NE(m.find("CUDA 12.8"), std::string::npos) << m;
  EXPECT_NE(m.find("CUDA 13.0"), std::string::npos) << m;
  EXPECT_NE(m.find("nvidia-smi"), std::string::npos) << m;
}

TEST(CudaDeviceCount, VersionsReadAsMajorDotMinor) {
  EXPECT_EQ(cuda_version_text(13000), "13.0");
  EXPECT_EQ(cuda_version_text(12020), "12.2");
  EXPECT_EQ(cuda_version_text(11080), "11.8");
}

}  // namespace
}  // namespace dtrain
