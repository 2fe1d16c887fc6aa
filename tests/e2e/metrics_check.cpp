// Checks on the metrics.jsonl files that finished runs wrote, for the end-to-end tests.
//   metrics_check compare REL STEPS DIR_A DIR_B...   train loss at steps 1..STEPS (or
//                                                     FIRST-LAST) of every run within REL
//                                                     relative of DIR_A's; REL 0: equal bits;
//                                                     so is the test loss of every evaluation
//                                                     both runs made in that range (and, for
//                                                     REL 0, the test accuracy)
//   metrics_check compare-rounded EPS STEPS DIR_A DIR_B...
//                                                     train loss at steps 1..STEPS of every run
//                                                     within 1e-4 relative plus EPS times DIR_A's
//                                                     loss path up to that step (the sum of
//                                                     |L(s+1) - L(s)| over s < t): runs whose
//                                                     updates differ by at most EPS relative
//                                                     (Note [Rounded-gradient bound]); so is
//                                                     the test loss of every evaluation
//   metrics_check min-accuracy MIN DIR                the last eval_accuracy is at least MIN
//   metrics_check max-eval-loss MAX DIR               the last eval_loss is below MAX, and its
//                                                     eval_bits_per_byte is eval_loss / ln 2
//   metrics_check plan FILE [mixed]                   a plan.json (dtrain plan --json) holds
//                                                     k * sum(micro) == G, every micro-batch
//                                                     within its capacity, every probe peak
//                                                     within its limit and within 10% of the
//                                                     prediction; `mixed`: not all equal
//   metrics_check noise-scale DIR                     the last train line has a positive,
//                                                     finite noise_scale
// Exit 0 when the check holds, 1 when it does not, 2 for unusable input.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace {

// The number after "key": in a flat JSON object line, if present.
std::optional<double> field(const std::string& line, const std::string& key) {
  const std::string tag = "\"" + key + "\":";
  const size_t at = line.find(tag);
  if (at == std::string::npos) return std::nullopt;
  return std::strtod(line.c_str() + at + tag.size(), nullptr);
}

std::vector<std::string> lines_of(const std::string& dir) {
  std::ifstream in(dir + "/metrics.jsonl");
  if (!in) {
    std::cerr << "metrics_check: cannot read " << dir << "/metrics.jsonl\n";
    std::exit(2);
  }
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// `key` of the records of `kind` ("train" or "eval") that have it, by step (a GPT's
// evaluation has no eval_accuracy, for one).
std::map<long, double> by_step(const std::string& dir, const std::string& kind, const std::string& key) {
  std::map<long, double> values;
  for (const auto& line : lines_of(dir)) {
    if (line.find("\"kind\":\"" + kind + "\"") == std::string::npos) continue;
    const auto step = field(line, "step");
    const auto value = field(line, key);
    if (step && value) values[static_cast<long>(*step)] = *value;
  }
  return values;
}

double relative(double a, double b) { return std::fabs(a - b) / std::max(std::fabs(a), 1e-12); }

// The evaluations both runs made at steps first..last: test loss and accuracy within
// `rel`. Returns the number of differences beyond it.
int compare_evals(double rel, long first, long last, const std::string& ref_dir, const std::string& dir) {
  int failures = 0;
  int compared = 0;
  // Accuracy counts whole samples, so only equal-bit runs (rel 0) must agree on it:
  // fp-level differences may flip a sample whose two top logits are nearly tied.
  const std::vector<std::string> keys =
      rel == 0.0 ? std::vector<std::string>{"eval_loss", "eval_accuracy"} : std::vector<std::string>{"eval_loss"};
  for (const std::string& key : keys) {
    const auto reference = by_step(ref_dir, "eval", key);
    const auto other = by_step(dir, "eval", key);
    // Both runs evaluate at the same steps: an evaluation missing from one is a failure.
    for (const auto& [run, have, lacking] : {std::tuple{&reference, &ref_dir, &dir}, std::tuple{&other, &dir, &ref_dir}}) {
      for (const auto& [s, value] : *run) {
        if (s >= first && s <= last && !(run == &reference ? other : reference).count(s)) {
          std::printf("step %ld: %s evaluated in %s but not in %s\n", s, key.c_str(), have->c_str(), lacking->c_str());
          ++failures;
        }
      }
    }
    for (const auto& [s, a] : reference) {
      if (s < first || s > last || !other.count(s)) continue;
      ++compared;
      const double b = other.at(s);
      if (relative(a, b) > rel) {
        std::printf("step %ld: %s %.10g in %s vs %.10g in %s: relative difference %.3g > %.3g\n", s, key.c_str(), b,
                    dir.c_str(), a, ref_dir.c_str(), relative(a, b), rel);
        ++failures;
      }
    }
  }
  std::printf("%s vs %s: %d evaluation figures compared, %d failing\n", dir.c_str(), ref_dir.c_str(),
              compared, failures);
  return failures;
}

int compare(double rel, long first, long steps, const std::vector<std::string>& dirs) {
  const auto reference = by_step(dirs[0], "train", "loss");
  int failures = 0;
  for (size_t d = 1; d < dirs.size(); ++d) {
    const auto other = by_step(dirs[d], "train", "loss");
    double worst = 0.0;
    for (long s = first; s <= steps; ++s) {
      if (!reference.count(s) || !other.count(s)) {
        std::cerr << "step " << s << " missing in " << (reference.count(s) ? dirs[d] : dirs[0]) << "\n";
        return 1;
      }
      const double a = reference.at(s), b = other.at(s);
      const double r = relative(a, b);
      worst = std::max(worst, r);
      if (r > rel) {
        std::printf("step %ld: loss %.10g in %s vs %.10g in %s: relative difference %.3g > %.3g\n", s, b,
                    dirs[d].c_str(), a, dirs[0].c_str(), r, rel);
        ++failures;
      }
    }
    std::printf("%s vs %s: steps %ld-%ld, largest relative loss difference %.3g (bound %.3g)\n", dirs[d].c_str(),
                dirs[0].c_str(), first, steps, worst, rel);
    failures += compare_evals(rel, first, steps, dirs[0], dirs[d]);
  }
  return failures == 0 ? 0 : 1;
}

// Note [Rounded-gradient bound]
// Two runs of the same training whose gradients differ by rounding of relative size
// at most eps per element (comm.reduce_dtype bf16: 2^-8 per rounding, one for the
// narrowing and one for each combination of the all-reduce that a value goes
// through; relative to the magnitudes summed, which is the gradient's own size unless
// the ranks' gradients cancel) take updates that differ by about eps relative at most,
// momentum included (a weighted sum of such gradients). To first order, the loss change an update causes
// then differs by at most eps of that change, and these differences add up over the
// steps: |L'(t) - L(t)| <= eps * sum over s < t of |L(s+1) - L(s)|, the reference's
// loss path. Its step-to-step changes include the batch-to-batch noise of the loss,
// which only loosens the bound. On top comes what runs of the same gradients differ
// by anyway (fp32 summation order across layouts): 1e-4 relative, as `compare` allows.
// The bound holds at step 1 with the 1e-4 alone (no update has been made yet), and
// grows with how far the loss has travelled, not with the number of steps.
double path_bound(double eps, const std::map<long, double>& reference, long step) {
  double path = 0.0;
  for (long s = 1; s < step; ++s) {
    if (reference.count(s) && reference.count(s + 1)) path += std::fabs(reference.at(s + 1) - reference.at(s));
  }
  return eps * path;
}

int compare_rounded(double eps, long steps, const std::vector<std::string>& dirs) {
  constexpr double kSameGradients = 1e-4;
  const auto reference = by_step(dirs[0], "train", "loss");
  int failures = 0;
  for (size_t d = 1; d < dirs.size(); ++d) {
    double worst = 0.0;  // the largest share of its bound that a difference takes
    for (const std::string kind : {"train", "eval"}) {
      const std::string key = kind == "train" ? "loss" : "eval_loss";
      const auto ref = by_step(dirs[0], kind, key);
      const auto other = by_step(dirs[d], kind, key);
      for (long s = 1; s <= steps; ++s) {
        if (kind == "train" && (!ref.count(s) || !other.count(s))) {
          std::cerr << "step " << s << " missing in " << (ref.count(s) ? dirs[d] : dirs[0]) << "\n";
          return 1;
        }
        if (ref.count(s) != other.count(s)) {
          std::printf("step %ld: %s in only one of %s and %s\n", s, key.c_str(), dirs[0].c_str(), dirs[d].c_str());
          ++failures;
          continue;
        }
        if (!ref.count(s)) continue;
        const double a = ref.at(s), b = other.at(s);
        const double bound = kSameGradients * std::fabs(a) + path_bound(eps, reference, s);
        worst = std::max(worst, std::fabs(a - b) / bound);
        if (std::fabs(a - b) > bound) {
          std::printf("step %ld: %s %.10g in %s vs %.10g in %s: difference %.3g > bound %.3g\n", s, key.c_str(), b,
                      dirs[d].c_str(), a, dirs[0].c_str(), std::fabs(a - b), bound);
          ++failures;
        }
      }
    }
    std::printf("%s vs %s: steps 1-%ld, the largest difference is %.3g of its bound (eps %.6g)\n", dirs[d].c_str(),
                dirs[0].c_str(), steps, worst, eps);
  }
  return failures == 0 ? 0 : 1;
}

int min_accuracy(double min, const std::string& dir) {
  std::optional<double> last;
  for (const auto& line : lines_of(dir)) {
    if (auto a = field(line, "eval_accuracy")) last = a;
  }
  if (!last) {
    std::cerr << dir << "/metrics.jsonl has no eval line\n";
    return 1;
  }
  std::printf("final test accuracy %.4f (required at least %.4f)\n", *last, min);
  return *last >= min ? 0 : 1;
}

int max_eval_loss(double max, const std::string& dir) {
  std::optional<double> loss, bits;
  for (const auto& line : lines_of(dir)) {
    if (auto l = field(line, "eval_loss")) loss = l, bits = field(line, "eval_bits_per_byte");
  }
  if (!loss) {
    std::cerr << dir << "/metrics.jsonl has no eval line\n";
    return 1;
  }
  std::printf("final validation loss %.4f nats per token (required below %.4f)\n", *loss, max);
  int failures = *loss < max ? 0 : 1;
  if (!bits) {
    std::printf("  the last eval line has no eval_bits_per_byte\n");
    return 1;
  }
  const double expected = *loss / std::log(2.0);
  std::printf("bits per byte %.6f (eval_loss / ln 2 = %.6f)\n", *bits, expected);
  // metrics.jsonl writes 10 significant digits.
  if (relative(expected, *bits) > 1e-8) ++failures, std::printf("  eval_bits_per_byte is not eval_loss / ln 2\n");
  return failures == 0 ? 0 : 1;
}

int plan(const std::string& file, bool mixed) {
  std::ifstream in(file);
  if (!in) {
    std::cerr << "metrics_check: cannot read " << file << "\n";
    return 2;
  }
  std::optional<double> global, k, world;
  std::vector<std::string> ranks;
  for (std::string line; std::getline(in, line);) {
    if (line.find("\"rank\":") != std::string::npos) {
      ranks.push_back(line);
      continue;
    }
    if (!global) global = field(line, "global_batch");
    if (!k) k = field(line, "accumulation_steps");
    if (!world) world = field(line, "world_size");
  }
  if (!global || !k || !world || ranks.size() != static_cast<size_t>(*world)) {
    std::cerr << file << ": not a plan of " << (world ? *world : 0) << " rank(s)\n";
    return 1;
  }
  int failures = 0;
  double sum = 0, first = -1;
  bool all_equal = true;
  for (size_t r = 0; r < ranks.size(); ++r) {
    const double micro = *field(ranks[r], "micro_batch"), capacity = *field(ranks[r], "capacity");
    const double limit = *field(ranks[r], "memory_limit"), probe = *field(ranks[r], "probe_peak");
    const double predicted = *field(ranks[r], "predicted_peak");
    // The limit binds what the allocator reserves (its blocks), at least what is in use.
    const double reserved = field(ranks[r], "probe_peak_reserved").value_or(probe);
    sum += micro;
    if (first < 0) first = micro;
    all_equal = all_equal && micro == first;
    std::printf("rank %zu: micro-batch %.0f of capacity %.0f; predicted peak %.0f, probe peak %.0f (%+.2f%%), limit %.0f\n",
                r, micro, capacity, predicted, probe, 100.0 * (predicted - probe) / probe, limit);
    if (micro < 1 || micro > capacity) ++failures, std::printf("  micro-batch outside [1, capacity]\n");
    if (limit > 0 && reserved > limit) ++failures, std::printf("  probe peak reserved above the limit\n");
    if (reserved < probe) ++failures, std::printf("  probe peak reserved below the peak in use\n");
    if (std::fabs(predicted - probe) > 0.1 * probe) ++failures, std::printf("  prediction off by more than 10%%\n");
  }
  std::printf("global batch %.0f = %.0f x %.0f\n", *global, *k, sum);
  if (*k * sum != *global) ++failures, std::printf("  k x sum(micro) != global batch\n");
  if (mixed && all_equal) ++failures, std::printf("  expected different micro-batches\n");
  return failures == 0 ? 0 : 1;
}

int noise_scale(const std::string& dir) {
  std::optional<double> last;
  for (const auto& line : lines_of(dir)) {
    if (auto b = field(line, "noise_scale")) last = b;
  }
  if (!last) {
    std::cerr << dir << "/metrics.jsonl has no noise_scale\n";
    return 1;
  }
  std::printf("final noise scale B_simple %.1f\n", *last);
  return std::isfinite(*last) && *last > 0 ? 0 : 1;
}

// Every one of `steps` training steps waited for the device at most `most` times
// (host_syncs, OpsBackend::host_syncs): a step's only wait is its read-back of the loss.
int host_syncs(long most, long steps, const std::string& dir) {
  const std::map<long, double> syncs = by_step(dir, "train", "host_syncs");
  if (static_cast<long>(syncs.size()) != steps) {
    std::cerr << dir << "/metrics.jsonl: host_syncs on " << syncs.size() << " steps, expected " << steps << "\n";
    return 1;
  }
  int failures = 0;
  for (const auto& [step, n] : syncs) {
    if (n > most) ++failures, std::printf("step %ld: the host waited for the device %.0f times (at most %ld)\n", step, n, most);
  }
  std::printf("%zu steps, each with at most %ld host wait(s): %s\n", syncs.size(), most, failures ? "no" : "yes");
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> a(argv + 1, argv + argc);
  if (a.size() >= 4 && a[0] == "compare") {
    const size_t dash = a[2].find('-');
    const long first = dash == std::string::npos ? 1 : std::atol(a[2].c_str());
    const long last = std::atol(a[2].c_str() + (dash == std::string::npos ? 0 : dash + 1));
    return compare(std::atof(a[1].c_str()), first, last, std::vector<std::string>(a.begin() + 3, a.end()));
  }
  if (a.size() >= 4 && a[0] == "compare-rounded") {
    return compare_rounded(std::atof(a[1].c_str()), std::atol(a[2].c_str()),
                           std::vector<std::string>(a.begin() + 3, a.end()));
  }
  if (a.size() == 3 && a[0] == "min-accuracy") return min_accuracy(std::atof(a[1].c_str()), a[2]);
  if (a.size() == 3 && a[0] == "max-eval-loss") return max_eval_loss(std::atof(a[1].c_str()), a[2]);
  if (a.size() >= 2 && a[0] == "plan") return plan(a[1], a.size() >= 3 && a[2] == "mixed");
  if (a.size() == 2 && a[0] == "noise-scale") return noise_scale(a[1]);
  if (a.size() == 4 && a[0] == "host-syncs") return host_syncs(std::atol(a[1].c_str()), std::atol(a[2].c_str()), a[3]);
  std::cerr << "usage: metrics_check compare REL STEPS DIR_A DIR_B... | metrics_check min-accuracy MIN DIR |\n"
               "       metrics_check compare-rounded EPS STEPS DIR_A DIR_B... |\n"
               "       metrics_check max-eval-loss MAX DIR |\n"
               "       metrics_check plan FILE [mixed] | metrics_check noise-scale DIR |\n"
               "       metrics_check host-syncs MAX STEPS DIR\n";
  return 2;
}
