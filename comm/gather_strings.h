// Every rank's string, over an MPI communicator: how the ranks of a node tell each
// other which GPUs they see (launch/device_setup.cpp).
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

namespace dtrain {

// Collective over `comm`: element r of the result is rank r's `mine`. Strings may
// differ in length and be empty. Throws CommError on an MPI failure.
std::vector<std::string> all_gather_strings(MPI_Comm comm, const std::string& mine);

}  // namespace dtrain
