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
};

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
  virtual int exit_code() const { return kExitInternal; }
  virtual const char* kind() const { return "error"; }
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

// A communication (MPI, NCCL) failure, or ranks that disagree.
class CommError : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return kExitRuntime; }
  const char* kind() const override { return "communication error"; }
};

}  // namespace dtrain
