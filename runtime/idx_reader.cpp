#include "runtime/idx_reader.h"

#include <zlib.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <memory>

#include "kernels/errors.h"

namespace dtrain {
namespace {

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw DataError(path + ": " + what);
}

// Reads up to n bytes, fewer only at the end of the file; corrupt data is an error.
size_t read_some(gzFile f, const std::string& path, void* dst, size_t n, const char* part) {
  size_t got = 0;
  auto* out = static_cast<uint8_t*>(dst);
  while (got < n) {
    const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - got, 1u << 30));
    const int r = gzread(f, out + got, chunk);
    if (r < 0) {
      int err = 0;
      const char* msg = gzerror(f, &err);
      fail(path, std::string("corrupt compressed data while reading the ") + part + ": " + msg +
                     "; re-download or reinstall the file (Debian: apt-get install --reinstall dataset-fashion-mnist)");
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

[[noreturn]] void truncated(const std::string& path, const char* part, uint64_t needed, uint64_t got) {
  fail(path, std::string("truncated: the ") + part + " needs " + std::to_string(needed) +
                 " bytes but the file ends after " + std::to_string(got) + "; re-download or reinstall the file");
}

// Reads exactly n bytes or explains why not.
void read_exact(gzFile f, const std::string& path, void* dst, size_t n, const char* part) {
  const size_t got = read_some(f, path, dst, n, part);
  if (got < n) truncated(path, part, n, got);
}

}  // namespace

IdxArray read_idx(const std::string& path, int expected_rank) {
  GzFile f(gzopen(path.c_str(), "rb"));
  if (!f) {
    fail(path, std::string("cannot open: ") + std::strerror(errno) +
                   "; set data.path to the folder holding the Fashion-MNIST files "
                   "(Debian: apt-get install dataset-fashion-mnist)");
  }
  uint8_t magic[4];
  read_exact(f.get(), path, magic, 4, "header");
  if (magic[0] != 0 || magic[1] != 0) {
    fail(path, "not an IDX file: the magic number must start with two zero bytes");
  }
  if (magic[2] != 0x08) {
    fail(path, "unsupported IDX data type 0x" + std::to_string(magic[2]) + ": only unsigned bytes (0x08) are read");
  }
  if (magic[3] != expected_rank) {
    fail(path, "has " + std::to_string(magic[3]) + " dimensions, expected " + std::to_string(expected_rank));
  }
  IdxArray out;
  uint64_t total = 1;
  for (int i = 0; i < expected_rank; ++i) {
    uint8_t b[4];
    read_exact(f.get(), path, b, 4, "header");
    const uint32_t d = (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
    if (d == 0) fail(path, "dimension " + std::to_string(i) + " is 0");
    total *= d;
    if (total > (uint64_t{1} << 34)) fail(path, "dimensions describe more than 16 GiB of data: corrupt header");
    out.dims.push_back(d);
  }
  // The data grows as it arrives, so a header that announces more than the file
  // holds costs no more memory than the file does (found by tests/fuzz).
  constexpr uint64_t kChunk = uint64_t{1} << 24;
  for (uint64_t have = 0; have < total;) {
    const uint64_t want = std::min(kChunk, total - have);
    out.data.resize(have + want);
    const size_t got = read_some(f.get(), path, out.data.data() + have, want, "data");
    if (got < want) truncated(path, "data", total, have + got);
    have += want;
  }
  uint8_t extra;
  const int r = gzread(f.get(), &extra, 1);
  if (r > 0) fail(path, "has bytes after the " + std::to_string(total) + " data bytes its header announces: corrupt file");
  if (r < 0) {
    int err = 0;
    fail(path, std::string("corrupt compressed data at the end: ") + gzerror(f.get(), &err));
  }
  return out;
}

}  // namespace dtrain
