#include <ctime>
#include <filesystem>
#include <iostream>

#include "launch/job.h"
#include "runtime/trainer.h"

namespace dtrain::launch {
namespace {

std::string default_run_dir(const std::string& config_path) {
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", std::localtime(&now));
  return "runs/" + std::filesystem::path(config_path).stem().string() + "-" + stamp;
}

}  // namespace

int run_train(const CliCommand& cmd) {
  return run_job(cmd, [&](const Config& config, Process& process, DeviceSetup& device) {
    const std::string run_dir = cmd.run_dir.empty() ? default_run_dir(cmd.config_path) : cmd.run_dir;
    train(config, *device.ctx, *device.comm, process.comm(), run_dir, std::cout, device.ranks_sharing_device);
  });
}

}  // namespace dtrain::launch
