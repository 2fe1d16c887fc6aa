// `dtrain sample RUN_DIR|CHECKPOINT`: text from a trained GPT, on the CPU of this
// machine, one process without MPI (a batch of one is no work for ranks to share).
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "kernels/context.h"
#include "kernels/errors.h"
#include "launch/job.h"
#include "models/sampling.h"
#include "runtime/checkpoint_model.h"

namespace dtrain::launch {
namespace {

// A token model's prompt: token ids separated by white space, each below `vocab`.
std::vector<int32_t> parse_token_ids(const std::string& text, int64_t vocab) {
  std::vector<int32_t> ids;
  std::istringstream in(text);
  for (std::string word; in >> word;) {
    char* end = nullptr;
    const long long id = std::strtoll(word.c_str(), &end, 10);
    if (end == word.c_str() || *end != 0 || id < 0 || id >= vocab) {
      throw UsageError("--prompt: '" + word + "' is not a token id of this model (0 to " + std::to_string(vocab - 1) +
                       "); a token model takes ids separated by spaces");
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

}  // namespace

int run_sample(const CliCommand& cmd) {
  try {
    const std::string path = find_checkpoint(cmd.sample_from);
    // A batch of one window: more threads than a few only add their start-up.
    const int threads = static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 4u));
    const std::unique_ptr<Context> ctx = Context::make_cpu(threads);
    CheckpointModel loaded = load_checkpoint_model(*ctx, path);
    Model& model = *loaded.model;
    const int64_t vocab = loaded.vocab;

    std::vector<int32_t> prompt;
    if (loaded.tokens_are_bytes) {
      const std::string text = cmd.prompt.value_or("\n");
      for (const unsigned char c : text) prompt.push_back(c);
      if (prompt.empty()) throw UsageError("--prompt is empty; give at least one character to continue");
    } else {
      prompt = cmd.prompt ? parse_token_ids(*cmd.prompt, vocab) : std::vector<int32_t>{static_cast<int32_t>(vocab - 1)};
      if (prompt.empty()) throw UsageError("--prompt holds no token ids; give at least one");
    }
    SamplingOptions options;
    options.temperature = cmd.temperature;
    options.top_k = cmd.top_k;

    std::cerr << "dtrain: sampling " << cmd.sample_tokens << (loaded.tokens_are_bytes ? " bytes" : " tokens")
              << " from " << path << " (step " << loaded.step << ", " << model.describe() << "), temperature "
              << cmd.temperature << ", top-k " << cmd.top_k << ", seed " << cmd.sample_seed << std::endl;
    bool ends_in_newline = false;
    if (loaded.tokens_are_bytes) {
      std::cout << cmd.prompt.value_or("\n") << std::flush;
      ends_in_newline = prompt.back() == '\n';
      generate_tokens(model, prompt, cmd.sample_tokens, options, cmd.sample_seed, [&](int32_t token) {
        std::cout.put(static_cast<char>(token)).flush();
        ends_in_newline = token == '\n';
      });
      // The text as it is for pipes and files; a terminal's prompt on a line of its own.
      if (!ends_in_newline && ::isatty(STDOUT_FILENO) != 0) std::cout << "\n";
    } else {
      for (size_t i = 0; i < prompt.size(); ++i) std::cout << (i ? " " : "") << prompt[i];
      generate_tokens(model, prompt, cmd.sample_tokens, options, cmd.sample_seed,
                      [&](int32_t token) { std::cout << " " << token << std::flush; });
      std::cout << "\n";
    }
    std::cout.flush();
    return kExitOk;
  } catch (const Error& e) {
    std::cout.flush();
    std::cerr << "dtrain: " << e.kind() << ": " << e.what() << std::endl;
    return e.exit_code();
  } catch (const std::exception& e) {
    std::cerr << "dtrain: internal error: " << e.what() << "; please report it with the command line" << std::endl;
    return kExitInternal;
  }
}

}  // namespace dtrain::launch
