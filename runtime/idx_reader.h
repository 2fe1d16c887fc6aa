// Reader for the IDX format of (Fashion-)MNIST: a 4-byte magic (0, 0, type, rank),
// rank big-endian uint32 dimensions, then the data. Files may be gzip-compressed or
// plain (zlib reads both). Only unsigned-byte data (type 0x08) is accepted. Every
// problem — a missing file, a wrong magic, a dimension of 0, a truncated body, bytes
// after the end — is a DataError naming the file and what is wrong.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dtrain {

struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;  // product(dims) bytes
};

IdxArray read_idx(const std::string& path, int expected_rank);

}  // namespace dtrain
