// Typed errors (DESIGN contract 7). Library code throws these; only launch/ turns
// them into a message and an exit code. Each message says what went wrong, where
// (file:line of the config, the rank, the file on disk) and what to do.
#pragma once

#include <stdexcept>
#include <string>

namespace dtrain {

// Exit codes, documented in README.md. launch/ maps errors to these.
enum ExitCode : int {
  kExitOk = 0,
  kExitInternal = 1,     // a bug or an unexpected failure
  kExitBadInput = 2,     // config, command line or data file is wrong: fix the input
  kExitRuntime = 3,      // device or communication failure while running
  kExitStopped = 4,      // stopped on a signal after writing a checkpoint: resume it
};

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
  virtual int exit_code() const { return kExitInternal; }
  virtual const char* kind() const { return "error"; }

  // Set when every rank of the job learned of this failure through a collective, so
  // launch/ can end all ranks cleanly instead of aborting the job; `report` tells the
  // one rank that prints the message.
  void set_agreed(bool report) {
    agreed_ = true;
    report_ = report;
  }
  bool agreed() const { return agreed_; }
  bool should_report() const { return report_; }

 private:
  bool agreed_ = false;
  bool report_ = true;
};

// A config key that is unknown, has the wrong type or an out-of-range value.
class ConfigError : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return kExitBadInput; }
  const char* kind() const override { return "config error"; }
};

// A wrong command line.
class UsageError : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return kExitBadInput; }
  const char* kind() const override { return "usage error"; }
};

// A missing, truncated or corrupt data file.
class DataError : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return kExitBadInput; }
  const char* kind() const override { return "data error"; }
};

// A device (CPU allocator, CUDA, cuBLAS, cuDNN) failure.
class DeviceError : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return kExitRuntime; }
  const char* kind() const override { return "device error"; }
};

// An allocation the device (or the allocator's byte limit) could not satisfy. The
// batch planner's probe catches it and retries with a smaller micro-batch.
class OutOfMemoryError : public DeviceError {
 public:
  using DeviceError::DeviceError;
  const char* kind() const override { return "out of memory"; }
};

// A communication (MPI, NCCL) failure, or ranks that disagree.
class CommError : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return kExitRuntime; }
  const char* kind() const override { return "communication error"; }
};

// Thrown on the ranks that did not fail when another rank did, once they agreed.
class PeerFailure : public Error {
 public:
  PeerFailure(const std::string& what, int code) : Error(what), code_(code) {}
  int exit_code() const override { return code_; }
  const char* kind() const override { return "error on another rank"; }

 private:
  int code_;
};

}  // namespace dtrain
