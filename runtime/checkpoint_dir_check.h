// Whether every rank sees the checkpoint directory that rank 0 writes.
//
// Note [Checkpoint directory seen by every node]
// Rank 0 writes every checkpoint and reads the one a run resumes from, so a
// checkpoint.dir on a disk of rank 0's node alone works until the job is requeued
// and rank 0 lands on another node: that node finds no checkpoint and the run starts
// afresh, silently, its progress lost. The check makes that failure come at the first
// start instead. Rank 0 writes a probe file with a random token into the directory, the
// token is broadcast over the control communicator, and every rank (not only the first
// of each node: it needs no knowledge of the node layout, and it also catches ranks of
// one node in different mount namespaces, as containers give) reads the file back. The
// outcomes and host names are gathered; if any rank cannot see the token, every rank
// throws the same ConfigError (agreed, reported by rank 0) naming the directory, the
// nodes and ranks, and what to do. The file is removed after the gather, when every
// rank has read it; its name carries the token, so jobs started at once on one
// directory do not overwrite each other's probe.
//
// It runs at every start of a job of more than one rank, before the resume point is
// looked for, not only when checkpoint.every_steps > 0 or --resume is given: a stop on
// a signal (a preemption, the very case of a requeue) writes a checkpoint whatever
// every_steps says. A directory rank 0 cannot write is not this check's to report: the
// checkpoint that fails says so, as checkpoint.on_error asks (stop or continue), so
// the check then decides nothing.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace dtrain {

// What one rank found at the probe's path.
enum class ProbeSight : int32_t { kSeen = 0, kMissing = 1, kOtherToken = 2 };

struct RankSight {
  int rank = 0;
  std::string host;
  ProbeSight sight = ProbeSight::kSeen;
};

// The probe file's content as this rank reads it at `path`, or nullopt where it
// cannot be read. The real one reads the file; a test gives each rank its own view.
using ProbeReader = std::function<std::optional<std::string>(const std::string& path)>;

// Pure: "" when every rank saw the probe; else the error's message, naming `dir`, the
// hosts and ranks that did not see it, and what to do.
std::string checkpoint_dir_unseen_message(const std::string& dir, const std::vector<RankSight>& sights);

// Collective over `control` (every rank, in the same order). Returns when every rank
// sees `dir` as rank 0 does, or when rank 0 cannot write there (see the Note); throws
// an agreed ConfigError otherwise. `host` is this rank's node name.
void check_checkpoint_dir_shared(const std::string& dir, const std::string& host, Communicator& control,
                                 const ProbeReader& read = {});

// This machine's host name ("unknown" where it has none).
std::string this_host_name();

}  // namespace dtrain
