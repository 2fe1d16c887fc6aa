// Language-model data: a stream of tokens cut into windows. `data.name: text` reads
// the bytes of files as tokens 0..255; `data.name: tokens` reads llm.c's token shards
// (runtime/token_shards.h). A sample is a window of seq_len + 1 tokens starting at s:
// inputs are tokens [s, s+T), targets [s+1, s+T+1), both (T) int32.
//
// Note [Text windows]
// Training split, L tokens, T = seq_len. Window i of epoch e starts at
//   offset(e) + i*T,  offset(e) = Rng(Rng::mix(Rng::mix(seed, kWindowOffsetPurpose), e)).below(T),
// so offset(e) is in [0, T) and depends on (seed, epoch) only; which windows each
// global batch takes is the GlobalSampler's permutation of [0, size()) by (seed,
// epoch) (DESIGN contract 3). Moving the grid from epoch to epoch lets the model see
// every split point of the text while an epoch's windows stay non-overlapping (their
// inputs tile the stream). size() is the same for every epoch: the largest n with
// o + (n-1)*T + (T+1) <= L for every o in [0, T). The worst offset, T-1, gives
// (n+1)*T <= L, so
//   size() = floor(L / T) - 1,   which needs L >= 2T for one window.
// At offset 0 the last window then ends T-1 tokens or more before the stream does;
// those tail tokens are reached in the epochs whose offset is larger.
// Validation split: window i starts at i*T for every window that fits (epoch ignored):
//   size() = floor((L - 1) / T),  which needs L >= T + 1.
// The tokens are held once in their stored width (uint8 bytes, uint16 shards), shared
// by both splits of a text, and widened to int32 on gather.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/dataset.h"

namespace dtrain {

enum class WindowGrid {
  kShiftedEachEpoch,  // training: the grid starts at offset(epoch)
  kFixed,             // validation: the grid starts at 0
};

// See Note [Text windows].
int64_t window_offset(uint64_t seed, int64_t epoch, int64_t seq_len);
int64_t window_count(WindowGrid grid, int64_t tokens, int64_t seq_len);
// The fewest tokens that hold one window.
int64_t min_stream_tokens(WindowGrid grid, int64_t seq_len);

template <class Token>
class TokenStreamDataset final : public Dataset {
 public:
  // The stream is (*tokens)[begin, end); every token is below `vocab`.
  TokenStreamDataset(std::string name, std::shared_ptr<const std::vector<Token>> tokens, int64_t begin,
                     int64_t end, int64_t seq_len, int64_t vocab, bool tokens_are_bytes, WindowGrid grid,
                     uint64_t seed);
  std::string name() const override { return name_; }
  int64_t size() const override { return size_; }
  SampleLayout layout() const override {
    return SampleLayout{Shape{seq_len_}, ElementType::kInt32, Shape{seq_len_}};
  }
  int64_t num_classes() const override { return vocab_; }
  bool tokens_are_bytes() const override { return bytes_; }
  void gather(int64_t epoch, std::span<const int64_t> indices, void* inputs, int32_t* targets) const override;

  // Where window `index` of `epoch` starts, counted from the split's first token.
  int64_t window_start(int64_t epoch, int64_t index) const;
  int64_t stream_tokens() const { return end_ - begin_; }

 private:
  std::string name_;
  std::shared_ptr<const std::vector<Token>> tokens_;
  int64_t begin_, end_;
  int64_t seq_len_;
  int64_t vocab_;
  bool bytes_;
  WindowGrid grid_;
  uint64_t seed_;
  int64_t size_;
};

extern template class TokenStreamDataset<uint8_t>;
extern template class TokenStreamDataset<uint16_t>;

// `data.name: text`: the bytes of data.path (a file, every file of a folder, or a
// glob; sorted by path) as one stream; the last data.val_fraction of it (rounded to
// the nearest token) is the validation split (DataSplits::test).
DataSplits load_text_data(const DataConfig& config, const ModelSpec& model, uint64_t seed);

// `data.name: tokens`: llm.c shards from data.train_files and data.val_files.
// The vocabulary is model.vocab when given, else GPT-2's 50257.
DataSplits load_token_data(const DataConfig& config, const ModelSpec& model, uint64_t seed);

// The facts the two loaders above give the model builder (windows of model.seq_len
// tokens, the vocabulary, bytes or not), from the config alone, without reading the
// data: to rebuild a model from a checkpoint's config where the data may be gone.
// data.name must be text or tokens (ConfigError otherwise).
DataFacts token_data_facts(const DataConfig& config, const ModelSpec& model);

}  // namespace dtrain
