#include "runtime/progress.h"

#include <cmath>
#include <cstdio>

namespace dtrain {

namespace {

constexpr int kBarWidth = 24;
constexpr auto kRedrawEvery = std::chrono::milliseconds(100);  // a terminal needs no more

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

}  // namespace

ProgressReporter::ProgressReporter(std::ostream& out, bool terminal, int64_t first_step, int64_t total_steps,
                                   int64_t every_steps)
    : out_(out), terminal_(terminal), first_step_(first_step), total_steps_(total_steps), every_steps_(every_steps),
      start_(Clock::now()) {}

std::string ProgressReporter::duration(double s) {
  if (!(s >= 0) || s > 1e8) return "?";
  const auto total = static_cast<int64_t>(std::llround(s));
  char buf[32];
  if (total >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", static_cast<long long>(total / 3600),
                  static_cast<long long>(total % 3600 / 60));
  } else if (total >= 60) {
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(total / 60), static_cast<long long>(total % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%llds", static_cast<long long>(total));
  }
  return buf;
}

void ProgressReporter::step(const StepProgress& p) {
  const std::string values = "loss " + fmt("%.4f", p.loss) + " | lr " + fmt("%.4g", p.lr) + " | " +
                             fmt("%.0f", p.samples_per_s) + " samples/s | mem " + fmt("%.1f", p.mem_mib) +
                             " MiB, peak " + fmt("%.1f", p.peak_mib) + " MiB, reserved " +
                             fmt("%.1f", p.reserved_mib) + " MiB";
  if (!terminal_) {
    if (p.step % every_steps_ == 0 || p.step == total_steps_) {
      out_ << "step " << p.step << "/" << total_steps_ << " | epoch " << p.epoch << " | " << values << "\n";
      out_.flush();
    }
    return;
  }
  const auto now = Clock::now();
  if (p.step != total_steps_ && bar_shown_ && now - last_draw_ < kRedrawEvery) return;
  last_draw_ = now;
  const double done = total_steps_ > 0 ? static_cast<double>(p.step) / static_cast<double>(total_steps_) : 1.0;
  const int filled = static_cast<int>(done * kBarWidth);
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const int64_t run = p.step - first_step_;
  const double eta = run > 0 ? elapsed / static_cast<double>(run) * static_cast<double>(total_steps_ - p.step) : -1;
  out_ << "\r\033[2K[" << std::string(static_cast<size_t>(filled), '#')
       << std::string(static_cast<size_t>(kBarWidth - filled), '.') << "] " << fmt("%3.0f", 100 * done) << "% step "
       << p.step << "/" << total_steps_ << " | epoch " << p.epoch << " | ETA " << duration(eta) << " | " << values;
  out_.flush();
  bar_shown_ = true;
}

void ProgressReporter::line(const std::string& text) {
  if (terminal_ && bar_shown_) out_ << "\r\033[2K";
  out_ << text << "\n";
  out_.flush();
  bar_shown_ = false;
}

void ProgressReporter::finish() {
  if (terminal_ && bar_shown_) out_ << "\n";
  out_.flush();
  bar_shown_ = false;
}

}  // namespace dtrain
