// Checkpoints: the whole training state in one file that any world size can read.
//
// Note [Checkpoint format]
// Little-endian, as the machines that write it. A 24-byte header: the magic
// "DTRNCKPT", the format version (u32), the number of sections (u32), flags (u32, 0)
// and the CRC-32C of those 20 bytes (u32). Then the sections, each a 16-byte header
// (tag u32, payload length u64, CRC-32C of the payload u32) and its payload:
//   META  step, samples seen, seed, hash of the config, the lines that must match
//         to resume (model, data, seed, optimizer, global batch) and the effective
//         config as YAML, for people
//   PLAN  the batch plan it was written under (world size, k, G, micro-batches)
//   SAMP  the sampler position: epoch, batch within the epoch, steps per epoch
//   RNGS  the random streams: the sampler's seed (the order is perm(seed, epoch);
//         training draws from no other stream)
//   PARM  the flat parameters
//   OPTM  the optimizer's flat state buffers and its step count
//   NOIS  the gradient noise scale's moving averages
// Nothing follows the last section. The state is whole, not sharded: every rank holds
// the same parameters and optimizer state (data parallelism), rank 0 writes them.
// A writer writes NAME.tmp, fsyncs it, renames it to NAME and fsyncs the directory,
// so a crash leaves either the old set of checkpoints or the new one, never a torn
// file under a checkpoint's name.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kernels/errors.h"
#include "runtime/batch_plan.h"

namespace dtrain {

inline constexpr uint32_t kCheckpointVersion = 1;

// A checkpoint could not be written (the directory is missing or unwritable, the disk
// is full). The previous checkpoints are untouched.
class StorageError : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return kExitRuntime; }
  const char* kind() const override { return "storage error"; }
};

struct CheckpointState {
  int64_t step = 0;     // optimizer steps done
  int64_t samples = 0;  // samples seen
  uint64_t seed = 0;
  uint64_t config_hash = 0;
  std::vector<std::string> compat;  // "key: value" lines that must match to resume
  std::string config_yaml;
  BatchPlan plan;
  int64_t epoch = 0, batch_in_epoch = 0, steps_per_epoch = 0;
  std::vector<float> params;
  std::vector<std::vector<float>> optimizer_state;
  int64_t optimizer_steps = 0;
  std::array<double, 3> noise{};  // the noise scale's averages (|G|^2, tr Sigma, weight)
  int64_t noise_steps = 0;
};

// Writes `state` to `path` atomically (Note [Checkpoint format]). Throws StorageError
// naming the path and the system's reason; the temporary file is removed.
void write_checkpoint(const std::string& path, const CheckpointState& state);

// Reads and checks a checkpoint. Throws DataError naming the file and what is wrong:
// not a checkpoint (magic), a newer format version, a truncated file, a section whose
// checksum does not match, an unknown or missing section, trailing bytes.
CheckpointState read_checkpoint(const std::string& path);

// "DIR/ckpt-000001234.dtrain".
std::string checkpoint_path(const std::string& dir, int64_t step);
// The checkpoints in `dir` by step, newest first (by name; not read).
std::vector<std::string> list_checkpoints(const std::string& dir);
// Deletes all but the newest `keep` checkpoints (and stale .tmp files) of `dir`.
void rotate_checkpoints(const std::string& dir, int64_t keep);

struct ResumeChoice {
  std::optional<std::string> path;    // the newest checkpoint that reads
  std::vector<std::string> rejected;  // one line per newer one that did not, and why
};
// For --resume auto: the newest valid checkpoint of `dir`, if any.
ResumeChoice newest_valid_checkpoint(const std::string& dir);

}  // namespace dtrain
