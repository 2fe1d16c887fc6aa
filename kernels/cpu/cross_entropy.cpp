#include <cmath>
#include <cstdint>
#include <sstream>
#include <type_traits>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/storage.h"
#include "kernels/errors.h"

namespace dtrain::cpu {

namespace {

// Labels come from data files, so a bad one is bad input, reported before any output
// is touched (and outside the parallel loop, where an exception may not escape).
void check_labels(const int32_t* labels, int64_t batch, int64_t classes) {
  for (int64_t r = 0; r < batch; ++r) {
    if (labels[r] < 0 || labels[r] >= classes) {
      std::ostringstream msg;
      msg << "softmax_cross_entropy: label " << labels[r] << " at row " << r
          << " of the batch is outside [0, " << classes
          << "); check that the dataset's labels match the model's number of classes";
      throw DataError(msg.str());
    }
  }
}

// Per-row losses go to row_loss; returns the number of rows whose argmax is the label.
template <class T>
int64_t softmax_cross_entropy_rows(Context& ctx, const T* logits, const int32_t* labels, int64_t batch,
                                   int64_t classes, float grad_scale, T* dlogits, double* row_loss) {
  int64_t correct = 0;
#pragma omp parallel for num_threads(ctx.num_threads()) reduction(+ : correct) \
    if (batch * classes >= kParallelMinWork)
  for (int64_t r = 0; r < batch; ++r) {
    const T* z = logits + r * classes;
    const int32_t label = labels[r];
    const float z_label = widen(z[label]);  // read before dlogits, which may be the logits, is written
    float mx = widen(z[0]);
    int64_t arg = 0;
    for (int64_t c = 1; c < classes; ++c) {
      if (widen(z[c]) > mx) {
        mx = widen(z[c]);
        arg = c;
      }
    }
    // Shifting by the max keeps every exponent <= 0: no overflow for any logits.
    double sum = 0.0;
    if (dlogits == nullptr) {
      for (int64_t c = 0; c < classes; ++c) sum += std::exp(widen(z[c]) - mx);
    } else if constexpr (std::is_same_v<T, float>) {
      float* d = dlogits + r * classes;
      for (int64_t c = 0; c < classes; ++c) {
        d[c] = std::exp(z[c] - mx);
        sum += d[c];
      }
      const auto scale = static_cast<float>(grad_scale / sum);
      for (int64_t c = 0; c < classes; ++c) d[c] *= scale;
      d[label] -= grad_scale;
    } else {
      // A bf16 dlogits cannot hold the fp32 exponentials between the two passes, so
      // the second pass computes them again (the same bits), scales them as the fp32
      // pass does and rounds once. Element c of the logits is read before it is written.
      for (int64_t c = 0; c < classes; ++c) sum += std::exp(widen(z[c]) - mx);
      const auto scale = static_cast<float>(grad_scale / sum);
      T* d = dlogits + r * classes;
      for (int64_t c = 0; c < classes; ++c) {
        float g = std::exp(widen(z[c]) - mx);
        g *= scale;
        if (c == label) g -= grad_scale;
        d[c] = narrow<T>(g);
      }
    }
    // loss = logsumexp(z) - z[label] = log(sum) + (mx - z[label])
    row_loss[r] = std::log(sum) + (static_cast<double>(mx) - static_cast<double>(z_label));
    correct += arg == label ? 1 : 0;
  }
  return correct;
}

}  // namespace

void softmax_cross_entropy(Context& ctx, ConstTypedPtr logits, const int32_t* labels,
                           int64_t batch, int64_t classes, float grad_scale, TypedPtr dlogits,
                           double* stats, double loss_weight) {
  const DType type = common_type("softmax_cross_entropy", {{"logits", logits}, {"dlogits", dlogits}});
  if (batch == 0) return;
  check_labels(labels, batch, classes);
  // Per-row losses are summed serially afterwards so the total does not depend on how
  // rows were split over threads (the correct count is an exact integer either way).
  auto* row_loss = static_cast<double*>(ctx.workspace(static_cast<size_t>(batch) * sizeof(double)));
  int64_t correct = 0;
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    correct = softmax_cross_entropy_rows(ctx, typed<T>(logits), labels, batch, classes, grad_scale,
                                         typed<T>(dlogits), row_loss);
  });
  double loss = 0.0;
  for (int64_t r = 0; r < batch; ++r) loss += row_loss[r];
  stats[0] += loss_weight * loss;
  stats[1] += loss_weight * static_cast<double>(correct);
}

}  // namespace dtrain::cpu
