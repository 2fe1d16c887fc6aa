// The default sgd_update_spans and adamw_update_spans (Note [Optimizers over spans],
// kernels/ops.h): the backend's own update over each span in turn, so that a backend
// without a one-pass form (the CPU's, cpu-async's) keeps its bits.
#include <vector>

#include "kernels/ops.h"

namespace dtrain {

void OpsBackend::sgd_update_spans(Context& ctx, float* params, const float* grads, float* momentum,
                                  const std::vector<DecaySpan>& spans, const SgdHyper& h) {
  for (const DecaySpan& s : spans) {
    if (s.count == 0) continue;
    SgdHyper span_h = h;
    if (!s.decay) span_h.weight_decay = 0.0f;
    sgd_update(ctx, params + s.offset, grads + s.offset, momentum == nullptr ? nullptr : momentum + s.offset, s.count,
               span_h);
  }
}

void OpsBackend::adamw_update_spans(Context& ctx, float* params, const float* grads, float* m, float* v,
                                    bf16* params_bf16, const std::vector<DecaySpan>& spans, const AdamWHyper& h) {
  for (const DecaySpan& s : spans) {
    if (s.count == 0) continue;
    AdamWHyper span_h = h;
    if (!s.decay) span_h.weight_decay = 0.0f;
    adamw_update(ctx, params + s.offset, grads + s.offset, m + s.offset, v + s.offset,
                 params_bf16 == nullptr ? nullptr : params_bf16 + s.offset, s.count, span_h);
  }
}

}  // namespace dtrain
