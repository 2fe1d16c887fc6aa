// The IDX reader on arbitrary bytes (plain, or gzip when the input starts like it): a
// DataError is the only acceptable failure.
#include <cstdint>

#include "kernels/errors.h"
#include "runtime/idx_reader.h"
#include "tests/fuzz/fuzz_input_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = dtrain::fuzz::write_input(data, size, ".idx");
  for (int rank : {1, 3}) {
    try {
      (void)dtrain::read_idx(path, rank);
    } catch (const dtrain::DataError&) {
    }
  }
  return 0;
}
