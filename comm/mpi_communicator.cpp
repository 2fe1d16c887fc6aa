#include "comm/mpi_communicator.h"

#include <climits>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "comm/bf16_sum.h"
#include "comm/mpi_check.h"

namespace dtrain {
namespace {

MPI_Datatype to_mpi(DataType t) {
  switch (t) {
    case DataType::Float32: return MPI_FLOAT;
    case DataType::Float64: return MPI_DOUBLE;
    case DataType::Int32: return MPI_INT32_T;
    case DataType::Int64: return MPI_INT64_T;
    case DataType::UInt64: return MPI_UINT64_T;
    case DataType::UInt8: return MPI_UINT8_T;
    case DataType::BFloat16: return MPI_UINT16_T;  // bit patterns; only bf16_sum_ reads them as numbers
  }
  throw CommError("MPI backend: unknown data type");
}

// The MPI_User_function of the bf16 SUM: inout = in + inout, element by element.
// `datatype` is always MPI_UINT16_T here: the op is only ever paired with BFloat16.
void bf16_sum_op(void* in, void* inout, int* len, MPI_Datatype* /*datatype*/) {
  bf16_sum_into(static_cast<const bf16*>(in), static_cast<bf16*>(inout), static_cast<size_t>(*len));
}

// MPI counts are ints; dtrain's buffers stay far below that, and a larger one is a
// planning bug, so say so instead of silently truncating.
int checked_count(size_t count, const char* collective) {
  if (count > static_cast<size_t>(INT_MAX)) {
    throw CommError(std::string("MPI ") + collective + ": " + std::to_string(count) +
                    " elements exceed MPI's int count; split the buffer into buckets");
  }
  return static_cast<int>(count);
}

// The per-rank counts and displacements of a v-collective, as the ints MPI takes.
struct BlockLayout {
  std::vector<int> counts;
  std::vector<int> displs;  // prefix sums of counts
};

// `counts` has one entry per rank and a total that fits an int (checked by the caller).
BlockLayout block_layout(std::span<const size_t> counts, const char* collective) {
  BlockLayout layout;
  int offset = 0;
  for (size_t c : counts) {
    layout.counts.push_back(checked_count(c, collective));
    layout.displs.push_back(offset);
    offset += layout.counts.back();
  }
  return layout;
}

class MpiWork final : public Work {
 public:
  MpiWork() = default;
  MPI_Request* request() { return &request_; }
  // A non-blocking v-collective reads its count and displacement arrays until it
  // completes, so the Work keeps them.
  const BlockLayout& keep(BlockLayout layout) {
    layout_ = std::move(layout);
    return layout_;
  }
  // `bytes` to move from `src` to `dst` (they may overlap) once the collective has
  // completed, before wait() returns or done() says true.
  void move_on_completion(char* dst, const char* src, size_t bytes) { move_ = {dst, src, bytes}; }
  void wait() override {
    if (request_ != MPI_REQUEST_NULL) DTRAIN_MPI_CHECK(MPI_Wait(&request_, MPI_STATUS_IGNORE));
    finish();
  }
  bool done() override {
    if (request_ != MPI_REQUEST_NULL) {
      int flag = 0;
      DTRAIN_MPI_CHECK(MPI_Test(&request_, &flag, MPI_STATUS_IGNORE));
      if (flag == 0) return false;
    }
    finish();
    return true;
  }
  ~MpiWork() override {
    // A collective abandoned mid-flight cannot be cancelled; completing it keeps the
    // buffers valid for MPI. Errors here are reported by whoever called wait(). Nobody
    // reads an abandoned result, so it is not moved.
    if (request_ != MPI_REQUEST_NULL) MPI_Wait(&request_, MPI_STATUS_IGNORE);
  }

 private:
  struct Move {
    char* dst = nullptr;
    const char* src = nullptr;
    size_t bytes = 0;
  };

  void finish() {
    if (move_.bytes > 0 && move_.dst != move_.src) std::memmove(move_.dst, move_.src, move_.bytes);
    move_ = {};
  }

  MPI_Request request_ = MPI_REQUEST_NULL;
  BlockLayout layout_;
  Move move_;
};

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm) {
  DTRAIN_MPI_CHECK(MPI_Comm_dup(comm, &comm_));
  DTRAIN_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  DTRAIN_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  DTRAIN_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  DTRAIN_MPI_CHECK(MPI_Op_create(&bf16_sum_op, /*commute=*/1, &bf16_sum_));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  // Freeing an op only marks it: collectives still in flight complete with it.
  if (bf16_sum_ != MPI_OP_NULL) MPI_Op_free(&bf16_sum_);
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

MPI_Op MpiCommunicator::op_for(ReduceOp op, DataType type) const {
  switch (op) {
    case ReduceOp::Sum: return type == DataType::BFloat16 ? bf16_sum_ : MPI_SUM;
  }
  throw CommError("MPI backend: unknown reduce op");
}

std::unique_ptr<Work> MpiCommunicator::all_reduce(void* buf, size_t count, DataType type,
                                                  ReduceOp op) {
  auto work = std::make_unique<MpiWork>();
  DTRAIN_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, buf, checked_count(count, "all_reduce"),
                                  to_mpi(type), op_for(op, type), comm_, work->request()));
  return work;
}

std::unique_ptr<Work> MpiCommunicator::reduce_scatter(const void* send, void* recv,
                                                      size_t recv_count, DataType type,
                                                      ReduceOp op) {
  auto work = std::make_unique<MpiWork>();
  DTRAIN_MPI_CHECK(MPI_Ireduce_scatter_block(send, recv, checked_count(recv_count, "reduce_scatter"),
                                             to_mpi(type), op_for(op, type), comm_, work->request()));
  return work;
}

std::unique_ptr<Work> MpiCommunicator::all_gather(const void* send, void* recv, size_t send_count,
                                                  DataType type) {
  auto work = std::make_unique<MpiWork>();
  const int n = checked_count(send_count, "all_gather");
  DTRAIN_MPI_CHECK(MPI_Iallgather(send, n, to_mpi(type), recv, n, to_mpi(type), comm_,
                                  work->request()));
  return work;
}

std::unique_ptr<Work> MpiCommunicator::broadcast(void* buf, size_t count, DataType type,
                                                 int root) {
  auto work = std::make_unique<MpiWork>();
  DTRAIN_MPI_CHECK(MPI_Ibcast(buf, checked_count(count, "broadcast"), to_mpi(type), root, comm_,
                              work->request()));
  return work;
}

void MpiCommunicator::all_reduce_blocking(void* buf, size_t count, DataType type, ReduceOp op) {
  DTRAIN_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, checked_count(count, "all_reduce"), to_mpi(type),
                                 op_for(op, type), comm_));
}

void MpiCommunicator::reduce_scatter_blocking(const void* send, void* recv, size_t recv_count,
                                              DataType type, ReduceOp op) {
  DTRAIN_MPI_CHECK(MPI_Reduce_scatter_block(send, recv, checked_count(recv_count, "reduce_scatter"),
                                            to_mpi(type), op_for(op, type), comm_));
}

void MpiCommunicator::all_gather_blocking(const void* send, void* recv, size_t send_count, DataType type) {
  const int n = checked_count(send_count, "all_gather");
  DTRAIN_MPI_CHECK(MPI_Allgather(send, n, to_mpi(type), recv, n, to_mpi(type), comm_));
}

void MpiCommunicator::broadcast_blocking(void* buf, size_t count, DataType type, int root) {
  DTRAIN_MPI_CHECK(MPI_Bcast(buf, checked_count(count, "broadcast"), to_mpi(type), root, comm_));
}

// Note [In-place reduce_scatter_v]
// MPI_Reduce_scatter with MPI_IN_PLACE takes its input from the receive buffer and
// leaves rank r's result at the START of that buffer, not at block r's displacement.
// The Work therefore moves the result into block r once MPI has completed (memmove:
// the two ranges overlap when block r is longer than the blocks before it), before
// wait() returns or done() says true; the bytes it overwrites belong to other blocks,
// which the contract leaves unspecified. Moving on the host is why this form is for
// host buffers; device buffers take reduce_scatter_v_blocking.
std::unique_ptr<Work> MpiCommunicator::reduce_scatter_v(void* buf, std::span<const size_t> counts,
                                                        DataType type, ReduceOp op) {
  checked_count(checked_total(counts, "reduce_scatter_v"), "reduce_scatter_v");
  auto work = std::make_unique<MpiWork>();
  const BlockLayout& layout = work->keep(block_layout(counts, "reduce_scatter_v"));
  DTRAIN_MPI_CHECK(MPI_Ireduce_scatter(MPI_IN_PLACE, buf, layout.counts.data(), to_mpi(type), op_for(op, type),
                                       comm_, work->request()));
  const size_t element = data_type_size(type);
  char* bytes = static_cast<char*>(buf);
  const auto own = static_cast<size_t>(rank_);
  work->move_on_completion(bytes + static_cast<size_t>(layout.displs[own]) * element, bytes,
                           static_cast<size_t>(layout.counts[own]) * element);
  return work;
}

std::unique_ptr<Work> MpiCommunicator::all_gather_v(void* buf, std::span<const size_t> counts, DataType type) {
  checked_count(checked_total(counts, "all_gather_v"), "all_gather_v");
  auto work = std::make_unique<MpiWork>();
  const BlockLayout& layout = work->keep(block_layout(counts, "all_gather_v"));
  // In place: MPI takes this rank's contribution from its block of `buf`.
  DTRAIN_MPI_CHECK(MPI_Iallgatherv(MPI_IN_PLACE, 0, to_mpi(type), buf, layout.counts.data(), layout.displs.data(),
                                   to_mpi(type), comm_, work->request()));
  return work;
}

void MpiCommunicator::reduce_scatter_v_blocking(void* buf, std::span<const size_t> counts, DataType type,
                                                ReduceOp op) {
  checked_count(checked_total(counts, "reduce_scatter_v"), "reduce_scatter_v");
  const size_t element = data_type_size(type);
  char* block = static_cast<char*>(buf);
  // Every rank skips the same empty blocks, so the reductions match across ranks.
  for (int root = 0; root < size_; ++root) {
    const size_t count = counts[static_cast<size_t>(root)];
    if (count > 0) {
      const bool is_root = root == rank_;
      DTRAIN_MPI_CHECK(MPI_Reduce(is_root ? MPI_IN_PLACE : block, is_root ? block : nullptr,
                                  checked_count(count, "reduce_scatter_v"), to_mpi(type), op_for(op, type), root,
                                  comm_));
    }
    block += count * element;
  }
}

void MpiCommunicator::all_gather_v_blocking(void* buf, std::span<const size_t> counts, DataType type) {
  checked_count(checked_total(counts, "all_gather_v"), "all_gather_v");
  const BlockLayout layout = block_layout(counts, "all_gather_v");
  DTRAIN_MPI_CHECK(MPI_Allgatherv(MPI_IN_PLACE, 0, to_mpi(type), buf, layout.counts.data(), layout.displs.data(),
                                  to_mpi(type), comm_));
}

std::unique_ptr<Work> MpiCommunicator::barrier() {
  auto work = std::make_unique<MpiWork>();
  DTRAIN_MPI_CHECK(MPI_Ibarrier(comm_, work->request()));
  return work;
}

}  // namespace dtrain
