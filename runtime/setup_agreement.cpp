#include "runtime/setup_agreement.h"

#include <span>
#include <string>
#include <vector>

#include "comm/typed_collectives.h"
#include "kernels/errors.h"

namespace dtrain {

void agree_on_setup(Communicator& comm, std::exception_ptr local_error) {
  int32_t code = 0;
  if (local_error) {
    try {
      std::rethrow_exception(local_error);
    } catch (const Error& e) {
      code = e.exit_code();
    } catch (...) {
      code = kExitInternal;
    }
  }
  std::vector<int32_t> codes(static_cast<size_t>(comm.size()));
  all_gather(comm, std::span<const int32_t>(&code, 1), std::span<int32_t>(codes))->wait();
  int first = -1;
  std::string failed;
  for (int r = 0; r < comm.size(); ++r) {
    if (codes[static_cast<size_t>(r)] == 0) continue;
    if (first < 0) first = r;
    failed += (failed.empty() ? "" : ", ") + std::to_string(r);
  }
  if (first < 0) return;
  if (local_error) {
    try {
      std::rethrow_exception(local_error);
    } catch (Error& e) {
      e.set_agreed(comm.rank() == first);
      throw;
    } catch (const std::exception& e) {
      Error wrapped(std::string("internal error during setup: ") + e.what());
      wrapped.set_agreed(comm.rank() == first);
      throw wrapped;
    }
  }
  PeerFailure peer("setup failed on rank(s) " + failed + "; rank " + std::to_string(first) + " reported why",
                   codes[static_cast<size_t>(first)]);
  peer.set_agreed(false);
  throw peer;
}

}  // namespace dtrain
