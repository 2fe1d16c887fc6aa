// The entropies that bound what a byte-level language model can reach on a text's
// validation split, for the GPT learning test (tests/e2e/gpt_learning.sh).
//   byte_entropy FILE VAL_FRACTION SEQ_LEN
// The validation split and its targets follow Note [Text windows] (runtime/text_dataset.h),
// re-derived here from the note, not from dtrain's code: the split is the last
// round(L * VAL_FRACTION) bytes v[0..n); its windows start at 0, T, 2T, ... and predict
// the targets v[1..m*T] with m = floor((n - 1) / T). Over those targets it prints, in
// nats per byte:
//   unigram  H(X) = -sum_x p(x) ln p(x), p the targets' own byte frequencies. By Gibbs'
//            inequality no predictor that ignores the context has a lower cross-entropy
//            on these targets, whatever it learnt from the training split.
//   bigram   H(X | previous byte), the conditional frequencies again taken from the
//            targets themselves (every target's previous byte is in its window's input):
//            what the best table of byte pairs fitted to the validation split reaches.
// Exit 0, or 2 when the file cannot be read or holds no window.
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: byte_entropy FILE VAL_FRACTION SEQ_LEN\n");
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "byte_entropy: cannot read %s\n", argv[1]);
    return 2;
  }
  const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const double fraction = std::atof(argv[2]);
  const int64_t seq_len = std::atol(argv[3]);
  const int64_t total = static_cast<int64_t>(bytes.size());
  const int64_t n = std::llround(static_cast<double>(total) * fraction);
  const int64_t targets = seq_len > 0 && n > 0 ? (n - 1) / seq_len * seq_len : 0;
  if (targets == 0) {
    std::fprintf(stderr, "byte_entropy: %s has no validation window of %ld bytes\n", argv[1], static_cast<long>(seq_len));
    return 2;
  }
  const unsigned char* v = bytes.data() + (total - n);
  std::array<double, 256> unigram{};
  std::array<double, 256> previous{};
  std::vector<double> pair(256 * 256, 0.0);  // (previous, next)
  for (int64_t j = 1; j <= targets; ++j) {
    unigram[v[j]] += 1;
    previous[v[j - 1]] += 1;
    pair[v[j - 1] * 256 + v[j]] += 1;
  }
  const double count = static_cast<double>(targets);
  double h1 = 0.0, h2 = 0.0;
  for (int x = 0; x < 256; ++x) {
    if (unigram[x] > 0) h1 -= unigram[x] / count * std::log(unigram[x] / count);
  }
  for (int a = 0; a < 256; ++a) {
    for (int x = 0; x < 256; ++x) {
      const double c = pair[a * 256 + x];
      if (c > 0) h2 -= c / count * std::log(c / previous[a]);
    }
  }
  std::printf("targets %ld\nunigram %.6f\nbigram %.6f\n", static_cast<long>(targets), h1, h2);
  return 0;
}
