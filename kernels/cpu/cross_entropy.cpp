#include <cmath>
#include <cstdint>
#include <sstream>

#include "kernels/cpu/cpu_ops.h"
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

}  // namespace

void softmax_cross_entropy(Context& ctx, const float* logits, const int32_t* labels,
                           int64_t batch, int64_t classes, float grad_scale, float* dlogits,
                           double* stats, double loss_weight) {
  if (batch == 0) return;
  check_labels(labels, batch, classes);
  // Per-row losses are summed serially afterwards so the total does not depend on how
  // rows were split over threads (the correct count is an exact integer either way).
  auto* row_loss = static_cast<double*>(ctx.workspace(static_cast<size_t>(batch) * sizeof(double)));
  int64_t correct = 0;
#pragma omp parallel for num_threads(ctx.num_threads()) reduction(+ : correct) \
    if (batch * classes >= kParallelMinWork)
  for (int64_t r = 0; r < batch; ++r) {
    const float* z = logits + r * classes;
    const int32_t label = labels[r];
    const float z_label = z[label];  // read before dlogits, which may be the logits, is written
    float mx = z[0];
    int64_t arg = 0;
    for (int64_t c = 1; c < classes; ++c) {
      if (z[c] > mx) {
        mx = z[c];
        arg = c;
      }
    }
    // Shifting by the max keeps every exponent <= 0: no overflow for any logits.
    double sum = 0.0;
    if (dlogits != nullptr) {
      float* d = dlogits + r * classes;
      for (int64_t c = 0; c < classes; ++c) {
        d[c] = std::exp(z[c] - mx);
        sum += d[c];
      }
      const auto scale = static_cast<float>(grad_scale / sum);
      for (int64_t c = 0; c < classes; ++c) d[c] *= scale;
      d[label] -= grad_scale;
    } else {
      for (int64_t c = 0; c < classes; ++c) sum += std::exp(z[c] - mx);
    }
    // loss = logsumexp(z) - z[label] = log(sum) + (mx - z[label])
    row_loss[r] = std::log(sum) + (static_cast<double>(mx) - static_cast<double>(z_label));
    correct += arg == label ? 1 : 0;
  }
  double loss = 0.0;
  for (int64_t r = 0; r < batch; ++r) loss += row_loss[r];
  stats[0] += loss_weight * loss;
  stats[1] += loss_weight * static_cast<double>(correct);
}

}  // namespace dtrain::cpu
