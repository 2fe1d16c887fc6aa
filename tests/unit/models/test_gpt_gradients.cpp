// The GPT's backward against finite differences of its own loss, its reporting of
// finished gradient ranges, its memory accounting, its dropout keys, its init and its
// builder's checks (models/gpt.h).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/errors.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "models/gpt.h"

namespace dtrain {
namespace {

DataFacts token_data(int64_t seq_len, int64_t vocab, bool bytes = false) {
  DataFacts data;
  data.layout.input = Shape{seq_len};
  data.layout.input_type = ElementType::kInt32;
  data.layout.target = Shape{seq_len};
  data.classes = vocab;
  data.tokens_are_bytes = bytes;
  return data;
}

ModelSpec tiny_spec(int64_t n_layer, double dropout) {
  ModelSpec spec;
  spec.name = "gpt";
  spec.n_layer = n_layer;
  spec.n_head = 2;
  spec.n_embd = 8;
  spec.seq_len = 5;
  spec.vocab = 11;
  spec.dropout = dropout;
  spec.seed = 77;
  return spec;
}

std::vector<float> to_host(Context& ctx, const float* device, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  ops::copy_to_host(ctx, out.data(), device, out.size() * sizeof(float));
  ctx.synchronize();
  return out;
}

// A batch in host vectors (the CPU's device memory is host memory).
struct HostBatch {
  std::vector<int32_t> input, targets;
  std::vector<int64_t> ids;
  int64_t step = 0;
  Batch view() const {
    Batch b;
    b.size = static_cast<int64_t>(ids.size());
    b.inputs = input.data();
    b.targets = targets.data();
    b.sample_ids = ids.data();
    b.step = step;
    return b;
  }
};

// Sample `id`'s tokens are a function of the id, so a sample is the same in any batch.
HostBatch make_batch(const std::vector<int64_t>& ids, int64_t seq_len, int64_t vocab, int64_t step) {
  HostBatch b;
  b.ids = ids;
  b.step = step;
  for (int64_t id : ids) {
    Rng rng(Rng::mix(1234, static_cast<uint64_t>(id)));
    for (int64_t t = 0; t < seq_len; ++t) {
      b.input.push_back(static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab))));
      b.targets.push_back(static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab))));
    }
  }
  return b;
}

// Parameters of an order that makes every part nonlinear (GPT-2's 0.02 would leave
// the tiny model nearly linear, and a wrong second-order term unseen).
std::vector<float> lively_params(const Model& model, uint64_t seed) {
  std::vector<float> p(static_cast<size_t>(model.param_count()));
  Rng rng(seed);
  for (const ParamTensor& t : model.param_tensors()) {
    const bool bias = t.name.size() > 5 && t.name.compare(t.name.size() - 5, 5, ".bias") == 0;
    const bool ln = t.name.find(".ln_") != std::string::npos;
    for (int64_t i = 0; i < t.count(); ++i) {
      const double n = rng.normal();
      p[static_cast<size_t>(t.offset + i)] = static_cast<float>(bias ? 0.1 * n : ln && !bias ? 1.0 + 0.2 * n : 0.4 * n);
    }
  }
  return p;
}

struct GptFixture {
  explicit GptFixture(const ModelSpec& spec, size_t memory_limit = 0)
      : ctx(Context::make_cpu(1, memory_limit)), model(build_gpt(*ctx, spec, token_data(spec.seq_len, spec.vocab))) {}
  // The summed per-sample loss of `b` (grad_scale 1: the gradient of this sum).
  double loss(const HostBatch& b, Pass pass = Pass::kTrain) {
    double stats[kModelStats] = {0.0, 0.0};
    model->forward(b.view(), pass, 1.0f, stats);
    return stats[kModelLossSum];
  }
  std::unique_ptr<Context> ctx;
  std::unique_ptr<Model> model;
};

// Note [Directional finite differences]: for each tensor and random sign vectors s,
// compare g . s against (L(p + h s) - L(p - h s)) / 2h, Richardson-extrapolated from h
// and h/2 so the truncation error is O(h^4). Every element of the tensor moves at
// once, so an error e in any element shows as e . s, of the size of ||e||, not
// diluted as a random unit direction would dilute it. The loss is computed in float:
// its rounding noise (a few 1e-7 of a loss of ~5) over 2h = 1e-2 is ~1e-4 at worst.
// The bound is 5e-4 of the tensor's gradient scale sum |g_i| (the largest g . s can
// be) plus 5e-5; measured errors stay below 1e-4 of the scale (run with
// DTRAIN_GPT_FD_VERBOSE=1 to see them), while a wrong or missing term moves g . s by
// a sizeable part of the scale.
void check_gradients(const ModelSpec& spec) {
  GptFixture f(spec);
  const std::vector<float> p0 = lively_params(*f.model, 99);
  const HostBatch b = make_batch({3, 8}, spec.seq_len, spec.vocab, 5);
  f.model->load_params(p0.data(), f.model->param_count());
  f.model->zero_grads();
  f.loss(b);
  f.model->backward();
  const std::vector<float> g = to_host(*f.ctx, f.model->grads(), f.model->param_count());

  auto loss_at = [&](const ParamTensor& t, const std::vector<float>& s, double h) {
    std::vector<float> p = p0;
    for (int64_t i = 0; i < t.count(); ++i) p[static_cast<size_t>(t.offset + i)] += static_cast<float>(h * s[i]);
    f.model->load_params(p.data(), f.model->param_count());
    return f.loss(b);
  };
  Rng rng(4242);
  const double h = 1e-2;
  for (const ParamTensor& t : f.model->param_tensors()) {
    double scale = 0.0;
    for (int64_t i = 0; i < t.count(); ++i) scale += std::abs(g[static_cast<size_t>(t.offset + i)]);
    for (int trial = 0; trial < 2; ++trial) {
      std::vector<float> s(static_cast<size_t>(t.count()));
      double analytic = 0.0;
      for (int64_t i = 0; i < t.count(); ++i) {
        s[static_cast<size_t>(i)] = rng.below(2) ? 1.0f : -1.0f;
        analytic += s[static_cast<size_t>(i)] * g[static_cast<size_t>(t.offset + i)];
      }
      const double d_h = (loss_at(t, s, h) - loss_at(t, s, -h)) / (2 * h);
      const double d_h2 = (loss_at(t, s, h / 2) - loss_at(t, s, -h / 2)) / h;
      const double numeric = (4 * d_h2 - d_h) / 3;
      if (std::getenv("DTRAIN_GPT_FD_VERBOSE")) {
        std::printf("%-36s scale %9.3g analytic %11.4e error/scale %9.2e\n", t.name.c_str(), scale, analytic,
                    std::abs(analytic - numeric) / scale);
      }
      EXPECT_NEAR(analytic, numeric, 5e-4 * scale + 5e-5)
          << t.name << " trial " << trial << " (gradient scale " << scale << ")";
    }
  }
}

TEST(GptGradients, MatchFiniteDifferencesInEveryTensor) { check_gradients(tiny_spec(2, 0.0)); }

TEST(GptGradients, MatchFiniteDifferencesWithDropout) {
  // The masks are a function of (seed, step, site, sample id, element): the same in
  // every forward of the same batch and step, so the loss is a smooth function.
  check_gradients(tiny_spec(2, 0.1));
}

TEST(GptGradients, MatchFiniteDifferencesWithOneLayer) { check_gradients(tiny_spec(1, 0.0)); }

TEST(GptGradients, ReportsEachRangeOnceInReverseOrder) {
  const ModelSpec spec = tiny_spec(3, 0.1);
  GptFixture f(spec);
  f.model->init(1);
  const std::vector<ParamRange>& ranges = f.model->param_ranges();
  ASSERT_EQ(ranges.size(), static_cast<size_t>(spec.n_layer + 3));
  int64_t offset = 0;
  for (const ParamRange& r : ranges) {
    EXPECT_EQ(r.offset, offset);
    offset += r.count;
  }
  EXPECT_EQ(offset, f.model->param_count());
  EXPECT_EQ(ranges[0].count, spec.vocab * spec.n_embd);    // wte
  EXPECT_EQ(ranges[1].count, spec.seq_len * spec.n_embd);  // wpe
  EXPECT_EQ(ranges.back().count, 2 * spec.n_embd);        // ln_f

  std::vector<int> order;
  const HostBatch b = make_batch({0, 1}, spec.seq_len, spec.vocab, 0);  // valid until backward is done
  f.loss(b);
  f.model->backward([&](int i) { order.push_back(i); });
  // ln_f, blocks high to low, wpe, and last wte (the tied head's and the embedding's).
  EXPECT_EQ(order, (std::vector<int>{5, 4, 3, 2, 1, 0}));
}

TEST(GptGradients, ActivationsAreExactlyWhatTheModelSaysPerSample) {
  ModelSpec spec = tiny_spec(2, 0.1);
  spec.seq_len = 7;  // odd sizes, so no term can hide behind a rounding
  spec.vocab = 13;
  GptFixture f(spec);
  auto* gpt = dynamic_cast<Gpt*>(f.model.get());
  ASSERT_NE(gpt, nullptr);
  f.model->init(5);
  const int64_t L = spec.n_layer, C = spec.n_embd, T = spec.seq_len, V = spec.vocab, H = spec.n_head;
  // Note [Gpt activation layout]'s count, from the list of tensors.
  // ln1, qkv, atty, res2, ln2, fch, fch_gelu, res3; probs; 2 LayerNorms' mean and rstd.
  const int64_t per_block = T * C * (1 + 3 + 1 + 1 + 1 + 4 + 4 + 1) + H * T * T + 4 * T;
  // encoded, the blocks, lnf with its mean and rstd, logits, dres + dtmp + dbig.
  const int64_t expected = 4 * (T * C + L * per_block + T * C + 2 * T + T * V + T * C * (1 + 1 + 4));
  EXPECT_EQ(f.model->activation_bytes_per_sample(), expected);

  const int64_t n = 3;
  const HostBatch b = make_batch({0, 1, 2}, T, V, 0);  // valid until backward is done
  f.loss(b);
  const MemoryStats after_forward = f.ctx->allocator().stats();
  const auto activations = static_cast<int>(MemoryCategory::Activations);
  EXPECT_EQ(after_forward.in_use_by[activations], static_cast<size_t>(n * expected));
  f.model->backward();
  const MemoryStats after_backward = f.ctx->allocator().stats();
  EXPECT_EQ(after_backward.in_use_by[activations], static_cast<size_t>(n * expected));
  EXPECT_EQ(after_backward.peak_by[activations], static_cast<size_t>(n * expected));
  // Everything else is the parameters, the gradients and the ops' workspace.
  const size_t params = static_cast<size_t>(f.model->param_count()) * sizeof(float);
  EXPECT_EQ(after_backward.in_use_by[static_cast<int>(MemoryCategory::Params)], params);
  EXPECT_EQ(after_backward.in_use_by[static_cast<int>(MemoryCategory::Grads)], params);
  EXPECT_LE(after_backward.in_use_by[static_cast<int>(MemoryCategory::Workspace)], f.model->workspace_bytes(n));
  EXPECT_EQ(after_backward.in_use,
            n * expected + 2 * params + after_backward.in_use_by[static_cast<int>(MemoryCategory::Workspace)]);

  f.model->release_activations();
  EXPECT_EQ(f.ctx->allocator().stats().in_use_by[activations], 0u);
}

TEST(GptGradients, DropoutMaskOfASampleIsTheSameInAnyBatch) {
  const ModelSpec spec = tiny_spec(2, 0.3);
  GptFixture f(spec);
  const std::vector<float> p = lively_params(*f.model, 3);
  f.model->load_params(p.data(), f.model->param_count());
  const int64_t T = spec.seq_len, V = spec.vocab;
  // Sample 7 alone, and at position 3 of a batch of 4, at the same step.
  const double alone = f.loss(make_batch({7}, T, V, 12));
  const double four = f.loss(make_batch({2, 5, 9, 7}, T, V, 12));
  const double three = f.loss(make_batch({2, 5, 9}, T, V, 12));
  EXPECT_NEAR(four - three, alone, 1e-5 * std::abs(alone));
  // And the masks do act: no dropout (eval), or another step, gives another loss.
  const double eval = f.loss(make_batch({7}, T, V, 12), Pass::kEval);
  const double other_step = f.loss(make_batch({7}, T, V, 13));
  EXPECT_GT(std::abs(alone - eval), 1e-3);
  EXPECT_GT(std::abs(alone - other_step), 1e-3);
  EXPECT_DOUBLE_EQ(f.loss(make_batch({7}, T, V, 12)), alone);
}

TEST(GptGradients, InitIsGpt2sAndIndependentOfDepth) {
  ModelSpec spec = tiny_spec(4, 0.0);
  spec.n_embd = 64;
  spec.n_head = 4;
  spec.vocab = 300;
  GptFixture deep(spec);
  deep.model->init(11);
  const std::vector<float> p = to_host(*deep.ctx, deep.model->params(), deep.model->param_count());
  auto stats_of = [&](const ParamTensor& t) {
    double sum = 0.0, squares = 0.0;
    for (int64_t i = 0; i < t.count(); ++i) {
      const double v = p[static_cast<size_t>(t.offset + i)];
      sum += v, squares += v * v;
    }
    const double mean = sum / static_cast<double>(t.count());
    return std::make_pair(mean, std::sqrt(squares / static_cast<double>(t.count()) - mean * mean));
  };
  const double proj_std = 0.02 / std::sqrt(2.0 * static_cast<double>(spec.n_layer));
  for (const ParamTensor& t : deep.model->param_tensors()) {
    const auto [mean, stddev] = stats_of(t);
    const std::string& n = t.name;
    if (n.find(".bias") != std::string::npos) {
      EXPECT_EQ(mean, 0.0) << n;
      EXPECT_EQ(stddev, 0.0) << n;
    } else if (n.find(".ln_") != std::string::npos) {
      EXPECT_EQ(mean, 1.0) << n;
      EXPECT_EQ(stddev, 0.0) << n;
    } else {
      const double want = n.find("c_proj.weight") != std::string::npos ? proj_std : 0.02;
      // At least 300 draws: the sample deviation is within 15% of the true one.
      EXPECT_NEAR(stddev, want, 0.15 * want) << n;
      EXPECT_NEAR(mean, 0.0, 0.3 * want) << n;
    }
  }
  // A tensor's values depend on its index and the seed, not on the model's depth.
  spec.n_layer = 1;
  GptFixture shallow(spec);
  shallow.model->init(11);
  const std::vector<float> q = to_host(*shallow.ctx, shallow.model->params(), shallow.model->param_count());
  const auto deep_tensors = deep.model->param_tensors();
  for (const ParamTensor& t : shallow.model->param_tensors()) {
    if (t.name.find("c_proj") != std::string::npos || t.name.find("ln_f") != std::string::npos) continue;
    for (const ParamTensor& u : deep_tensors) {
      if (u.name != t.name) continue;
      EXPECT_TRUE(std::equal(q.begin() + t.offset, q.begin() + t.offset + t.count(), p.begin() + u.offset)) << t.name;
    }
  }
}

TEST(GptGradients, NextTokenLogitsSeeOnlyTheContext) {
  const ModelSpec spec = tiny_spec(2, 0.1);
  GptFixture f(spec);
  auto* gpt = dynamic_cast<Gpt*>(f.model.get());
  const std::vector<float> p = lively_params(*f.model, 8);
  f.model->load_params(p.data(), f.model->param_count());
  const int64_t T = spec.seq_len, V = spec.vocab;
  // A context of 3 tokens: its logits are row 2 of any full window that starts with
  // it (causal attention), whatever follows.
  const std::vector<int32_t> context = {4, 1, 9};
  const std::vector<float> next = gpt->next_token_logits(context);
  ASSERT_EQ(static_cast<int64_t>(next.size()), V);
  HostBatch b;
  b.input = {4, 1, 9, 10, 7};
  b.targets.assign(static_cast<size_t>(T), 0);
  b.ids = {0};
  f.loss(b, Pass::kEval);
  const std::vector<float> row = to_host(*f.ctx, gpt->logits().f32() + 2 * V, V);
  for (int64_t v = 0; v < V; ++v) EXPECT_NEAR(next[static_cast<size_t>(v)], row[static_cast<size_t>(v)], 1e-5);
  // A longer context keeps its last T tokens.
  const std::vector<float> tail = gpt->next_token_logits({3, 3, 4, 1, 9, 10, 7});
  f.loss(b, Pass::kEval);
  const std::vector<float> last = to_host(*f.ctx, gpt->logits().f32() + (T - 1) * V, V);
  for (int64_t v = 0; v < V; ++v) EXPECT_NEAR(tail[static_cast<size_t>(v)], last[static_cast<size_t>(v)], 1e-5);
  EXPECT_THROW(gpt->next_token_logits({}), Error);
}

TEST(GptGradients, FlopsAndMetricsFollowTheirFormulas) {
  ModelSpec spec = tiny_spec(2, 0.0);
  auto ctx = Context::make_cpu(1);
  const int64_t L = 2, C = 8, T = 5, V = 11;
  auto model = build_gpt(*ctx, spec, token_data(T, V, true));
  EXPECT_EQ(model->param_count(), (V + T) * C + L * (12 * C * C + 13 * C) + 2 * C);
  EXPECT_EQ(model->forward_flops_per_sample(), 2 * L * 12 * C * C * T + L * 4 * T * T * C + 2 * T * C * V);
  const std::vector<Metric> m = model->eval_metrics(0.0, 10.0 * std::log(2.0) * 3.0, 10);
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].name, "bits_per_byte");
  EXPECT_NEAR(m[0].value, 3.0, 1e-12);
  auto words = build_gpt(*ctx, spec, token_data(T, V, false));
  EXPECT_TRUE(words->eval_metrics(0.0, 5.0, 10).empty());
  EXPECT_EQ(model->determinism(4).size(), static_cast<size_t>(L));
  EXPECT_EQ(model->sample_layout().input, Shape{T});
  EXPECT_EQ(model->sample_layout().input_type, ElementType::kInt32);
}

std::string build_error(const ModelSpec& spec, const DataFacts& data) {
  auto ctx = Context::make_cpu(1);
  try {
    build_gpt(*ctx, spec, data);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}

TEST(GptGradients, BuilderNamesTheKeyThatDoesNotFit) {
  ModelSpec spec = tiny_spec(1, 0.0);
  spec.n_head = 3;
  EXPECT_NE(build_error(spec, token_data(5, 11)).find("model.n_embd"), std::string::npos);
  spec = tiny_spec(1, 0.0);
  EXPECT_NE(build_error(spec, token_data(6, 11)).find("model.seq_len"), std::string::npos);
  DataFacts images;
  images.layout.input = Shape{1, 28, 28};
  images.classes = 10;
  EXPECT_NE(build_error(spec, images).find("model.seq_len"), std::string::npos);
  spec.vocab = 8;  // the data has 11 token values
  EXPECT_NE(build_error(spec, token_data(5, 11)).find("model.vocab"), std::string::npos);
  spec.vocab = 0;  // from the data
  auto ctx = Context::make_cpu(1);
  EXPECT_EQ(dynamic_cast<Gpt&>(*build_gpt(*ctx, spec, token_data(5, 11))).config().vocab, 11);
  spec.dropout = 1.0;
  EXPECT_NE(build_error(spec, token_data(5, 11)).find("model.dropout"), std::string::npos);
}

}  // namespace
}  // namespace dtrain
