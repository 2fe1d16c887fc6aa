// Process setup (DESIGN "Processes and devices"): whether this process is one rank
// of an MPI job, MPI's lifetime, the node-local rank and rank count, and the CPU
// threads this rank may use. The runtime receives a ready Communicator from here;
// nothing below launch/ initialises MPI.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/mpi_communicator.h"

namespace dtrain::launch {

// The world rank a launcher (mpirun, srun) announced in the environment, or 0 when
// none did. Used only to keep non-zero ranks quiet before MPI is up.
int launcher_rank_hint();
// The world size a launcher announced, or 0 when no launcher started this process.
int launcher_size_hint();

class Process {
 public:
  // backend: "auto" (MPI when a launcher started us, else self), "mpi" or "self".
  explicit Process(const std::string& backend);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // The host-memory communicator over all ranks (MPI, or self for one process).
  Communicator& comm() { return *comm_; }
  // The same communicator as MPI, or null when this process runs without MPI.
  MpiCommunicator* mpi() { return mpi_comm_; }
  // MPI runs with MPI_THREAD_MULTIPLE (the watchdog's heartbeats need it).
  bool thread_multiple() const { return thread_multiple_; }
  // This node's name, for messages about devices.
  std::string node_name() const;
  // Every rank's node name, by world rank (collective over all ranks; without MPI,
  // this node's alone): how the watchdog names where a silent rank runs.
  std::vector<std::string> node_names() const;
  int rank() const { return comm_->rank(); }
  int size() const { return comm_->size(); }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  // Every local rank's `mine`, in local-rank order (collective over this node's ranks;
  // without MPI, just `mine`).
  std::vector<std::string> gather_on_node(const std::string& mine) const;
  bool uses_mpi() const { return mpi_; }
  // Threads for this rank: `requested` when > 0, else the cores this process may run
  // on, shared evenly among the ranks of this node (at least one).
  int cpu_threads(int requested) const;
  // Ends every rank of the job with `code` (MPI_Abort), so none waits forever in a
  // collective for a rank that failed. Returns only when not under MPI.
  void abort_job(int code);

 private:
  bool mpi_ = false;
  bool thread_multiple_ = false;
  std::unique_ptr<Communicator> comm_;
  MpiCommunicator* mpi_comm_ = nullptr;
  int local_rank_ = 0;
  int local_size_ = 1;
  MPI_Comm local_ = MPI_COMM_NULL;  // this node's ranks
};

}  // namespace dtrain::launch
