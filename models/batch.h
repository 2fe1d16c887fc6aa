// What a sample is, and a batch of samples on the device. A dataset says what its
// samples hold (SampleLayout): images with one label, or a window of tokens with the
// next token of each as target. The trainer moves batches without looking inside;
// the model reads them (Model::forward) and owns the loss.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/tensor.h"

namespace dtrain {

enum class ElementType : int { kFloat32 = 0, kInt32 = 1 };

inline size_t element_bytes(ElementType) { return 4; }  // both are 32-bit
inline const char* element_name(ElementType t) { return t == ElementType::kFloat32 ? "float32" : "int32"; }

struct SampleLayout {
  Shape input;                                  // per sample, e.g. (1, 28, 28) or (T)
  ElementType input_type = ElementType::kFloat32;
  Shape target;                                 // per sample, int32: () a label, (T) tokens
  int64_t input_bytes() const { return input.numel() * static_cast<int64_t>(element_bytes(input_type)); }
  int64_t target_bytes() const { return target.numel() * static_cast<int64_t>(sizeof(int32_t)); }
};

// A batch on the device, valid until the next batch is taken from its source.
struct Batch {
  int64_t size = 0;                    // samples
  const void* inputs = nullptr;        // size x layout.input, of layout.input_type
  const int32_t* targets = nullptr;    // size x layout.target
  const int64_t* sample_ids = nullptr; // size: each sample's index in its dataset
  int64_t step = 0;                    // the 0-based optimizer step (dropout keys)

  const float* float_inputs() const { return static_cast<const float*>(inputs); }
  const int32_t* token_inputs() const { return static_cast<const int32_t*>(inputs); }
};

}  // namespace dtrain
