#include "runtime/param_check.h"

#include <cstring>
#include <span>
#include <sstream>
#include <vector>

#include "comm/typed_collectives.h"
#include "kernels/errors.h"
#include "kernels/ops.h"

namespace dtrain {

uint64_t checksum_floats(const float* data, int64_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  const auto* bytes = reinterpret_cast<const uint8_t*>(data);
  for (int64_t i = 0; i < n * static_cast<int64_t>(sizeof(float)); ++i) {
    h ^= bytes[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

void verify_identical_params(const Model& model, Context& ctx, Communicator& comm) {
  std::vector<float> host(static_cast<size_t>(model.param_count()));
  ops::copy_to_host(ctx, host.data(), model.params(), host.size() * sizeof(float));
  const uint64_t mine = checksum_floats(host.data(), model.param_count());
  std::vector<uint64_t> all(static_cast<size_t>(comm.size()));
  all_gather(comm, std::span<const uint64_t>(&mine, 1), std::span<uint64_t>(all))->wait();
  std::ostringstream differ;
  for (int r = 1; r < comm.size(); ++r) {
    if (all[static_cast<size_t>(r)] != all[0]) differ << (differ.tellp() > 0 ? ", " : "") << r;
  }
  if (differ.tellp() > 0) {
    std::ostringstream msg;
    msg << "ranks " << differ.str() << " hold parameters different from rank 0's after "
        << "initialisation (checksums differ); every rank must run the same dtrain build with "
        << "the same config and seed";
    throw CommError(msg.str());
  }
}

}  // namespace dtrain
