#include "comm/gradient_reducer.h"

#include <span>
#include <utility>

#include "comm/typed_collectives.h"
#include "kernels/check.h"

namespace dtrain {

std::vector<GradientBucket> assign_gradient_buckets(const std::vector<FlatRange>& layers,
                                                    int64_t cap_elements) {
  DTRAIN_ASSERT(cap_elements > 0, "bucket cap must be positive");
  std::vector<GradientBucket> buckets;
  bool open = false;
  GradientBucket cur;
  for (int i = static_cast<int>(layers.size()) - 1; i >= 0; --i) {
    const FlatRange& r = layers[static_cast<size_t>(i)];
    if (r.count == 0) continue;
    if (!open) {
      cur = GradientBucket{r.offset, r.count, i, i};
      open = true;
    } else {
      DTRAIN_ASSERT(r.offset + r.count == cur.offset,
                    "layer " << i << " parameters are not contiguous with layer " << cur.first_layer);
      cur.offset = r.offset;
      cur.count += r.count;
      cur.first_layer = i;
    }
    if (cur.count >= cap_elements) {
      buckets.push_back(cur);
      open = false;
    }
  }
  if (open) buckets.push_back(cur);
  return buckets;
}

GradientReducer::GradientReducer(Communicator& comm, float* grads,
                                 const std::vector<FlatRange>& layers, int64_t cap_elements,
                                 std::optional<NarrowWire> wire)
    : comm_(comm), grads_(grads), buckets_(assign_gradient_buckets(layers, cap_elements)),
      wire_(std::move(wire)) {
  if (wire_) {
    DTRAIN_ASSERT(wire_->staging != nullptr && wire_->narrow && wire_->widen,
                  "a narrow gradient wire needs its staging buffer and both conversions");
  }
}

void* GradientReducer::wire_at(int64_t offset) const {
  return static_cast<char*>(wire_->staging) + offset * static_cast<int64_t>(data_type_size(wire_->type));
}

void GradientReducer::launch_next() {
  const GradientBucket& b = buckets_[next_++];
  if (before_launch_) before_launch_(b);
  if (on_reduced_) launched_.push_back(Clock::now());
  if (!wire_) {
    in_flight_.push_back(all_reduce(comm_, std::span<float>(grads_ + b.offset, static_cast<size_t>(b.count))));
    return;
  }
  // Note [Narrow gradient reduction]: queued before the collective is issued.
  void* staged = wire_at(b.offset);
  wire_->narrow(grads_ + b.offset, staged, b.count);
  in_flight_.push_back(comm_.all_reduce(staged, static_cast<size_t>(b.count), wire_->type, ReduceOp::Sum));
}

void GradientReducer::on_layer_done(int layer) {
  while (next_ < buckets_.size() && buckets_[next_].first_layer >= layer) launch_next();
}

void GradientReducer::finish() {
  while (next_ < buckets_.size()) launch_next();
  for (size_t i = 0; i < in_flight_.size(); ++i) {
    in_flight_[i]->wait();
    if (on_reduced_ && i < launched_.size()) on_reduced_(i, launched_[i], Clock::now());
    // Note [Narrow gradient reduction]: queued after wait(), which ordered the
    // device's queue after the collective.
    if (wire_) wire_->widen(wire_at(buckets_[i].offset), grads_ + buckets_[i].offset, buckets_[i].count);
  }
  in_flight_.clear();
  launched_.clear();
  next_ = 0;
}

}  // namespace dtrain
