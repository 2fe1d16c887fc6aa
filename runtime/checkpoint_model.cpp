#include "runtime/checkpoint_model.h"

#include <filesystem>
#include <system_error>

#include "kernels/errors.h"
#include "runtime/checkpoint.h"
#include "runtime/text_dataset.h"

namespace dtrain {
namespace {

namespace fs = std::filesystem;

// How a run gets a checkpoint, for the error that finds none.
constexpr const char* kHowToCheckpoint =
    "training writes one every checkpoint.every_steps steps and at the end of the run when that key is set "
    "(dtrain train CONFIG.yaml --set checkpoint.every_steps=500), and on a stop signal";

std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& l : lines) out += "\n  " + l;
  return out;
}

}  // namespace

std::string find_checkpoint(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (fs::is_regular_file(st)) return path;
  if (!fs::is_directory(st)) {
    throw DataError(path + " does not exist; give a run directory (dtrain train --run-dir) or a checkpoint file");
  }
  std::string dir = path + "/checkpoints";
  const std::string config_file = path + "/config.yaml";
  if (fs::is_regular_file(config_file, ec)) {
    const Config config = load_config(config_file, {});
    if (!config.checkpoint.dir.empty()) dir = config.checkpoint.dir;
  } else if (!fs::is_directory(dir, ec) && !list_checkpoints(path).empty()) {
    dir = path;  // a checkpoint folder itself
  }
  const ResumeChoice choice = newest_valid_checkpoint(dir);
  if (choice.path) return *choice.path;
  if (!choice.rejected.empty()) {
    throw DataError("no readable checkpoint in " + dir + ":" + joined(choice.rejected));
  }
  throw DataError("no checkpoint in " + dir + " (of run " + path + "): " + kHowToCheckpoint);
}

CheckpointModel load_checkpoint_model(Context& ctx, const std::string& path) {
  CheckpointState state = read_checkpoint(path);
  CheckpointModel out;
  out.path = path;
  out.step = state.step;
  out.config = load_config_from_string(state.config_yaml, path + " (its config)");
  const Config& config = out.config;
  if (config.model.name != "gpt") {
    throw ConfigError("checkpoint " + path + " holds a '" + config.model.name + "' model (model.name), a classifier of " +
                      config.data.name + " data that cannot generate text; sample from a model.name: gpt checkpoint");
  }
  const DataFacts facts = token_data_facts(config.data, config.model);
  out.tokens_are_bytes = facts.tokens_are_bytes;
  out.vocab = facts.classes;
  out.model = build_model(ctx, config.model, facts);
  out.model->load_params(state.params.data(), static_cast<int64_t>(state.params.size()));
  return out;
}

}  // namespace dtrain
