// Note [Checkpoint directory seen by every node]: a checkpoint.dir that some rank does
// not see as rank 0 does is an agreed ConfigError on every rank, before training.
// One machine has one file system, so a rank that "lives on another node" is given a
// reader that looks elsewhere (ProbeReader).
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <span>
#include <string>

#include <gtest/gtest.h>

#include "comm/typed_collectives.h"
#include "kernels/errors.h"
#include "runtime/checkpoint_dir_check.h"
#include "tests/mpi/mpi_env.h"

namespace dtrain {
namespace {

namespace fs = std::filesystem;

// A directory name every rank agrees on (rank 0's pid), not yet made.
std::string shared_test_dir(const std::string& what) {
  Communicator& comm = testing_mpi::world();
  uint64_t pid = static_cast<uint64_t>(getpid());
  broadcast(comm, std::span<uint64_t>(&pid, 1), 0)->wait();
  return (fs::temp_directory_path() / ("dtrain-dircheck-" + what + "-" + std::to_string(pid))).string();
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(CheckpointDirCheck, EveryRankSeeingTheDirectoryPassesAndLeavesNoProbe) {
  Communicator& comm = testing_mpi::world();
  const std::string dir = shared_test_dir("seen");
  EXPECT_NO_THROW(check_checkpoint_dir_shared(dir, "node0", comm));
  comm.barrier()->wait();
  // The check made the directory for its probe and removed both.
  EXPECT_FALSE(fs::exists(dir)) << dir;
  comm.barrier()->wait();  // every rank looked before rank 0 makes it again

  // In a directory that already holds checkpoints, only the probe goes.
  if (comm.rank() == 0) {
    fs::create_directories(dir);
    std::ofstream(dir + "/ckpt-000000010.dtrain") << "x";
  }
  comm.barrier()->wait();
  EXPECT_NO_THROW(check_checkpoint_dir_shared(dir, "node0", comm));
  comm.barrier()->wait();
  EXPECT_TRUE(fs::exists(dir + "/ckpt-000000010.dtrain"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
  comm.barrier()->wait();
  if (comm.rank() == 0) fs::remove_all(dir);
}

// The last rank is "on node9", where the path holds another (empty) directory.
TEST(CheckpointDirCheck, ARankThatCannotSeeTheProbeStopsEveryRank) {
  Communicator& comm = testing_mpi::world();
  if (comm.size() < 2) GTEST_SKIP() << "needs a rank other than rank 0, which wrote the probe";
  const std::string dir = shared_test_dir("unseen");
  const int blind = comm.size() - 1;
  const std::string host = comm.rank() == blind ? "node9" : "node0";
  ProbeReader elsewhere = [&](const std::string& path) -> std::optional<std::string> {
    if (comm.rank() == blind) return std::nullopt;  // node9's own directory has no probe
    std::ifstream in(path);
    if (!in) return std::nullopt;
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  try {
    check_checkpoint_dir_shared(dir, host, comm, elsewhere);
    FAIL() << "rank " << comm.rank() << " was not stopped though rank " << blind << " cannot see " << dir;
  } catch (const ConfigError& e) {
    EXPECT_TRUE(e.agreed());
    EXPECT_EQ(e.should_report(), comm.rank() == 0);
    EXPECT_EQ(e.exit_code(), kExitBadInput);
    const std::string what = e.what();
    EXPECT_TRUE(contains(what, "checkpoint.dir " + dir + " ")) << what;
    EXPECT_TRUE(contains(what, "not seen on node9 by rank " + std::to_string(blind) + " (missing)")) << what;
    EXPECT_FALSE(contains(what, "node0")) << what;
    EXPECT_TRUE(contains(what, "a directory every node shares")) << what;
  }
  comm.barrier()->wait();
  EXPECT_FALSE(fs::exists(dir)) << "the probe or its directory was left behind";
}

// A file at the probe's path without this run's token is not this run's probe.
TEST(CheckpointDirCheck, AProbeWithAnotherTokenIsNotSeeingTheDirectory) {
  Communicator& comm = testing_mpi::world();
  if (comm.size() < 2) GTEST_SKIP() << "needs a rank other than rank 0, which wrote the probe";
  const std::string dir = shared_test_dir("stale");
  ProbeReader stale = [&](const std::string&) -> std::optional<std::string> {
    return std::string("dtrain checkpoint.dir probe 7\n");
  };
  try {
    check_checkpoint_dir_shared(dir, "node" + std::to_string(comm.rank()), comm, stale);
    FAIL() << "a probe with another token was taken for this run's";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(contains(e.what(), "not seen on node1 by rank 1 (another file in its place)")) << e.what();
  }
  comm.barrier()->wait();
  if (comm.rank() == 0) fs::remove_all(dir);
}

// Where rank 0 cannot write, the checkpoint that fails reports it (checkpoint.on_error).
TEST(CheckpointDirCheck, AnUnwritableDirectoryIsLeftToTheCheckpoint) {
  Communicator& comm = testing_mpi::world();
  const std::string blocked = shared_test_dir("blocked");
  if (comm.rank() == 0) std::ofstream(blocked) << "a file where the folder should be";
  comm.barrier()->wait();
  EXPECT_NO_THROW(check_checkpoint_dir_shared(blocked + "/ckpt", "node0", comm));
  comm.barrier()->wait();
  if (comm.rank() == 0) fs::remove(blocked);
}

TEST(CheckpointDirUnseenMessage, GroupsRanksByHostInNameOrder) {
  std::vector<RankSight> sights = {{0, "a", ProbeSight::kSeen},
                                   {1, "c", ProbeSight::kMissing},
                                   {2, "b", ProbeSight::kOtherToken},
                                   {3, "c", ProbeSight::kMissing}};
  EXPECT_EQ(checkpoint_dir_unseen_message("/ck", sights),
            "checkpoint.dir /ck is not the same directory on every node: a file rank 0 wrote there is not seen "
            "on b by rank 2 (another file in its place); not seen on c by ranks 1 (missing), 3 (missing). Rank 0 "
            "writes every checkpoint and reads the one a run resumes from, and after a requeue it may run on any "
            "node, which would then start afresh. Set checkpoint.dir to a directory every node shares (on the "
            "cluster's shared file system)");
  sights[1].sight = sights[2].sight = sights[3].sight = ProbeSight::kSeen;
  EXPECT_EQ(checkpoint_dir_unseen_message("/ck", sights), "");
}

}  // namespace
}  // namespace dtrain
