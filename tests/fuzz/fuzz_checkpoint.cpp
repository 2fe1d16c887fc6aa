// The checkpoint reader on arbitrary bytes: a DataError is the only acceptable failure.
#include <cstdint>

#include "kernels/errors.h"
#include "runtime/checkpoint.h"
#include "tests/fuzz/fuzz_input_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = dtrain::fuzz::write_input(data, size, ".dtrain");
  try {
    (void)dtrain::read_checkpoint(path);
  } catch (const dtrain::DataError&) {
  }
  return 0;
}
