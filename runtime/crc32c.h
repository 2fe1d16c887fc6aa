// CRC-32C (Castagnoli), the checksum of every checkpoint section: it catches every
// burst error up to 32 bits and any odd number of flipped bits.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dtrain {

// The CRC-32C of `bytes` bytes at `data`, continuing from `crc` (0 to start).
uint32_t crc32c(const void* data, size_t bytes, uint32_t crc = 0);

}  // namespace dtrain
