// The config loader on arbitrary bytes: a ConfigError is the only acceptable failure.
#include <cstdint>

#include "kernels/errors.h"
#include "runtime/config.h"
#include "tests/fuzz/fuzz_input_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = dtrain::fuzz::write_input(data, size, ".yaml");
  try {
    const dtrain::Config config = dtrain::load_config(path, {});
    (void)dtrain::config_to_yaml(config);
  } catch (const dtrain::ConfigError&) {
  }
  return 0;
}
