#include "runtime/token_shards.h"

#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "kernels/errors.h"
#include "runtime/file_match.h"

namespace dtrain {
namespace {

// The shard's bytes are little-endian; reading them straight into uint16 needs a
// little-endian host (x86-64, AArch64).
static_assert(std::endian::native == std::endian::little, "token shards are read on little-endian hosts only");

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw DataError(path + ": " + what);
}

constexpr const char* kRegenerate = "regenerate it with llm.c's dev/data scripts (write_datafile)";

}  // namespace

void read_token_shard(const std::string& path, int64_t vocab, std::vector<uint16_t>& out) {
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) fail(path, "cannot read the token shard: " + ec.message() + "; check the path");
  if (size == 0) fail(path, std::string("is empty (0 bytes), not a token shard; remove it or ") + kRegenerate);
  if (size < static_cast<uint64_t>(kTokenShardHeaderBytes)) {
    fail(path, "is " + std::to_string(size) + " bytes, shorter than the " + std::to_string(kTokenShardHeaderBytes) +
                   "-byte header of a token shard: truncated or not a shard; " + kRegenerate);
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open the token shard: ") + std::strerror(errno));
  int32_t header[kTokenShardHeaderInts];
  if (!in.read(reinterpret_cast<char*>(header), kTokenShardHeaderBytes)) fail(path, "cannot read the header");
  if (header[0] != kTokenShardMagic) {
    fail(path, "wrong magic number " + std::to_string(header[0]) + " (a token shard starts with " +
                   std::to_string(kTokenShardMagic) + "): not an llm.c token shard; " + kRegenerate);
  }
  if (header[1] != kTokenShardVersion) {
    fail(path, "unsupported shard version " + std::to_string(header[1]) + " (only version " +
                   std::to_string(kTokenShardVersion) + ", uint16 tokens, is read); " + kRegenerate);
  }
  const int64_t count = header[2];
  if (count < 0) fail(path, "the header's token count is negative (" + std::to_string(count) + "): corrupt header; " + kRegenerate);
  const uint64_t body = size - static_cast<uint64_t>(kTokenShardHeaderBytes);
  const uint64_t expected = static_cast<uint64_t>(count) * 2;
  if (expected > body) {
    fail(path, "the header says " + std::to_string(count) + " tokens (" + std::to_string(expected) +
                   " bytes) but only " + std::to_string(body) + " bytes follow the header: truncated; " + kRegenerate);
  }
  if (expected < body) {
    fail(path, "has " + std::to_string(body - expected) + " bytes after the " + std::to_string(count) +
                   " tokens its header announces: corrupt or not one shard; " + kRegenerate);
  }
  const size_t first = out.size();
  out.resize(first + static_cast<size_t>(count));
  if (!in.read(reinterpret_cast<char*>(out.data() + first), static_cast<std::streamsize>(expected))) {
    fail(path, std::string("cannot read the tokens: ") + std::strerror(errno));
  }
  for (int64_t i = 0; i < count; ++i) {
    const uint16_t t = out[first + static_cast<size_t>(i)];
    if (t >= vocab) {
      fail(path, "token " + std::to_string(i) + " (byte offset " + std::to_string(kTokenShardHeaderBytes + 2 * i) +
                     ") has value " + std::to_string(t) + ", at or past the vocabulary size " + std::to_string(vocab) +
                     " (model.vocab, or GPT-2's 50257 when it is not set); set model.vocab above " +
                     std::to_string(t) + " or tokenize the data with the model's tokenizer");
    }
  }
}

std::vector<uint16_t> read_token_shards(const std::string& pattern, const std::string& key, int64_t vocab) {
  const std::vector<std::string> files = match_files(pattern, key);
  std::vector<uint16_t> tokens;
  for (const std::string& f : files) read_token_shard(f, vocab, tokens);
  if (tokens.empty()) {
    throw DataError(key + " = '" + pattern + "': the " + std::to_string(files.size()) +
                    " shard(s) hold no tokens (first: " + files.front() + "); point " + key + " at shards with data");
  }
  return tokens;
}

}  // namespace dtrain
