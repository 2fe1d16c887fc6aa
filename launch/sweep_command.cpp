// `dtrain sweep CONFIG --target KEY=VALUE ...`: one training run per global batch (and
// seed) to the target, in one MPI job. Every rank runs every point in the same order
// through train(), so a point uses all the ranks; rank 0 alone reads and writes the
// sweep directory and broadcasts what it found there (the ranks need no shared file
// system). Before any run: one collective setup at train.global_batch auto gives each
// rank's capacity, the epoch's samples and the evaluation's metrics, against which the
// target and every batch of the ladder are checked.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "comm/typed_collectives.h"
#include "kernels/errors.h"
#include "launch/gnuplot.h"
#include "launch/job.h"
#include "runtime/sweep_fit.h"
#include "runtime/sweep_ladder.h"
#include "runtime/sweep_report.h"
#include "runtime/training_setup.h"

namespace dtrain::launch {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// What the ranks learn before any run.
struct Preflight {
  std::vector<int64_t> capacity;  // per rank (micro_batch auto)
  int64_t largest_plain = 0;      // G at k = 1
  int64_t train_samples = 0;
  std::vector<std::string> metric_keys;
};

Preflight preflight(const Config& config, Process& process, DeviceSetup& device) {
  Config probe = config;
  probe.train.global_batch = kAuto;
  // The memory model's capacity, without a probe step at it: no point trains this
  // setup (each plans and probes its own batch), and on a CPU a probe at the GPT's
  // largest micro-batch took 2 minutes and 10 GiB a rank before the first point.
  const TrainingSetup setup = setup_training(probe, *device.ctx, process.comm(), device.ranks_sharing_device,
                                             /*run_dir=*/"", /*probe_step=*/false);
  Preflight p;
  p.capacity = setup.plan().micro_batch;
  p.largest_plain = setup.plan().global_batch;
  p.train_samples = setup.data.train->size();
  p.metric_keys = eval_metric_keys(setup.model->eval_metrics(0.0, 0.0, 1));
  return p;
}

// An error every rank finds alike; rank 0 reports it.
template <class E>
[[noreturn]] void agreed(const std::string& what, bool leader) {
  E e(what);
  e.set_agreed(leader);
  throw e;
}

std::string read_line(const fs::path& file) {
  std::ifstream in(file);
  std::string line;
  std::getline(in, line);
  return line;
}

double read_number(const fs::path& file) {
  std::ifstream in(file);
  double v = 0.0;
  in >> v;
  return in ? v : 0.0;
}

// k of the run's plan, from its plan.json.
int64_t planned_accumulation(const fs::path& run_dir) {
  std::ifstream in(run_dir / "plan.json");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string tag = "\"accumulation_steps\": ";
  const size_t at = text.find(tag);
  return at == std::string::npos ? 0 : std::strtoll(text.c_str() + at + tag.size(), nullptr, 10);
}

std::string command_line(const CliCommand& cmd) {
  std::ostringstream out;
  out << "dtrain sweep " << cmd.config_path << " --target " << cmd.sweep.target << " --batches " << cmd.sweep.batches
      << " --seeds " << cmd.sweep.seeds;
  if (!cmd.sweep.lr_scaling.empty()) out << " --lr-scaling " << cmd.sweep.lr_scaling;
  if (cmd.sweep.max_epochs > 0) out << " --max-epochs " << cmd.sweep.max_epochs;
  for (const std::string& o : cmd.overrides) out << " --set '" << o << "'";
  return out.str();
}

struct Point {
  int64_t batch = 0, seed = 0;
};

class SweepRunner {
 public:
  SweepRunner(const CliCommand& cmd, const Config& config, Process& process, DeviceSetup& device)
      : cmd_(cmd), config_(config), process_(process), device_(device), leader_(process.rank() == 0),
        dir_(cmd.sweep.dir.empty() ? "sweeps/" + fs::path(cmd.config_path).stem().string() : cmd.sweep.dir) {}

  // False when a stop signal ended a point (after its checkpoint).
  bool run();

 private:
  std::vector<int64_t> ladder(const Preflight& p) const;
  std::vector<std::string> point_overrides(const Point& point, const Preflight& p) const;
  std::vector<int64_t> finished_points(const std::vector<Point>& points) const;
  void report(const std::vector<Point>& points, const Preflight& p) const;

  const CliCommand& cmd_;
  const Config& config_;
  Process& process_;
  DeviceSetup& device_;
  const bool leader_;
  const fs::path dir_;
  EvalTarget target_;
};

std::vector<int64_t> SweepRunner::ladder(const Preflight& p) const {
  const int n = process_.size();
  std::vector<int64_t> batches;
  if (cmd_.sweep.batches == "auto") {
    for (int64_t b : auto_batch_ladder(p.largest_plain, n)) {
      if (b > p.train_samples) {
        if (leader_) {
          std::cout << "dtrain sweep: batch " << b << " left out of the auto ladder: an epoch has only "
                    << p.train_samples << " samples\n";
        }
        continue;
      }
      batches.push_back(b);
    }
  } else {
    try {
      batches = parse_batch_list(cmd_.sweep.batches);
    } catch (const UsageError& e) {
      agreed<UsageError>(e.what(), leader_);
    }
  }
  std::string bad;
  for (int64_t b : batches) {
    if (const auto why = batch_unplannable(b, p.capacity, config_.train.micro_batch, n, p.train_samples)) {
      bad += "\n  batch " + std::to_string(b) + ": " + *why;
    }
  }
  if (!bad.empty()) {
    agreed<UsageError>("--batches " + cmd_.sweep.batches + ": these global batches cannot be planned on " +
                           std::to_string(n) + " rank(s):" + bad + "\nno run was started; change --batches",
                       leader_);
  }
  return batches;
}

std::vector<std::string> SweepRunner::point_overrides(const Point& point, const Preflight& p) const {
  std::vector<std::string> o = cmd_.overrides;
  o.push_back("train.global_batch=" + std::to_string(point.batch));
  o.push_back("train.seed=" + std::to_string(point.seed));
  if (cmd_.sweep.max_epochs > 0) o.push_back("train.epochs=" + std::to_string(cmd_.sweep.max_epochs));
  const std::string scaling = cmd_.sweep.lr_scaling.empty() ? config_.optimizer.lr_scaling : cmd_.sweep.lr_scaling;
  if (!cmd_.sweep.lr_scaling.empty()) o.push_back("optimizer.lr_scaling=" + scaling);
  if (scaling != "none" && config_.optimizer.base_batch == 0) {
    if (config_.train.global_batch == kAuto) {
      agreed<UsageError>("--lr-scaling " + scaling + " needs optimizer.base_batch (the batch optimizer.lr was " +
                             "tuned for), and train.global_batch is auto; set --set optimizer.base_batch=N",
                         leader_);
    }
    o.push_back("optimizer.base_batch=" + std::to_string(config_.train.global_batch));
  }
  if (config_.checkpoint.every_steps == 0) {
    const int64_t per_epoch = std::max<int64_t>(1, p.train_samples / point.batch);
    o.push_back("checkpoint.every_steps=" + std::to_string(std::max<int64_t>(1, per_epoch / 4)));
  }
  return o;
}

// Rank 0 reads which points have a record (1) and broadcasts it; a record of another
// target is an error (the sweep directory belongs to another sweep).
std::vector<int64_t> SweepRunner::finished_points(const std::vector<Point>& points) const {
  std::vector<int64_t> done(points.size() + 1, 0);  // the last entry: a conflict
  std::string conflict;
  if (leader_) {
    for (size_t i = 0; i < points.size(); ++i) {
      const fs::path record = dir_ / sweep_point_dir(points[i].batch, points[i].seed) / "point.json";
      if (!fs::exists(record)) continue;
      const SweepRecord r = parse_sweep_record(read_line(record), record.string());
      if (r.target != target_.describe()) {
        conflict = record.string() + " was made for the target " + r.target + ", not " + target_.describe() +
                   "; give another --dir, or delete that sweep";
        done.back() = 1;
      }
      done[i] = 1;
    }
  }
  broadcast(process_.comm(), std::span<int64_t>(done), 0)->wait();
  if (done.back() != 0) agreed<ConfigError>(leader_ ? conflict : "another sweep's directory", leader_);
  done.pop_back();
  return done;
}

void SweepRunner::report(const std::vector<Point>& points, const Preflight& p) const {
  SweepSummary s;
  s.target = target_;
  s.command = command_line(cmd_);
  s.world_size = process_.size();
  s.train_samples = p.train_samples;
  s.largest_plain = p.largest_plain;
  std::vector<SweepPoint> fit_points;
  for (const Point& point : points) {
    const fs::path record = dir_ / sweep_point_dir(point.batch, point.seed) / "point.json";
    s.records.push_back(parse_sweep_record(read_line(record), record.string()));
    const SweepRecord& r = s.records.back();
    fit_points.push_back({r.batch, r.seed, r.reached, r.steps});
  }
  s.fit = fit_sweep(fit_points);
  std::ofstream(dir_ / "sweep.json") << sweep_json(s);
  std::ofstream(dir_ / "report.md") << sweep_report_markdown(s, "sweep.png");
  std::cout << "\ndtrain sweep: " << s.records.size() << " point(s) to " << target_.describe() << "\n";
  std::cout << "  batch  seed  k  reached     steps    epochs   wall s  final  B_simple\n";
  for (const SweepRecord& r : s.records) {
    char line[160];
    std::snprintf(line, sizeof(line), "  %5lld  %4lld  %lld  %-7s  %8lld  %8.3g  %7.1f  %.4g  %.3g\n",
                  static_cast<long long>(r.batch), static_cast<long long>(r.seed),
                  static_cast<long long>(r.accumulation), r.reached ? "yes" : "no",
                  static_cast<long long>(r.steps), r.epochs, r.wall_s, r.final_metric, r.b_simple);
    std::cout << line;
  }
  for (const std::string& note : s.fit.notes) std::cout << "dtrain sweep: " << note << "\n";
  if (s.fit.ok) {
    std::cout << "dtrain sweep: fit S_min " << s.fit.s_min.value << " steps, E_min " << s.fit.e_min.value
              << " samples, B_crit " << s.fit.b_crit.value << " (" << s.fit.b_crit.low << "-" << s.fit.b_crit.high
              << "; " << s.fit.uncertainty << ")\n";
  }
  std::cout << "dtrain sweep: " << sweep_verdict(s) << "\n";
  // gnuplot cannot scale log axes without a point; say so instead of passing on its errors.
  const bool any_reached = std::any_of(s.records.begin(), s.records.end(), [](const SweepRecord& r) { return r.reached; });
  if (!any_reached) std::cout << "dtrain sweep: no picture: no run reached the target\n";
  const bool drawn = any_reached && run_gnuplot(sweep_gnuplot_script(s, (dir_ / "sweep.png").string()));
  std::cout << "dtrain sweep: wrote " << (dir_ / "sweep.json").string() << ", " << (dir_ / "report.md").string()
            << (drawn ? ", " + (dir_ / "sweep.png").string() : std::string()) << std::endl;
}

bool SweepRunner::run() {
  const Preflight p = preflight(config_, process_, device_);
  try {
    target_ = parse_eval_target(cmd_.sweep.target, p.metric_keys);
  } catch (const UsageError& e) {
    agreed<UsageError>(std::string(e.what()) + "; no run was started", leader_);
  }
  std::vector<Point> points;
  for (int64_t b : ladder(p)) {
    for (int64_t s = 0; s < cmd_.sweep.seeds; ++s) {
      points.push_back({b, static_cast<int64_t>(config_.train.seed) + s});
    }
  }
  const std::vector<int64_t> done = finished_points(points);
  if (leader_) {
    fs::create_directories(dir_);
    std::cout << "dtrain sweep: " << points.size() << " point(s) to " << target_.describe() << " in "
              << dir_.string() << "; the largest batch without accumulation is " << p.largest_plain << "\n";
  }
  JobTrainer trainer(config_, process_, device_);
  for (size_t i = 0; i < points.size(); ++i) {
    const Point& point = points[i];
    const fs::path run_dir = dir_ / sweep_point_dir(point.batch, point.seed);
    if (done[i] != 0) {
      if (leader_) std::cout << "dtrain sweep: batch " << point.batch << ", seed " << point.seed << ": finished before, skipped\n";
      continue;
    }
    if (leader_) {
      std::cout << "\ndtrain sweep: point " << i + 1 << " of " << points.size() << ": batch " << point.batch
                << ", seed " << point.seed << "\n";
      std::cout.flush();
    }
    const Config config = load_config(cmd_.config_path, point_overrides(point, p));
    const auto t0 = Clock::now();
    const TrainResult result = trainer.train(config, run_dir.string(), "auto", &target_);
    if (!leader_) {
      if (result.stopped) return false;
      continue;
    }
    // The wall time of a point interrupted before is carried over in wall_s.
    const double wall = read_number(run_dir / "wall_s") + std::chrono::duration<double>(Clock::now() - t0).count();
    if (result.stopped) {
      std::ofstream(run_dir / "wall_s") << wall << "\n";
      return false;
    }
    SweepRecord r;
    r.batch = point.batch;
    r.seed = point.seed;
    r.accumulation = planned_accumulation(run_dir);
    r.reached = result.reached_target;
    r.steps = result.steps;
    r.samples = result.steps * point.batch;
    r.epochs = static_cast<double>(r.samples) / static_cast<double>(p.train_samples);
    r.wall_s = wall;
    r.final_metric = eval_metric_value(target_.key, result.eval_loss, result.eval_metrics);
    r.b_simple = result.noise_scale;
    r.target = target_.describe();
    // Written through a temporary file and a rename: a record is whole or absent.
    const fs::path tmp = run_dir / "point.json.tmp";
    std::ofstream(tmp) << sweep_record_json(r) << "\n";
    fs::rename(tmp, run_dir / "point.json");
  }
  if (leader_) report(points, p);
  return true;
}

}  // namespace

int run_sweep(const CliCommand& cmd) {
  bool stopped = false, leader = false;
  const int code = run_job(cmd, [&](const Config& config, Process& process, DeviceSetup& device) {
    leader = process.rank() == 0;
    stopped = !SweepRunner(cmd, config, process, device).run();
  });
  if (code == kExitOk && stopped) {
    if (leader) {
      std::cout << "dtrain sweep: stopped after a checkpoint (exit code " << kExitStopped
                << "); run the same command again to go on" << std::endl;
    }
    return kExitStopped;
  }
  return code;
}

}  // namespace dtrain::launch
