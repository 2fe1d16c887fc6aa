// Reader for llm.c's token shards (llm.c dev/data/data_common.py, write_datafile):
// a header of 256 little-endian int32 — [0] magic 20240520, [1] version 1, [2] the
// token count — then exactly that many little-endian uint16 tokens. Every problem — a
// missing file, a wrong magic or version, a count the file's size does not match, a
// token at or past the vocabulary — is a DataError naming the file, what is wrong and
// what to do.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dtrain {

inline constexpr int32_t kTokenShardMagic = 20240520;
inline constexpr int32_t kTokenShardVersion = 1;
inline constexpr int64_t kTokenShardHeaderInts = 256;
inline constexpr int64_t kTokenShardHeaderBytes = kTokenShardHeaderInts * 4;

// Appends the shard's tokens to `out`. Each must be below `vocab`.
void read_token_shard(const std::string& path, int64_t vocab, std::vector<uint16_t>& out);

// The tokens of every shard `pattern` names (a file, a folder or a glob; sorted by
// path), concatenated. `key` is the config key the pattern came from. An empty
// stream is a DataError.
std::vector<uint16_t> read_token_shards(const std::string& pattern, const std::string& key, int64_t vocab);

}  // namespace dtrain
