// Placeholder until the GPT lands (branch gpt-model): build_gpt names the missing model.
#pragma once

#include <memory>

#include "kernels/errors.h"
#include "models/model.h"

namespace dtrain {

inline std::unique_ptr<Model> build_gpt(Context&, const ModelSpec&, const DataFacts&) {
  throw ConfigError("model.name: gpt is not built into this dtrain yet");
}

}  // namespace dtrain
