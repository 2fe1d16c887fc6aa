// The start-of-run check that every rank holds the same parameters: a checksum of the
// flat parameter buffer, gathered from all ranks and compared.
#pragma once

#include <cstdint>

#include "comm/communicator.h"
#include "kernels/context.h"
#include "models/model.h"

namespace dtrain {

// FNV-1a over the bytes of `n` floats (host memory).
uint64_t checksum_floats(const float* data, int64_t n);

// Throws CommError naming the ranks whose parameters differ from rank 0's.
void verify_identical_params(const Model& model, Context& ctx, Communicator& comm);

}  // namespace dtrain
