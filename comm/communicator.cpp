// The default variable-count collectives of Communicator, built from its mandatory
// collectives: correct on every backend, at the cost of extra bytes (communicator.h).
#include "comm/communicator.h"

#include <utility>
#include <vector>

#include "kernels/errors.h"

namespace dtrain {
namespace {

// Finishes when every one of its collectives has; wait() waits them in issue order.
class AllOfWork final : public Work {
 public:
  explicit AllOfWork(std::vector<std::unique_ptr<Work>> works) : works_(std::move(works)) {}
  void wait() override {
    for (auto& w : works_) w->wait();
  }
  bool done() override {
    for (auto& w : works_) {
      if (!w->done()) return false;
    }
    return true;
  }

 private:
  std::vector<std::unique_ptr<Work>> works_;
};

}  // namespace

size_t block_offset(std::span<const size_t> counts, int r) {
  size_t offset = 0;
  for (int q = 0; q < r; ++q) offset += counts[static_cast<size_t>(q)];
  return offset;
}

size_t Communicator::checked_total(std::span<const size_t> counts, const char* collective) const {
  if (counts.size() != static_cast<size_t>(size())) {
    throw CommError(std::string(collective) + " on the " + backend_name() + " communicator of rank " +
                    std::to_string(rank()) + ": " + std::to_string(counts.size()) + " block counts for " +
                    std::to_string(size()) + " ranks; pass one count per rank, the same on every rank");
  }
  size_t total = 0;
  for (size_t c : counts) total += c;
  return total;
}

std::unique_ptr<Work> Communicator::reduce_scatter_v(void* buf, std::span<const size_t> counts, DataType type,
                                                     ReduceOp op) {
  // Every block reduced on every rank: a superset of what the contract asks.
  return all_reduce(buf, checked_total(counts, "reduce_scatter_v"), type, op);
}

std::unique_ptr<Work> Communicator::all_gather_v(void* buf, std::span<const size_t> counts, DataType type) {
  checked_total(counts, "all_gather_v");
  // Every rank skips the same empty blocks, so the broadcasts match across ranks.
  std::vector<std::unique_ptr<Work>> works;
  char* bytes = static_cast<char*>(buf);
  size_t offset = 0;
  for (int r = 0; r < size(); ++r) {
    const size_t count = counts[static_cast<size_t>(r)];
    if (count > 0) works.push_back(broadcast(bytes + offset * data_type_size(type), count, type, r));
    offset += count;
  }
  return std::make_unique<AllOfWork>(std::move(works));
}

}  // namespace dtrain
