// Heartbeats between watchdogs over MPI point-to-point messages on a communicator of
// their own (Note [Collective watchdog]). The watchdog thread calls it while the main
// thread runs collectives, so MPI must provide MPI_THREAD_MULTIPLE.
#pragma once

#include <mpi.h>

#include <array>
#include <vector>

#include "comm/watchdog.h"

namespace dtrain {

class MpiHeartbeatChannel final : public HeartbeatChannel {
 public:
  // Collective over `comm` (it is duplicated): every rank constructs it together.
  explicit MpiHeartbeatChannel(MPI_Comm comm);
  ~MpiHeartbeatChannel() override;
  void send_to_all(const Heartbeat& beat) override;
  std::vector<std::pair<int, Heartbeat>> receive() override;

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::vector<std::array<int64_t, 3>> out_;  // a buffer per peer, valid until its send completes
  std::vector<MPI_Request> pending_;         // per peer
};

}  // namespace dtrain
