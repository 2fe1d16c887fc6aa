#include "runtime/checkpointing.h"

#include <filesystem>
#include <span>
#include <sstream>

#include "comm/typed_collectives.h"
#include "kernels/errors.h"
#include "kernels/ops.h"
#include "runtime/setup_agreement.h"

namespace dtrain {

namespace {

std::string list_of(const std::vector<int64_t>& v) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
  s << "]";
  return s.str();
}

template <class T>
void broadcast_vector(Communicator& control, std::vector<T>& v) {
  uint64_t n = v.size();
  broadcast(control, std::span<uint64_t>(&n, 1), 0)->wait();
  v.resize(n);
  if (n > 0) broadcast(control, std::span<T>(v), 0)->wait();
}

}  // namespace

std::string checkpoint_dir_of(const Config& config, const std::string& run_dir) {
  return config.checkpoint.dir.empty() ? run_dir + "/checkpoints" : config.checkpoint.dir;
}

std::vector<std::string> resume_compat_lines(const Config& c, int64_t global_batch) {
  std::vector<std::string> lines = {"model.name: " + c.model.name, "data.name: " + c.data.name,
                                    "train.seed: " + std::to_string(c.train.seed),
                                    "optimizer.name: " + c.optimizer.name,
                                    "global batch: " + std::to_string(global_batch)};
  if (c.model.name == "mlp") {
    lines.push_back("model.hidden: " + list_of(c.model.hidden));
  } else {
    lines.push_back("model.channels: " + list_of(c.model.channels));
    lines.push_back("model.kernel_size: " + std::to_string(c.model.kernel_size));
    lines.push_back("model.cnn_hidden: " + list_of(c.model.cnn_hidden));
  }
  if (c.data.name == "synthetic" || c.data.name == "regression") {
    lines.push_back("data.train_samples: " + std::to_string(c.data.train_samples));
  }
  if (c.data.name == "regression") {
    lines.push_back("data.features: " + std::to_string(c.data.features));
    lines.push_back("data.noise: " + std::to_string(c.data.noise));
  }
  return lines;
}

uint64_t hash_lines(const std::vector<std::string>& lines) {
  uint64_t h = 1469598103934665603ull;
  for (const auto& line : lines) {
    for (unsigned char c : line + "\n") h = (h ^ c) * 1099511628211ull;
  }
  return h;
}

ResumePoint find_resume_point(const std::string& resume, const std::string& dir, Communicator& control,
                              std::ostream& log) {
  ResumePoint point;
  if (resume.empty()) return point;
  std::exception_ptr error;
  if (control.rank() == 0) {
    try {
      if (resume == "auto") {
        const ResumeChoice choice = newest_valid_checkpoint(dir);
        for (const auto& why : choice.rejected) log << "dtrain: skipping a checkpoint that does not read: " << why << "\n";
        if (choice.path) {
          point.path = *choice.path;
        } else {
          log << "dtrain: --resume auto: no valid checkpoint in " << dir << "; starting from step 0\n";
        }
      } else {
        point.path = resume;
      }
      if (!point.path.empty()) {
        point.state = read_checkpoint(point.path);
        point.found = true;
        point.global_batch = point.state.plan.global_batch;
        log << "dtrain: resuming from " << point.path << " (step " << point.state.step << ")\n";
      }
      log.flush();
    } catch (...) {
      error = std::current_exception();
    }
  }
  agree_on_setup(control, error);
  int64_t header[2] = {point.found ? 1 : 0, point.global_batch};
  broadcast(control, std::span<int64_t>(header, 2), 0)->wait();
  point.found = header[0] != 0;
  point.global_batch = header[1];
  return point;
}

void restore_from(ResumePoint& point, const Config& config, int64_t global_batch, Model& model,
                  Optimizer& optimizer, NoiseScaleEstimator& noise, Context& ctx, Communicator& control) {
  std::exception_ptr error;
  if (control.rank() == 0) {
    try {
      const std::vector<std::string> now = resume_compat_lines(config, global_batch);
      const std::vector<std::string>& then = point.state.compat;
      std::string differs;
      for (size_t i = 0; i < std::max(now.size(), then.size()); ++i) {
        const std::string a = i < then.size() ? then[i] : "(none)";
        const std::string b = i < now.size() ? now[i] : "(none)";
        if (a != b) differs += "\n  checkpoint: " + a + "\n  this run:   " + b;
      }
      if (!differs.empty()) {
        throw ConfigError("checkpoint " + point.path + " was written by a different run and cannot resume this one:" +
                          differs + "\nresume with the config it was written with, or start afresh without --resume");
      }
      if (static_cast<int64_t>(point.state.params.size()) != model.param_count() ||
          point.state.optimizer_state.size() != optimizer.state_buffers().size()) {
        throw ConfigError("checkpoint " + point.path + " holds " + std::to_string(point.state.params.size()) +
                          " parameters and " + std::to_string(point.state.optimizer_state.size()) +
                          " optimizer buffers; this model has " + std::to_string(model.param_count()) + " and " +
                          std::to_string(optimizer.state_buffers().size()));
      }
      // Each optimizer buffer is copied whole into one of param_count floats.
      for (size_t i = 0; i < point.state.optimizer_state.size(); ++i) {
        if (static_cast<int64_t>(point.state.optimizer_state[i].size()) != model.param_count()) {
          throw ConfigError("checkpoint " + point.path + ": optimizer buffer " + std::to_string(i) + " holds " +
                            std::to_string(point.state.optimizer_state[i].size()) + " values, not the model's " +
                            std::to_string(model.param_count()) + "; the file is not one dtrain wrote for this run");
        }
      }
    } catch (...) {
      error = std::current_exception();
    }
  }
  agree_on_setup(control, error);

  CheckpointState& s = point.state;
  int64_t counters[4] = {s.step, s.samples, s.optimizer_steps, s.noise_steps};
  broadcast(control, std::span<int64_t>(counters, 4), 0)->wait();
  broadcast(control, std::span<double>(s.noise.data(), s.noise.size()), 0)->wait();
  broadcast_vector(control, s.params);
  s.optimizer_state.resize(optimizer.state_buffers().size());
  for (auto& buffer : s.optimizer_state) broadcast_vector(control, buffer);
  s.step = counters[0];
  s.samples = counters[1];
  s.optimizer_steps = counters[2];
  s.noise_steps = counters[3];

  model.load_params(s.params.data(), static_cast<int64_t>(s.params.size()));
  model.zero_grads();
  const std::vector<float*> buffers = optimizer.state_buffers();
  const FlatRange shard = optimizer.shard();
  for (size_t i = 0; i < buffers.size(); ++i) {
    ops::copy_from_host(ctx, buffers[i], s.optimizer_state[i].data() + shard.offset,
                        static_cast<size_t>(shard.count) * sizeof(float));
  }
  optimizer.set_steps_taken(s.optimizer_steps);
  noise.restore({s.noise[0], s.noise[1], s.noise[2], s.noise_steps});
  ctx.synchronize();
}

namespace {

// `mine` (this rank's range of an n-float buffer, its values on the device) gathered
// whole on rank 0 from every rank's range in `shards`; empty elsewhere.
std::vector<float> gather_ranges(const float* mine, const FlatRange& range, const std::vector<FlatRange>& shards,
                                 int64_t n, Context& ctx, Communicator& control) {
  const bool leader = control.rank() == 0;
  std::vector<float> own(static_cast<size_t>(range.count));
  ops::copy_to_host(ctx, own.data(), mine, own.size() * sizeof(float));
  std::vector<float> full(leader ? static_cast<size_t>(n) : 0);
  constexpr int64_t kChunk = int64_t{1} << 22;  // floats: 16 MiB
  std::vector<float> scratch;
  for (size_t r = 0; r < shards.size(); ++r) {
    const FlatRange& owner = shards[r];
    for (int64_t at = 0; at < owner.count; at += kChunk) {
      const int64_t count = std::min(kChunk, owner.count - at);
      float* data;
      if (static_cast<int>(r) == control.rank()) {
        data = own.data() + at;
        if (leader) std::copy(data, data + count, full.begin() + owner.offset + at);
      } else if (leader) {
        data = full.data() + owner.offset + at;
      } else {
        scratch.resize(static_cast<size_t>(count));
        data = scratch.data();
      }
      broadcast(control, std::span<float>(data, static_cast<size_t>(count)), static_cast<int>(r))->wait();
    }
  }
  return full;
}

// A whole buffer of rank 0's device memory on the host; empty elsewhere.
std::vector<float> leader_copy(const float* whole, int64_t n, Context& ctx, const Communicator& control) {
  if (control.rank() != 0) return {};
  std::vector<float> host(static_cast<size_t>(n));
  ops::copy_to_host(ctx, host.data(), whole, host.size() * sizeof(float));
  return host;
}

}  // namespace

GatheredState gather_training_state(const Model& model, Optimizer& optimizer, const std::vector<FlatRange>& shards,
                                    Context& ctx, Communicator& control) {
  const int64_t n = model.param_count();
  GatheredState g;
  g.params = model.master_is_sharded() ? gather_ranges(model.master(), model.master_range(), shards, n, ctx, control)
                                       : leader_copy(model.params(), n, ctx, control);
  for (float* buffer : optimizer.state_buffers()) {
    g.optimizer_state.push_back(shards.empty() ? leader_copy(buffer, n, ctx, control)
                                               : gather_ranges(buffer, optimizer.shard(), shards, n, ctx, control));
  }
  return g;
}

CheckpointState capture_state(const Config& config, const BatchPlan& plan, int64_t step, int64_t samples,
                              int64_t steps_per_epoch, const Optimizer& optimizer, GatheredState whole,
                              const NoiseScaleEstimator& noise) {
  CheckpointState s;
  s.step = step;
  s.samples = samples;
  s.seed = config.train.seed;
  s.compat = resume_compat_lines(config, plan.global_batch);
  s.config_hash = hash_lines(s.compat);
  s.config_yaml = config_to_yaml(config);
  s.plan = plan;
  s.steps_per_epoch = steps_per_epoch;
  s.epoch = step / steps_per_epoch;
  s.batch_in_epoch = step % steps_per_epoch;
  s.params = std::move(whole.params);
  s.optimizer_state = std::move(whole.optimizer_state);
  s.optimizer_steps = optimizer.steps_taken();
  const NoiseScaleEstimator::State n = noise.state();
  s.noise = {n.gradient_sq_ema, n.trace_ema, n.weight};
  s.noise_steps = n.steps;
  return s;
}

std::string save_checkpoint(const Config& config, const std::string& dir, const CheckpointState* state,
                            int64_t step, Communicator& control, std::ostream& log) {
  std::exception_ptr error;
  std::string written;
  if (control.rank() == 0) {
    const std::string path = checkpoint_path(dir, step);
    try {
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      if (ec) {
        throw StorageError("cannot write checkpoint " + path + ": cannot create " + dir + ": " + ec.message() +
                           "; the previous checkpoints are kept. Check checkpoint.dir (writable, space left)");
      }
      write_checkpoint(path, *state);
      rotate_checkpoints(dir, config.checkpoint.keep);
      written = path;
      log << "dtrain: checkpoint " << path << "\n";
    } catch (const StorageError& e) {
      if (config.checkpoint.on_error == "stop") {
        error = std::current_exception();
      } else {
        log << "dtrain: " << e.what() << " (checkpoint.on_error: continue, so training goes on)\n";
      }
    } catch (...) {
      error = std::current_exception();
    }
    log.flush();
  }
  agree_on_setup(control, error);
  return written;
}

}  // namespace dtrain
