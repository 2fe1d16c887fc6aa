#include "runtime/text_dataset.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "kernels/check.h"
#include "kernels/errors.h"
#include "kernels/rng.h"
#include "runtime/file_match.h"
#include "runtime/token_shards.h"

namespace dtrain {
namespace {

// Separates the window offsets' random stream from the sampler's and the model's.
constexpr uint64_t kWindowOffsetPurpose = 0x7e47'0ff5'e7ULL;
constexpr int64_t kByteVocab = 256;
constexpr int64_t kGpt2Vocab = 50257;

std::string fraction_text(double f) {
  std::ostringstream s;
  s << f;
  return s.str();
}

void check_seq_len(const ModelSpec& model) {
  if (model.seq_len < 1) {
    throw ConfigError("model.seq_len = " + std::to_string(model.seq_len) +
                      " is out of range: a window of tokens needs a seq_len of at least 1");
  }
}

// Throws unless a split of `tokens` holds one window; `what` names the split and its
// source, `advice` says what to change.
void check_fits(WindowGrid grid, int64_t tokens, int64_t seq_len, const std::string& what, const std::string& advice) {
  const int64_t need = min_stream_tokens(grid, seq_len);
  if (tokens >= need) return;
  const std::string why = grid == WindowGrid::kFixed
                              ? "one window of seq_len + 1 tokens"
                              : "2 * seq_len (windows of seq_len + 1 tokens start anywhere in [0, seq_len) each epoch)";
  throw DataError(what + " has " + std::to_string(tokens) + " tokens, too few for model.seq_len = " +
                  std::to_string(seq_len) + ": it needs at least " + std::to_string(need) + ", " + why + "; " + advice);
}

// Reads the bytes of `files` into one buffer; `vocab` below 256 is checked per file.
std::vector<uint8_t> read_text_files(const std::vector<std::string>& files, const std::string& path, int64_t vocab) {
  std::vector<uint64_t> sizes;
  uint64_t total = 0;
  for (const std::string& f : files) {
    std::error_code ec;
    const uint64_t n = std::filesystem::file_size(f, ec);
    if (ec) throw DataError(f + ": cannot read the text file: " + ec.message() + "; check data.path");
    sizes.push_back(n);
    total += n;
  }
  if (total == 0) {
    if (files.size() == 1) {
      throw DataError(files[0] + ": the text file is empty (0 bytes); point data.path at a file with text");
    }
    throw DataError("data.path = '" + path + "': its " + std::to_string(files.size()) + " files (first: " + files[0] +
                    ") are all empty (0 bytes); point data.path at files with text");
  }
  std::vector<uint8_t> bytes(total);
  uint64_t at = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    std::ifstream in(files[i], std::ios::binary);
    if (!in || !in.read(reinterpret_cast<char*>(bytes.data() + at), static_cast<std::streamsize>(sizes[i]))) {
      throw DataError(files[i] + ": cannot read the text file (" + std::strerror(errno) +
                      "); check that it is readable and was not changed while loading");
    }
    if (vocab < kByteVocab) {
      for (uint64_t j = 0; j < sizes[i]; ++j) {
        const uint8_t b = bytes[at + j];
        if (b >= vocab) {
          throw DataError(files[i] + ": byte " + std::to_string(j) + " has value " + std::to_string(b) +
                          ", at or past model.vocab = " + std::to_string(vocab) + "; set model.vocab to at least " +
                          std::to_string(b + 1) + " (256 for any bytes) or remove such bytes from the text");
        }
      }
    }
    at += sizes[i];
  }
  return bytes;
}

}  // namespace

int64_t window_offset(uint64_t seed, int64_t epoch, int64_t seq_len) {
  Rng rng(Rng::mix(Rng::mix(seed, kWindowOffsetPurpose), static_cast<uint64_t>(epoch)));
  return static_cast<int64_t>(rng.below(static_cast<uint64_t>(seq_len)));
}

int64_t window_count(WindowGrid grid, int64_t tokens, int64_t seq_len) {
  const int64_t n = grid == WindowGrid::kFixed ? (tokens - 1) / seq_len : tokens / seq_len - 1;
  return n > 0 ? n : 0;
}

int64_t min_stream_tokens(WindowGrid grid, int64_t seq_len) {
  return grid == WindowGrid::kFixed ? seq_len + 1 : 2 * seq_len;
}

template <class Token>
TokenStreamDataset<Token>::TokenStreamDataset(std::string name, std::shared_ptr<const std::vector<Token>> tokens,
                                              int64_t begin, int64_t end, int64_t seq_len, int64_t vocab,
                                              bool tokens_are_bytes, WindowGrid grid, uint64_t seed)
    : name_(std::move(name)), tokens_(std::move(tokens)), begin_(begin), end_(end), seq_len_(seq_len),
      vocab_(vocab), bytes_(tokens_are_bytes), grid_(grid), seed_(seed),
      size_(window_count(grid, end - begin, seq_len)) {
  DTRAIN_ASSERT(tokens_ && 0 <= begin && begin <= end && end <= static_cast<int64_t>(tokens_->size()),
                "token range [" << begin << ", " << end << ") outside the stream");
  DTRAIN_ASSERT(size_ > 0, name_ << ": " << end - begin << " tokens hold no window of seq_len " << seq_len);
}

template <class Token>
int64_t TokenStreamDataset<Token>::window_start(int64_t epoch, int64_t index) const {
  const int64_t offset = grid_ == WindowGrid::kFixed ? 0 : window_offset(seed_, epoch, seq_len_);
  return offset + index * seq_len_;
}

template <class Token>
void TokenStreamDataset<Token>::gather(int64_t epoch, std::span<const int64_t> indices, void* inputs,
                                       int32_t* targets) const {
  const int64_t offset = grid_ == WindowGrid::kFixed ? 0 : window_offset(seed_, epoch, seq_len_);
  const size_t T = static_cast<size_t>(seq_len_);
  auto* in = static_cast<int32_t*>(inputs);
  for (size_t k = 0; k < indices.size(); ++k) {
    const int64_t i = indices[k];
    DTRAIN_ASSERT(i >= 0 && i < size_, name_ << ": window " << i << " of " << size_);
    const Token* src = tokens_->data() + begin_ + offset + i * seq_len_;
    int32_t* x = in + k * T;
    int32_t* y = targets + k * T;
    for (size_t j = 0; j < T; ++j) {
      x[j] = static_cast<int32_t>(src[j]);
      y[j] = static_cast<int32_t>(src[j + 1]);
    }
  }
}

template class TokenStreamDataset<uint8_t>;
template class TokenStreamDataset<uint16_t>;

DataSplits load_text_data(const DataConfig& config, const ModelSpec& model, uint64_t seed) {
  check_seq_len(model);
  if (!(config.val_fraction > 0.0 && config.val_fraction < 1.0)) {
    throw ConfigError("data.val_fraction = " + fraction_text(config.val_fraction) + " is out of range: must be in (0, 1)");
  }
  const int64_t vocab = model.vocab > 0 ? model.vocab : kByteVocab;
  const std::vector<std::string> files = match_files(config.path, "data.path");
  auto bytes = std::make_shared<const std::vector<uint8_t>>(read_text_files(files, config.path, vocab));
  const int64_t total = static_cast<int64_t>(bytes->size());
  const int64_t val = std::llround(static_cast<double>(total) * config.val_fraction);
  const int64_t train = total - val;
  const std::string source = files.size() == 1 ? files[0]
                                               : "data.path = '" + config.path + "' (" + std::to_string(files.size()) +
                                                     " files, first " + files[0] + ")";
  const std::string of = " of its " + std::to_string(total) + " bytes";
  check_fits(WindowGrid::kShiftedEachEpoch, train, model.seq_len,
             source + ": the train split (the first " + fraction_text(100.0 * (1.0 - config.val_fraction)) + "%" + of + ")",
             "use more text, a smaller model.seq_len or a smaller data.val_fraction");
  check_fits(WindowGrid::kFixed, val, model.seq_len,
             source + ": the validation split (the last " + fraction_text(100.0 * config.val_fraction) + "%" + of + ")",
             "use more text, a smaller model.seq_len or a larger data.val_fraction");
  DataSplits splits;
  splits.train = std::make_unique<TokenStreamDataset<uint8_t>>("text/train", bytes, 0, train, model.seq_len, vocab,
                                                               true, WindowGrid::kShiftedEachEpoch, seed);
  splits.test = std::make_unique<TokenStreamDataset<uint8_t>>("text/validation", bytes, train, total, model.seq_len,
                                                              vocab, true, WindowGrid::kFixed, seed);
  return splits;
}

DataFacts token_data_facts(const DataConfig& config, const ModelSpec& model) {
  check_seq_len(model);
  const bool bytes = config.name == "text";
  if (!bytes && config.name != "tokens") {
    throw ConfigError("data.name = '" + config.name + "' is not a stream of tokens (text or tokens)");
  }
  const int64_t vocab = model.vocab > 0 ? model.vocab : bytes ? kByteVocab : kGpt2Vocab;
  const SampleLayout layout{Shape{model.seq_len}, ElementType::kInt32, Shape{model.seq_len}};
  return DataFacts{layout, vocab, bytes};
}

DataSplits load_token_data(const DataConfig& config, const ModelSpec& model, uint64_t seed) {
  check_seq_len(model);
  const int64_t vocab = model.vocab > 0 ? model.vocab : kGpt2Vocab;
  auto train = std::make_shared<const std::vector<uint16_t>>(
      read_token_shards(config.train_files, "data.train_files", vocab));
  auto val = std::make_shared<const std::vector<uint16_t>>(read_token_shards(config.val_files, "data.val_files", vocab));
  const int64_t n_train = static_cast<int64_t>(train->size());
  const int64_t n_val = static_cast<int64_t>(val->size());
  check_fits(WindowGrid::kShiftedEachEpoch, n_train, model.seq_len,
             "data.train_files = '" + config.train_files + "': the training split",
             "add shards or use a smaller model.seq_len");
  check_fits(WindowGrid::kFixed, n_val, model.seq_len, "data.val_files = '" + config.val_files + "': the validation split",
             "add shards or use a smaller model.seq_len");
  DataSplits splits;
  splits.train = std::make_unique<TokenStreamDataset<uint16_t>>("tokens/train", train, 0, n_train, model.seq_len,
                                                                vocab, false, WindowGrid::kShiftedEachEpoch, seed);
  splits.test = std::make_unique<TokenStreamDataset<uint16_t>>("tokens/validation", val, 0, n_val, model.seq_len,
                                                               vocab, false, WindowGrid::kFixed, seed);
  return splits;
}

}  // namespace dtrain
