// All-reduce of the flat gradient buffer in buckets, overlapped with backward.
//
// Buckets are contiguous ranges of the flat buffer, assigned in reverse layer order
// (the order backward finishes them) by a pure function. The reducer launches a
// bucket as soon as backward reports its lowest layer done, always in bucket order,
// so every rank issues the same collectives in the same order (DESIGN contract 4).
// It runs only on the last micro-step of an optimizer step; finish() waits for all.
//
// Note [Narrow gradient reduction]
// With comm.reduce_dtype bf16 the gradients travel in bf16: half the bytes of fp32.
// They are accumulated in fp32 over the micro-steps as always; then each bucket is
//   narrowed: staging[bucket] = bf16(grads[bucket]), rounded to nearest even, just
//             before its collective is launched (after the before-launch hook, which
//             so still sees this rank's own fp32 gradients);
//   reduced:  a bf16 all-reduce SUM of staging[bucket] (Note [bf16 sum],
//             comm/bf16_sum.h: each pairwise combination rounded to bf16);
//   widened:  grads[bucket] = fp32(staging[bucket]) (exact), in finish(), once its
//             collective has been waited on, so before anything after finish() (the
//             gradient norm, clipping, the optimizer) reads the gradients.
// The staging buffer mirrors the flat gradient buffer (a bucket keeps its offsets),
// so buckets in flight together never share memory. The narrowing and widening are
// done on one rank too, where the all-reduce is the identity: a one-rank run's
// gradient is round_bf16 of its fp32 gradient, as an n-rank run's is the bf16 sum of
// the ranks' rounded gradients. So the trajectory depends on the world size only
// through the order of the sum (its roundings), never on whether the gradients were
// rounded at all.
//
// Order on a device that runs behind the host (a GPU): the narrowing is queued on the
// compute stream from the launch, before the collective is issued, and a device
// communicator orders its collective after the work queued before it (NCCL: an event
// recorded on the compute stream that its stream waits for, Note [NCCL stream
// ordering]; staging and direct MPI: a copy or synchronize after that work), so the
// collective reads the narrowed values. Work::wait() orders the compute stream after
// the collective (NCCL: the compute stream waits for its completion event; staging:
// the copy back is queued before wait() returns; MPI: complete on return), and the
// widening is queued on the compute stream after wait(), so it reads the reduced
// values; the optimizer is queued after finish(), so it reads the widened ones. The
// next step's narrowing of a bucket is queued after this step's widening of it, so
// the staging buffer is never written while a collective still uses it.
//
// Note [Sharded gradient reduction]
// With optimizer-state sharding (ZeRO stage 1) each rank updates one range of the flat
// buffer (`shards`, one per rank in rank order, covering it: Note [Shard ranges],
// runtime/optimizer_shards.h), so it needs the reduced gradient of that range only.
// Each bucket is then reduce-scattered instead of all-reduced: the bucket's parts in
// the ranks' ranges are its blocks (counts, many of them empty, the same on every
// rank), and after the collective this rank's part of the bucket holds the sum; the
// rest of the bucket keeps values no one reads (the trainer zeroes the gradients
// after the step). It moves half the bytes of an all-reduce; the all-gather of the
// updated parameters after the optimizer step moves the other half. With a narrow
// wire, the whole bucket is narrowed as before and only this rank's part is widened.
// Everything else is as unsharded: the same buckets, launched at the same points, in
// the same order on every rank.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "comm/communicator.h"
#include "kernels/flat_range.h"

namespace dtrain {


struct GradientBucket {
  int64_t offset = 0;   // elements into the flat gradient buffer
  int64_t count = 0;
  int first_layer = 0;  // lowest layer index with parameters in the bucket
  int last_layer = 0;   // highest
};

// Pure: walks layers from last to first and closes a bucket once it holds at least
// `cap_elements`; a single layer larger than the cap gets a bucket of its own. The
// layers' ranges must be contiguous and in layer order (contract 1). Layers without
// parameters are skipped. Buckets come out in launch order (highest layers first).
std::vector<GradientBucket> assign_gradient_buckets(const std::vector<FlatRange>& layers,
                                                    int64_t cap_elements);

// The wire type of Note [Narrow gradient reduction], given by the caller: comm/ knows
// device buffers and streams but not the kernels' ops (DESIGN: comm -> kernels).
struct NarrowWire {
  DataType type = DataType::BFloat16;  // what the collectives carry
  // Device memory for as many elements of `type` as the flat gradient buffer has,
  // owned by the caller and kept for the reducer's life.
  void* staging = nullptr;
  // Queue on the gradients' device context, after the work already queued there
  // (the compute stream): `to` = `from` converted, `count` elements.
  std::function<void(const float* from, void* to, int64_t count)> narrow;
  std::function<void(const void* from, float* to, int64_t count)> widen;
};

class GradientReducer {
 public:
  // Buckets travel as the fp32 gradients themselves (reduced in place), or, with
  // `wire`, narrowed to its type (Note [Narrow gradient reduction]).
  // With `shards` (one range per rank), buckets are reduce-scattered to the ranks that
  // own them (Note [Sharded gradient reduction]); empty: all-reduced.
  GradientReducer(Communicator& comm, float* grads, const std::vector<FlatRange>& layers,
                  int64_t cap_elements, std::optional<NarrowWire> wire = std::nullopt,
                  std::vector<FlatRange> shards = {});

  const std::vector<GradientBucket>& buckets() const { return buckets_; }
  // Runs `hook` on each bucket just before its all-reduce is launched, while it still
  // holds this rank's own gradients (the trainer measures their norm there, Note
  // [Gradient noise scale]), in fp32 (before any narrowing). Work it queues on the
  // device is ordered before the collective. An empty function removes the hook.
  void set_before_launch(std::function<void(const GradientBucket&)> hook) { before_launch_ = std::move(hook); }
  // Runs `hook(bucket, launched, done)` in finish() as each bucket's all-reduce is
  // seen complete, with the host times it was launched and found done (the timeline).
  using Clock = std::chrono::steady_clock;
  void set_on_reduced(std::function<void(size_t, Clock::time_point, Clock::time_point)> hook) {
    on_reduced_ = std::move(hook);
  }
  // Backward calls this once layer `layer`'s gradients are final.
  void on_layer_done(int layer);
  // Launches every bucket not yet launched, waits for all (and widens each, with a
  // narrow wire), and re-arms for next step.
  void finish();

 private:
  void launch_next();
  void* wire_at(int64_t offset) const;
  // The part of bucket i that this rank receives reduced: all of it, or its shard's.
  FlatRange reduced_part(size_t bucket) const;

  Communicator& comm_;
  float* grads_;
  std::vector<GradientBucket> buckets_;
  std::optional<NarrowWire> wire_;
  std::vector<FlatRange> shards_;
  // Sharded: each bucket's block counts, one per rank (kept while its collective runs).
  std::vector<std::vector<size_t>> block_counts_;
  std::vector<std::unique_ptr<Work>> in_flight_;
  size_t next_ = 0;
  std::function<void(const GradientBucket&)> before_launch_;
  std::function<void(size_t, Clock::time_point, Clock::time_point)> on_reduced_;
  std::vector<Clock::time_point> launched_;
};

}  // namespace dtrain
