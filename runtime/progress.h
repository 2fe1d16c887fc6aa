// Progress on rank 0's standard output: a bar redrawn in place when the output is a
// terminal (step, epoch, ETA, loss, samples/s, memory), plain lines every
// log.every_steps otherwise (logs, Slurm), so files never fill with redraws.
#pragma once

#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>

namespace dtrain {

struct StepProgress {
  int64_t step = 0;  // 1-based, of total
  int64_t epoch = 0;
  double loss = 0.0;
  double lr = 0.0;
  double samples_per_s = 0.0;
  double mem_mib = 0.0, peak_mib = 0.0;  // in use: what the buffers asked for
  double reserved_mib = 0.0;             // held from the device (kernels/memory.h)
};

class ProgressReporter {
 public:
  // `first_step`: where the run starts (a resumed run), so the ETA counts from there.
  ProgressReporter(std::ostream& out, bool terminal, int64_t first_step, int64_t total_steps, int64_t every_steps);

  void step(const StepProgress& p);
  // A line of its own (evaluation, checkpoint): on a terminal the bar is cleared first.
  void line(const std::string& text);
  // Ends the bar's line (before the summary).
  void finish();

  // "1h02m", "3m05s", "42s".
  static std::string duration(double seconds);

 private:
  using Clock = std::chrono::steady_clock;
  std::ostream& out_;
  bool terminal_;
  int64_t first_step_, total_steps_, every_steps_;
  Clock::time_point start_;
  Clock::time_point last_draw_{};
  bool bar_shown_ = false;
};

}  // namespace dtrain
