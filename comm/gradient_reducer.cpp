#include "comm/gradient_reducer.h"

#include <algorithm>
#include <span>
#include <utility>

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
                                 std::optional<NarrowWire> wire, std::vector<FlatRange> shards)
    : comm_(comm), grads_(grads), buckets_(assign_gradient_buckets(layers, cap_elements)),
      wire_(std::move(wire)), shards_(std::move(shards)) {
  if (wire_) {
    DTRAIN_ASSERT(wire_->staging != nullptr && wire_->narrow && wire_->widen,
                  "a narrow gradient wire needs its staging buffer and both conversions");
  }
  if (shards_.empty()) return;
  DTRAIN_ASSERT(static_cast<int>(shards_.size()) == comm_.size(),
                shards_.size() << " shard ranges for " << comm_.size() << " ranks");
  for (const GradientBucket& b : buckets_) {
    std::vector<size_t> counts;
    int64_t covered = 0;
    for (const FlatRange& shard : shards_) {
      const FlatRange part = intersect(FlatRange{b.offset, b.count}, shard);
      counts.push_back(static_cast<size_t>(part.count));
      covered += part.count;
    }
    DTRAIN_ASSERT(covered == b.count, "the shard ranges cover " << covered << " of a bucket's " << b.count
                                                                << " gradients; they must cover the buffer");
    block_counts_.push_back(std::move(counts));
  }
}

FlatRange GradientReducer::reduced_part(size_t bucket) const {
  const FlatRange whole{buckets_[bucket].offset, buckets_[bucket].count};
  if (shards_.empty()) return whole;
  return intersect(whole, shards_[static_cast<size_t>(comm_.rank())]);
}

void* GradientReducer::wire_at(int64_t offset) const {
  return static_cast<char*>(wire_->staging) + offset * static_cast<int64_t>(data_type_size(wire_->type));
}

void GradientReducer::launch_next() {
  const size_t i = next_++;
  const GradientBucket& b = buckets_[i];
  if (before_launch_) before_launch_(b);
  if (on_reduced_) launched_.push_back(Clock::now());
  void* data = grads_ + b.offset;
  DataType type = DataType::Float32;
  if (wire_) {
    // Note [Narrow gradient reduction]: queued before the collective is issued.
    data = wire_at(b.offset);
    type = wire_->type;
    wire_->narrow(grads_ + b.offset, data, b.count);
  }
  if (shards_.empty()) {
    in_flight_.push_back(comm_.all_reduce(data, static_cast<size_t>(b.count), type, ReduceOp::Sum));
  } else {
    in_flight_.push_back(comm_.reduce_scatter_v(data, block_counts_[i], type, ReduceOp::Sum));
  }
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
    if (wire_) {
      const FlatRange part = reduced_part(i);
      if (part.count > 0) wire_->widen(wire_at(part.offset), grads_ + part.offset, part.count);
    }
  }
  in_flight_.clear();
  launched_.clear();
  next_ = 0;
}

}  // namespace dtrain
