// The Communicator interface: collectives over the ranks of one job.
//
// Cross-rank contract (DESIGN contract 4): every rank calls the same collectives in
// the same order with the same counts and types. A collective returns a Work handle;
// the buffers belong to the collective until wait() returns (or done() says true).
// Backends never initialise MPI: launch/ sets the process up and hands a ready
// communicator to the runtime.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace dtrain {

// BFloat16: the bf16 of kernels/dtype.h (2 bytes). Its Sum rounds every pairwise
// combination to bf16 (Note [bf16 sum], comm/bf16_sum.h).
enum class DataType { Float32, Float64, Int32, Int64, UInt64, UInt8, BFloat16 };
enum class ReduceOp { Sum };

size_t data_type_size(DataType t);
const char* data_type_name(DataType t);

class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the collective has finished; throws CommError on failure.
  virtual void wait() = 0;
  // True when the collective has finished (wait() then returns at once).
  virtual bool done() = 0;
};

// A Work that finished when it was made (single rank, or a blocking backend).
class CompletedWork final : public Work {
 public:
  void wait() override {}
  bool done() override { return true; }
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend_name() const = 0;

  // In place: buf (count elements) becomes the reduction over all ranks.
  virtual std::unique_ptr<Work> all_reduce(void* buf, size_t count, DataType type,
                                           ReduceOp op) = 0;
  // send holds size() * recv_count elements; rank r receives the reduction of block r.
  virtual std::unique_ptr<Work> reduce_scatter(const void* send, void* recv, size_t recv_count,
                                               DataType type, ReduceOp op) = 0;
  // recv (size() * send_count elements) gets every rank's send block, in rank order.
  virtual std::unique_ptr<Work> all_gather(const void* send, void* recv, size_t send_count,
                                           DataType type) = 0;
  // buf (count elements) becomes root's buf on every rank.
  virtual std::unique_ptr<Work> broadcast(void* buf, size_t count, DataType type, int root) = 0;
  virtual std::unique_ptr<Work> barrier() = 0;

  // The variable-count collectives, for state sharded in ranges of unequal size (each
  // rank owns one contiguous range of a flat buffer). `counts[r]` elements per rank r,
  // in blocks that lie back to back in rank order in `buf` (sum(counts) elements; a
  // block may be empty). Every rank passes the same counts, one per rank; `counts` is
  // read during the call only.
  //
  // The defaults here are correct for every backend but move more bytes than needed
  // (reduce_scatter_v all-reduces the whole buffer; all_gather_v is one broadcast per
  // non-empty block, each going through the broadcast's tree or pipeline); the real
  // backends override them.
  //
  // In place: afterwards block r of rank r's buf holds the reduction of every rank's
  // block r; the other blocks of buf hold unspecified values.
  virtual std::unique_ptr<Work> reduce_scatter_v(void* buf, std::span<const size_t> counts, DataType type,
                                                 ReduceOp op);
  // In place: block r of rank r's buf is its contribution; afterwards every rank's buf
  // holds every rank's block.
  virtual std::unique_ptr<Work> all_gather_v(void* buf, std::span<const size_t> counts, DataType type);

  // Ends this rank's outstanding collectives at once, for a rank that fails alone: its
  // communicator can then be destroyed without waiting for peers that will never come
  // (NCCL: ncclCommAbort). Called by the thread that uses the communicator. Nothing to
  // do for backends that the process exit ends.
  virtual void abort() {}

 protected:
  // Throws CommError naming the backend and `collective` unless `counts` has one entry
  // per rank; returns sum(counts).
  size_t checked_total(std::span<const size_t> counts, const char* collective) const;
};

// The offset, in elements, of block `r` of a variable-count collective: the sum of
// counts[0..r).
size_t block_offset(std::span<const size_t> counts, int r);

}  // namespace dtrain
