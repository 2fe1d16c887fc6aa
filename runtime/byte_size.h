// Byte sizes as people write them (memory.limit: 512MiB) and as reports print them.
#pragma once

#include <cstdint>
#include <string>

namespace dtrain {

// "1024", "64KiB", "1.5 GiB", "512MB" (KB/MB/GB are powers of 1000, KiB/MiB/GiB of
// 1024; B or no unit is bytes). Throws std::invalid_argument saying what is accepted.
int64_t parse_byte_size(const std::string& text);

// "123 B", "4.0 KiB", "56.3 MiB", "1.20 GiB".
std::string format_bytes(double bytes);

}  // namespace dtrain
