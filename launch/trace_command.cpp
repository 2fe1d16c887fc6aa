#include <iostream>

#include "kernels/errors.h"
#include "launch/job.h"
#include "runtime/trace_writer.h"

namespace dtrain::launch {

int run_trace_merge(const CliCommand& cmd) {
  const std::string run_dir = cmd.plot_runs.front();
  const std::string out = cmd.plot_out.empty() ? run_dir + "/trace.json" : cmd.plot_out;
  try {
    const int64_t events = merge_traces(run_dir + "/trace", out);
    std::cout << "dtrain: wrote " << out << " (" << events << " events); open it in chrome://tracing or ui.perfetto.dev"
              << std::endl;
    return kExitOk;
  } catch (const Error& e) {
    std::cerr << "dtrain: " << e.kind() << ": " << e.what() << std::endl;
    return e.exit_code();
  }
}

}  // namespace dtrain::launch
