#include "comm/mpi_communicator.h"

#include <climits>
#include <string>

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

class MpiWork final : public Work {
 public:
  MpiWork() = default;
  MPI_Request* request() { return &request_; }
  void wait() override {
    if (request_ != MPI_REQUEST_NULL) DTRAIN_MPI_CHECK(MPI_Wait(&request_, MPI_STATUS_IGNORE));
  }
  bool done() override {
    if (request_ == MPI_REQUEST_NULL) return true;
    int flag = 0;
    DTRAIN_MPI_CHECK(MPI_Test(&request_, &flag, MPI_STATUS_IGNORE));
    return flag != 0;
  }
  ~MpiWork() override {
    // A collective abandoned mid-flight cannot be cancelled; completing it keeps the
    // buffers valid for MPI. Errors here are reported by whoever called wait().
    if (request_ != MPI_REQUEST_NULL) MPI_Wait(&request_, MPI_STATUS_IGNORE);
  }

 private:
  MPI_Request request_ = MPI_REQUEST_NULL;
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

std::unique_ptr<Work> MpiCommunicator::barrier() {
  auto work = std::make_unique<MpiWork>();
  DTRAIN_MPI_CHECK(MPI_Ibarrier(comm_, work->request()));
  return work;
}

}  // namespace dtrain
