// The timeline (log.trace: true): a Chrome-trace JSON file per rank (chrome://tracing,
// Perfetto) with a complete event ("ph":"X") per phase of every step: data, forward,
// backward, each bucket's all-reduce, the optimizer step, evaluation, checkpoints.
// Events are queued under a mutex held for a push, and a background thread writes
// them, so the training thread never waits for the disk. Times are host times: on a
// GPU, when the work was queued, not when it ran. Where the device keeps a timeline
// (Note [Device timeline], kernels/device_timeline.h: a GPU, cpu-async), a second row,
// "device", has when each step's micro-steps and update ran, each with the host's
// lead when its last work was queued.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace dtrain {

class TraceWriter {
 public:
  using Clock = std::chrono::steady_clock;

  // Writes PATH (a JSON array) for `rank`; the file is complete once the writer is
  // destroyed. Throws DataError when PATH cannot be created.
  TraceWriter(const std::string& path, int rank);
  ~TraceWriter();
  TraceWriter(const TraceWriter&) = delete;
  TraceWriter& operator=(const TraceWriter&) = delete;

  // One complete event from `start` to `end`, with the step as its argument.
  void complete(const std::string& name, const char* category, Clock::time_point start, Clock::time_point end,
                int64_t step);
  // A span of the device row (category "device"), with the host's lead in ms.
  void device_span(const std::string& name, Clock::time_point start, Clock::time_point end, int64_t step,
                   double host_lead_ms);

 private:
  struct Event {
    std::string name;
    const char* category;
    int64_t start_us, duration_us, step;
    int track = 0;            // 0: the host's row; 1: the device's
    double host_lead_ms = 0;  // device spans only
  };
  void push(Event e);
  int64_t us(Clock::time_point t) const;
  void run();
  void write(const std::vector<Event>& events);

  std::ofstream out_;
  int rank_;
  Clock::time_point origin_;
  int64_t origin_wall_us_;  // the wall clock at origin_: ranks' files line up when merged
  std::mutex mu_;
  std::condition_variable ready_;
  std::vector<Event> queue_;
  bool stop_ = false;
  bool first_ = true;
  bool device_row_named_ = false;  // the writer thread's
  std::thread thread_;
};

// Times a scope into a writer (nothing when the writer is null).
class TraceScope {
 public:
  TraceScope(TraceWriter* writer, const char* name, const char* category, int64_t step)
      : writer_(writer), name_(name), category_(category), step_(step),
        start_(writer ? TraceWriter::Clock::now() : TraceWriter::Clock::time_point{}) {}
  ~TraceScope() {
    if (writer_) writer_->complete(name_, category_, start_, TraceWriter::Clock::now(), step_);
  }
  TraceScope(const TraceScope&) = delete;
  TraceScope& operator=(const TraceScope&) = delete;

 private:
  TraceWriter* writer_;
  const char* name_;
  const char* category_;
  int64_t step_;
  TraceWriter::Clock::time_point start_;
};

// `dtrain trace merge`: the per-rank files of RUN_DIR/trace/ side by side (one process
// row per rank) in one file. Returns the number of events; throws DataError naming a
// file that is missing or unreadable.
int64_t merge_traces(const std::string& trace_dir, const std::string& out_path);

}  // namespace dtrain
