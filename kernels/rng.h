// A small deterministic random generator (SplitMix64) whose streams are the same on
// every platform and compiler, unlike <random>'s distributions. Everything in dtrain
// that must agree across ranks and runs (parameter init, the sample order, synthetic
// data) draws from it, seeded by a mix of the config seed and a purpose/epoch/index.
#pragma once

#include <cmath>
#include <cstdint>

namespace dtrain {

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  // A seed derived from several values; order matters.
  static uint64_t mix(uint64_t a, uint64_t b) {
    uint64_t z = a ^ (b + 0x9e3779b97f4a7c15ULL + (a << 6) + (a >> 2));
    return finalize(z);
  }

  uint64_t next_u64() {
    state_ += 0x9e3779b97f4a7c15ULL;
    return finalize(state_);
  }
  // Uniform in [0, bound), without modulo bias (Lemire's method with rejection).
  uint64_t below(uint64_t bound) {
    unsigned __int128 m = static_cast<unsigned __int128>(next_u64()) * bound;
    uint64_t low = static_cast<uint64_t>(m);
    if (low < bound) {
      const uint64_t threshold = (0 - bound) % bound;
      while (low < threshold) {
        m = static_cast<unsigned __int128>(next_u64()) * bound;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Standard normal (Box-Muller; one value per call keeps the stream simple).
  double normal() {
    double u1 = uniform();
    while (u1 <= 0.0) u1 = uniform();
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  static uint64_t finalize(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  uint64_t state_;
};

}  // namespace dtrain
