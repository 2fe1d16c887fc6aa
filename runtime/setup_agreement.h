// Note [Setup agreement]: the failures of setup (config, plan, data files, model
// shape, memory) may hit some ranks and not others (a node without the dataset).
// A rank that fails must not leave the others waiting in their first collective, and
// an identical failure on every rank should be said once, not N times. So setup runs
// without collectives, then every rank gathers every rank's outcome: on failure all
// ranks throw, the lowest failing rank alone reports its own error, and launch/ ends
// every rank with that rank's exit code, without MPI_Abort.
#pragma once

#include <exception>

#include "comm/communicator.h"

namespace dtrain {

// `local_error` is null when this rank's setup succeeded. Returns when every rank
// succeeded; otherwise throws (agreed): this rank's own error, or PeerFailure.
void agree_on_setup(Communicator& comm, std::exception_ptr local_error);

}  // namespace dtrain
