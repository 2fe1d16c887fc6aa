#include "runtime/trace_writer.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "kernels/errors.h"

namespace dtrain {

namespace {

std::string escaped(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 32) out += c;
  }
  return out;
}

}  // namespace

TraceWriter::TraceWriter(const std::string& path, int rank)
    : out_(path, std::ios::trunc), rank_(rank), origin_(Clock::now()),
      origin_wall_us_(std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count()) {
  if (!out_) throw DataError("cannot create trace file " + path + ": " + std::strerror(errno) + "; check the run directory");
  // Metadata: the process row is named after the rank.
  out_ << "[\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":" << rank_ << ",\"tid\":0,\"args\":{\"name\":\"rank "
       << rank_ << "\"}}";
  first_ = false;
  thread_ = std::thread([this] { run(); });
}

TraceWriter::~TraceWriter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  ready_.notify_all();
  if (thread_.joinable()) thread_.join();
  out_ << "\n]\n";
}

int64_t TraceWriter::us(Clock::time_point t) const {
  return origin_wall_us_ + std::chrono::duration_cast<std::chrono::microseconds>(t - origin_).count();
}

void TraceWriter::push(Event e) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(e));
  }
  ready_.notify_one();
}

void TraceWriter::complete(const std::string& name, const char* category, Clock::time_point start,
                           Clock::time_point end, int64_t step) {
  push(Event{name, category, us(start), std::max<int64_t>(0, us(end) - us(start)), step});
}

void TraceWriter::device_span(const std::string& name, Clock::time_point start, Clock::time_point end,
                              int64_t step, double host_lead_ms) {
  push(Event{name, "device", us(start), std::max<int64_t>(0, us(end) - us(start)), step, 1, host_lead_ms});
}

void TraceWriter::run() {
  std::vector<Event> batch;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      ready_.wait_for(lock, std::chrono::milliseconds(200), [this] { return stop_ || queue_.size() >= 256; });
      batch.swap(queue_);
      if (batch.empty() && stop_) return;
    }
    write(batch);
    batch.clear();
  }
}

void TraceWriter::write(const std::vector<Event>& events) {
  for (const Event& e : events) {
    if (e.track == 1 && !device_row_named_) {
      out_ << ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":" << rank_
           << ",\"tid\":1,\"args\":{\"name\":\"device (when the work ran)\"}}";
      device_row_named_ = true;
    }
    out_ << ",\n{\"name\":\"" << escaped(e.name) << "\",\"cat\":\"" << e.category << "\",\"ph\":\"X\",\"ts\":"
         << e.start_us << ",\"dur\":" << e.duration_us << ",\"pid\":" << rank_ << ",\"tid\":" << e.track
         << ",\"args\":{\"step\":" << e.step;
    if (e.track == 1) out_ << ",\"host_lead_ms\":" << e.host_lead_ms;
    out_ << "}}";
  }
  out_.flush();
}

int64_t merge_traces(const std::string& trace_dir, const std::string& out_path) {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(trace_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("rank-", 0) == 0 && name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0) {
      files.push_back(entry.path().string());
    }
  }
  if (ec || files.empty()) {
    throw DataError("no rank-*.json traces in " + trace_dir + "; train with --set log.trace=true first");
  }
  std::sort(files.begin(), files.end());
  std::ofstream out(out_path, std::ios::trunc);
  if (!out) throw DataError("cannot write " + out_path + ": " + std::strerror(errno));
  out << "[";
  int64_t events = 0;
  for (const std::string& file : files) {
    std::ifstream in(file);
    if (!in) throw DataError("cannot read trace " + file);
    // Every event is one line starting with '{' (the writer's layout).
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line.back() == ',') line.pop_back();
      if (line.empty() || line[0] == ',') line.erase(0, line.empty() ? 0 : 1);
      if (line.empty() || line[0] != '{') continue;
      out << (events++ ? ",\n" : "\n") << line;
    }
  }
  out << "\n]\n";
  return events;
}

}  // namespace dtrain
