#include <iostream>

#include "launch/job.h"
#include "runtime/plan_report.h"
#include "runtime/training_setup.h"

namespace dtrain::launch {

int run_plan(const CliCommand& cmd) {
  return run_job(cmd, [&](const Config& config, Process& process, DeviceSetup& device) {
    const TrainingSetup setup =
        setup_training(config, *device.ctx, process.comm(), device.ranks_sharing_device, /*run_dir=*/"");
    if (process.rank() != 0) return;
    const PlanSummary summary = setup.summary(config);
    std::cout << (cmd.json ? plan_json(summary) : plan_text(summary));
    std::cout.flush();
  });
}

}  // namespace dtrain::launch
