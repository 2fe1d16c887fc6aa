#include "kernels/cpu/conv2d_plan.h"

#include <array>
#include <optional>
#include <sstream>
#include <string>

#include "kernels/cpu/onednn.h"

namespace dtrain::cpu {

namespace {

using tag = dnnl::memory::format_tag;
using dims = dnnl::memory::dims;

std::string describe(const Conv2dShape& s) {
  std::ostringstream out;
  out << "a convolution group of N=" << s.batch << " Ci=" << s.in_channels << " H=" << s.height
      << " W=" << s.width << " Co=" << s.out_channels << " K=" << s.kernel
      << " stride=" << s.stride << " pad=" << s.padding;
  return out.str();
}

dnnl::memory::desc f32(const dims& d, tag t) {
  return dnnl::memory::desc(d, dnnl::memory::data_type::f32, t);
}

// The descriptors of a shape's tensors in one layout family: `any` lets oneDNN choose
// (its blocked layouts), nchw/oihw are the ops' own.
struct ConvDescs {
  dnnl::memory::desc src, weights, bias, dst;
  dims strides, padding;

  ConvDescs(const Conv2dShape& s, ConvLayout layout)
      : src(f32({s.batch, s.in_channels, s.height, s.width},
                layout == ConvLayout::Plain ? tag::nchw : tag::any)),
        weights(f32({s.out_channels, s.in_channels, s.kernel, s.kernel},
                    layout == ConvLayout::Plain ? tag::oihw : tag::any)),
        bias(f32({s.out_channels}, tag::x)),
        dst(f32({s.batch, s.out_channels, s.out_height(), s.out_width()},
                layout == ConvLayout::Plain ? tag::nchw : tag::any)),
        strides{s.stride, s.stride},
        padding{s.padding, s.padding} {}
};

// Whether a layout pads the channels to twice their number or more (Note [oneDNN
// layout choice]).
bool pads_channels(const dnnl::memory::desc& d) {
  return d.data.padded_dims[1] >= 2 * d.data.dims[1];
}

dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// An operand whose reorder runs from `from` to `to`; none where they are equal.
OnednnOperand operand(const dnnl::memory::desc& user, const dnnl::memory::desc& internal,
                      bool input, const std::string& where) {
  OnednnOperand op{user, internal, {}, {}};
  if (!op.reordered()) return op;
  const dnnl::engine& engine = onednn_engine();
  const dnnl::memory::desc& from = input ? user : internal;
  const dnnl::memory::desc& to = input ? internal : user;
  const auto pd = DTRAIN_ONEDNN_CHECK(
      dnnl::reorder::primitive_desc(engine, from, engine, to, user_scratchpad()), where);
  op.reorder = DTRAIN_ONEDNN_CHECK(dnnl::reorder(pd), where);
  op.scratchpad = pd.scratchpad_desc();
  return op;
}

using ForwardPd = dnnl::convolution_forward::primitive_desc;
using BackwardDataPd = dnnl::convolution_backward_data::primitive_desc;
using BackwardWeightsPd = dnnl::convolution_backward_weights::primitive_desc;

ForwardPd forward_pd(const ConvDescs& d, const std::string& where) {
  const dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_training,
                                             dnnl::algorithm::convolution_direct, d.src,
                                             d.weights, d.bias, d.dst, d.strides, d.padding,
                                             d.padding);
  return DTRAIN_ONEDNN_CHECK(ForwardPd(desc, user_scratchpad(), onednn_engine()), where);
}

BackwardDataPd backward_data_pd(const ConvDescs& d, const ForwardPd& hint, const std::string& where) {
  const dnnl::convolution_backward_data::desc desc(dnnl::algorithm::convolution_direct, d.src,
                                                   d.weights, d.dst, d.strides, d.padding,
                                                   d.padding);
  return DTRAIN_ONEDNN_CHECK(BackwardDataPd(desc, user_scratchpad(), onednn_engine(), hint), where);
}

// No bias: the bias gradient is bias_backward's.
BackwardWeightsPd backward_weights_pd(const ConvDescs& d, const ForwardPd& hint,
                                      const std::string& where) {
  const dnnl::convolution_backward_weights::desc desc(dnnl::algorithm::convolution_direct, d.src,
                                                      d.weights, d.dst, d.strides, d.padding,
                                                      d.padding);
  return DTRAIN_ONEDNN_CHECK(BackwardWeightsPd(desc, user_scratchpad(), onednn_engine(), hint),
                             where);
}

// A direction's primitive descriptor on oneDNN's blocked layouts, unless they pad the
// channels of either of its two activations to twice or more; then the one on the
// plain layouts (Note [oneDNN layout choice]). make(layout) makes one;
// activations(pd) names the two.
template <class Make, class Activations>
auto choose_layout(Make make, Activations activations, ConvLayout& layout) {
  auto pd = make(ConvLayout::Blocked);
  const auto [a, b] = activations(pd);
  layout = pads_channels(a) || pads_channels(b) ? ConvLayout::Plain : ConvLayout::Blocked;
  return layout == ConvLayout::Blocked ? pd : make(ConvLayout::Plain);
}

}  // namespace

ConvPlan::ConvPlan(const Conv2dShape& group)
    : shape(group), zero_bias(static_cast<size_t>(group.out_channels), 0.0f) {
  // Made for one thread: the ops run each primitive on one thread of their own team
  // (Note [oneDNN convolutions] in conv2d.cpp).
  const OmpThreadsScope one_thread(1);
  const std::string where = "planning " + describe(group);
  const ConvDescs blocked(group, ConvLayout::Blocked), plain(group, ConvLayout::Plain);
  auto descs = [&](ConvLayout l) -> const ConvDescs& { return l == ConvLayout::Blocked ? blocked : plain; };
  // The forward descriptors are also the backward ones' hints.
  const ForwardPd blocked_forward = forward_pd(blocked, where);
  std::optional<ForwardPd> plain_forward;
  auto forward_of = [&](ConvLayout l) {
    if (l == ConvLayout::Blocked) return blocked_forward;
    if (!plain_forward) plain_forward = forward_pd(plain, where);
    return *plain_forward;
  };

  const ForwardPd f = choose_layout(
      forward_of, [](const ForwardPd& pd) { return std::array{pd.src_desc(), pd.dst_desc()}; },
      forward.layout);
  forward.primitive = DTRAIN_ONEDNN_CHECK(dnnl::convolution_forward(f), where);
  forward.src = operand(plain.src, f.src_desc(), true, where);
  forward.weights = operand(plain.weights, f.weights_desc(), true, where);
  forward.dst = operand(plain.dst, f.dst_desc(), false, where);
  forward.bias = plain.bias;
  forward.scratchpad = f.scratchpad_desc();

  const BackwardDataPd d = choose_layout(
      [&](ConvLayout l) { return backward_data_pd(descs(l), forward_of(l), where); },
      [](const BackwardDataPd& pd) { return std::array{pd.diff_src_desc(), pd.diff_dst_desc()}; },
      backward_data.layout);
  backward_data.primitive = DTRAIN_ONEDNN_CHECK(dnnl::convolution_backward_data(d), where);
  backward_data.diff_dst = operand(plain.dst, d.diff_dst_desc(), true, where);
  backward_data.weights = operand(plain.weights, d.weights_desc(), true, where);
  backward_data.diff_src = operand(plain.src, d.diff_src_desc(), false, where);
  backward_data.scratchpad = d.scratchpad_desc();

  const BackwardWeightsPd w = choose_layout(
      [&](ConvLayout l) { return backward_weights_pd(descs(l), forward_of(l), where); },
      [](const BackwardWeightsPd& pd) { return std::array{pd.src_desc(), pd.diff_dst_desc()}; },
      backward_weights.layout);
  backward_weights.primitive = DTRAIN_ONEDNN_CHECK(dnnl::convolution_backward_weights(w), where);
  backward_weights.src = operand(plain.src, w.src_desc(), true, where);
  backward_weights.diff_dst = operand(plain.dst, w.diff_dst_desc(), true, where);
  backward_weights.diff_weights = operand(plain.weights, w.diff_weights_desc(), false, where);
  backward_weights.scratchpad = w.scratchpad_desc();
}

std::shared_ptr<const ConvPlan> ConvPlanCache::get(const Conv2dShape& group) {
  const std::array<int64_t, 8> key{group.batch,  group.in_channels,  group.height, group.width,
                                   group.out_channels, group.kernel, group.stride,
                                   group.padding};
  const std::lock_guard<std::mutex> lock(mutex_);
  auto found = plans_.find(key);
  if (found == plans_.end()) found = plans_.emplace(key, std::make_shared<const ConvPlan>(group)).first;
  return found->second;
}

void ConvPlanCache::clear() {
  const std::lock_guard<std::mutex> lock(mutex_);
  plans_.clear();
}

size_t ConvPlanCache::size() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return plans_.size();
}

}  // namespace dtrain::cpu
