#include "comm/mpi_heartbeat.h"

namespace dtrain {

namespace {
constexpr int kHeartbeatTag = 7701;
}

MpiHeartbeatChannel::MpiHeartbeatChannel(MPI_Comm comm) {
  MPI_Comm_dup(comm, &comm_);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  out_.resize(static_cast<size_t>(size_));
  pending_.assign(static_cast<size_t>(size_), MPI_REQUEST_NULL);
}

MpiHeartbeatChannel::~MpiHeartbeatChannel() {
  // Sends still pending go on by themselves; the communicator is left to MPI_Finalize,
  // since freeing it would wait for peers that may have stopped.
  for (MPI_Request& r : pending_) {
    if (r != MPI_REQUEST_NULL) MPI_Request_free(&r);
  }
}

void MpiHeartbeatChannel::send_to_all(const Heartbeat& beat) {
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    MPI_Request& r = pending_[static_cast<size_t>(peer)];
    if (r != MPI_REQUEST_NULL) {
      int done = 0;
      MPI_Test(&r, &done, MPI_STATUS_IGNORE);
      if (!done) continue;  // that peer is not taking heartbeats: do not pile them up
    }
    out_[static_cast<size_t>(peer)] = {beat.step, beat.issued, beat.waiting};
    MPI_Isend(out_[static_cast<size_t>(peer)].data(), 3, MPI_INT64_T, peer, kHeartbeatTag, comm_, &r);
  }
}

std::vector<std::pair<int, Heartbeat>> MpiHeartbeatChannel::receive() {
  std::vector<std::pair<int, Heartbeat>> got;
  for (;;) {
    int flag = 0;
    MPI_Status status;
    MPI_Iprobe(MPI_ANY_SOURCE, kHeartbeatTag, comm_, &flag, &status);
    if (!flag) break;
    std::array<int64_t, 3> in{};
    MPI_Recv(in.data(), 3, MPI_INT64_T, status.MPI_SOURCE, kHeartbeatTag, comm_, MPI_STATUS_IGNORE);
    got.push_back({status.MPI_SOURCE, Heartbeat{in[0], in[1], in[2]}});
  }
  return got;
}

}  // namespace dtrain
