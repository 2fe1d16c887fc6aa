#include "runtime/optimizer_shards.h"

#include <algorithm>

#include "kernels/check.h"

namespace dtrain {

std::vector<FlatRange> shard_ranges(int64_t n, std::span<const int64_t> weights, int64_t align) {
  DTRAIN_ASSERT(n >= 0 && align >= 1 && !weights.empty(), "shard_ranges: n " << n << ", align " << align << ", "
                                                                               << weights.size() << " ranks");
  unsigned __int128 total = 0;
  for (int64_t w : weights) {
    DTRAIN_ASSERT(w >= 0, "shard_ranges: a negative weight " << w);
    total += static_cast<uint64_t>(w);
  }
  const bool equal = total == 0;
  if (equal) total = weights.size();
  std::vector<FlatRange> ranges;
  unsigned __int128 before = 0;  // the weight of the ranks before r
  int64_t start = 0;
  for (size_t r = 0; r < weights.size(); ++r) {
    before += equal ? 1 : static_cast<uint64_t>(weights[r]);
    int64_t end = n;
    if (r + 1 < weights.size()) {
      // The nearest multiple of align to n * before / total, in exact integers.
      const unsigned __int128 scaled = static_cast<unsigned __int128>(n) * before;
      const unsigned __int128 units = (2 * scaled + total * static_cast<uint64_t>(align)) /
                                      (2 * total * static_cast<uint64_t>(align));
      end = std::clamp<int64_t>(static_cast<int64_t>(units) * align, start, n);
    }
    ranges.push_back(FlatRange{start, end - start});
    start = end;
  }
  return ranges;
}

}  // namespace dtrain
