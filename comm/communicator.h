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
  // Ends this rank's outstanding collectives at once, for a rank that fails alone: its
  // communicator can then be destroyed without waiting for peers that will never come
  // (NCCL: ncclCommAbort). Called by the thread that uses the communicator. Nothing to
  // do for backends that the process exit ends.
  virtual void abort() {}
};

}  // namespace dtrain
