// Byte sizes as config values (memory.limit: 512MiB).
#include <gtest/gtest.h>

#include <stdexcept>

#include "runtime/byte_size.h"

namespace dtrain {
namespace {

TEST(ByteSize, UnitsAreDecimalOrBinary) {
  EXPECT_EQ(parse_byte_size("1024"), 1024);
  EXPECT_EQ(parse_byte_size("64KiB"), 64 * 1024);
  EXPECT_EQ(parse_byte_size("64MiB"), int64_t{64} << 20);
  EXPECT_EQ(parse_byte_size("1.5 GiB"), int64_t{3} << 29);
  EXPECT_EQ(parse_byte_size("512MB"), 512000000);
  EXPECT_EQ(parse_byte_size("2GB"), 2000000000);
  EXPECT_EQ(parse_byte_size("10B"), 10);
}

TEST(ByteSize, NonsenseIsRefusedSayingWhatWorks) {
  for (const char* bad : {"lots", "64 MiBs", "-1MiB", "", "1.5"}) {
    try {
      parse_byte_size(bad);
      FAIL() << "accepted '" << bad << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).size(), 0u);
    }
  }
  try {
    parse_byte_size("3 parsecs");
    FAIL() << "accepted '3 parsecs'";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("MiB"), std::string::npos) << e.what();
  }
}

TEST(ByteSize, FormatPicksAReadableUnit) {
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes(64.0 * 1048576), "64.0 MiB");
  EXPECT_EQ(format_bytes(1.5 * 1073741824), "1.50 GiB");
}

}  // namespace
}  // namespace dtrain
