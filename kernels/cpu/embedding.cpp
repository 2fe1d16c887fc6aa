// Token and position embeddings (Note [Transformer ops] in kernels/ops.h).
#include <algorithm>
#include <sstream>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/storage.h"
#include "kernels/errors.h"

namespace dtrain::cpu {

namespace {

// Channels one thread owns in backward, walking every (b, t) in order.
constexpr int64_t kColumnBlock = 64;

// Tokens come from data files, so a bad one is bad input, reported before any output
// is touched (and outside the parallel loops, where an exception may not escape).
void check_tokens(const char* op, const int32_t* tokens, int64_t batch, int64_t seq, int64_t vocab) {
  for (int64_t i = 0; i < batch * seq; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      std::ostringstream msg;
      msg << op << ": token " << tokens[i] << " at position " << i % seq << " of sequence " << i / seq
          << " of the batch is outside the vocabulary [0, " << vocab
          << "); check that the dataset was tokenised with the model's vocabulary (vocab_size)";
      throw DataError(msg.str());
    }
  }
}

template <class T>
void embedding_forward_typed(Context& ctx, const int32_t* tokens, const T* wte, const T* wpe, T* y,
                             int64_t batch, int64_t seq, int64_t channels) {
  const int64_t rows = batch * seq;
#pragma omp parallel for num_threads(ctx.num_threads()) if (rows * channels >= kParallelMinWork)
  for (int64_t i = 0; i < rows; ++i) {
    const T* te = wte + static_cast<int64_t>(tokens[i]) * channels;
    const T* pe = wpe + (i % seq) * channels;
    T* yr = y + i * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) yr[c] = narrow<T>(widen(te[c]) + widen(pe[c]));
  }
}

template <class T>
void embedding_backward_typed(Context& ctx, const T* dy, const int32_t* tokens, float* dwte, float* dwpe,
                              int64_t batch, int64_t seq, int64_t channels) {
  // Each thread owns a block of channels of every row of dwte and dwpe and adds the
  // rows of dy into them in (b, t) order: repeated tokens add in a fixed order, with no
  // atomics and no workspace, for any number of threads.
  const int64_t blocks = (channels + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for num_threads(ctx.num_threads()) if (batch * seq * channels >= kParallelMinWork)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kColumnBlock;
    const int64_t width = std::min(kColumnBlock, channels - c0);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t t = 0; t < seq; ++t) {
        const int64_t i = b * seq + t;
        const T* g = dy + i * channels + c0;
        float* te = dwte + static_cast<int64_t>(tokens[i]) * channels + c0;
        float* pe = dwpe + t * channels + c0;
#pragma omp simd
        for (int64_t j = 0; j < width; ++j) {
          const float gj = widen(g[j]);
          te[j] += gj;
          pe[j] += gj;
        }
      }
    }
  }
}

}  // namespace

void embedding_forward(Context& ctx, const int32_t* tokens, ConstTypedPtr wte, ConstTypedPtr wpe, TypedPtr y,
                       int64_t batch, int64_t seq, int64_t channels, int64_t vocab) {
  const DType type = common_type("embedding_forward", {{"wte", wte}, {"wpe", wpe}, {"y", y}});
  check_tokens("embedding_forward", tokens, batch, seq, vocab);
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    embedding_forward_typed(ctx, tokens, typed<T>(wte), typed<T>(wpe), typed<T>(y), batch, seq, channels);
  });
}

void embedding_backward(Context& ctx, ConstTypedPtr dy, const int32_t* tokens, float* dwte, float* dwpe,
                        int64_t batch, int64_t seq, int64_t channels, int64_t vocab) {
  check_tokens("embedding_backward", tokens, batch, seq, vocab);
  with_storage(dy.type, [&](auto tag) {
    embedding_backward_typed(ctx, typed<decltype(tag)>(dy), tokens, dwte, dwpe, batch, seq, channels);
  });
}

}  // namespace dtrain::cpu
