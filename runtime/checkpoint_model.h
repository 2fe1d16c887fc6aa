// A trained model back from its checkpoint, for use outside training (dtrain sample):
// which checkpoint a run directory means, and the model its effective config
// describes with the checkpoint's parameters loaded. Nothing here reads the training
// data: a token stream's facts come from the config (token_data_facts).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kernels/context.h"
#include "models/model.h"
#include "runtime/config.h"

namespace dtrain {

// The checkpoint `path` names: the file itself, or for a folder the newest readable
// checkpoint of the run it holds: checkpoint.dir of its config.yaml when set, else
// FOLDER/checkpoints, else (a checkpoint folder itself) FOLDER. Throws DataError when
// the path does not exist or the run has no readable checkpoint, saying how to get one.
std::string find_checkpoint(const std::string& path);

struct CheckpointModel {
  std::string path;   // the checkpoint
  Config config;      // its effective config
  int64_t step = 0;   // the optimizer steps it was written after
  bool tokens_are_bytes = false;  // data.name text: the tokens are bytes of text
  int64_t vocab = 0;              // token values: ids 0 .. vocab-1
  std::unique_ptr<Model> model;   // built on the given context, parameters loaded
};

// Reads the checkpoint at `path` (read_checkpoint's DataErrors) and rebuilds its model
// on `ctx`. Only language models (model.name gpt) are rebuilt: another model is a
// ConfigError naming it, since its data facts (image shapes, classes) are not in the
// config.
CheckpointModel load_checkpoint_model(Context& ctx, const std::string& path);

}  // namespace dtrain
