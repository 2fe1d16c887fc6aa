#include "kernels/cpu_async/cpu_async_backend.h"

#include <cstring>
#include <future>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/check.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu_async/async_uploader.h"
#include "kernels/cpu_async/transfer_memory.h"
#include "kernels/cpu_async/work_queue.h"
#include "kernels/errors.h"
#include "kernels/ops.h"

namespace dtrain {
namespace {

// The allocator of the worker's own Context: it hands the CPU op the workspace the
// host took for it from the device's allocator when queuing the op (as the CUDA
// backend takes it), so running out of memory is an error of the call, not of the
// queue. An op asking for more than the host took is a wrong workspace formula.
class LentWorkspace final : public Allocator {
 public:
  void lend(void* ptr, size_t bytes) {
    ptr_ = ptr;
    bytes_ = bytes;
  }
  void* allocate(size_t bytes, MemoryCategory category) override {
    DTRAIN_ASSERT(category == MemoryCategory::Workspace && bytes <= bytes_,
                  "a cpu-async op took " << bytes << " bytes of " << memory_category_name(category)
                                         << " beyond the " << bytes_
                                         << " bytes of workspace its formula declared");
    return ptr_;
  }
  void release(void*, size_t, MemoryCategory) override {}
  std::string device_name() const override { return "cpu-async worker"; }
  MemoryStats stats() const override { return {}; }
  void reset_peak() override {}
  MemoryCapacity capacity() const override { return {}; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Note [Device timeline]: a mark is a task on the compute queue that reads the clock
// when the worker gets to it, after every task queued before it.
class QueueTimeline : public DeviceTimeline {
 public:
  explicit QueueTimeline(std::shared_ptr<WorkQueue> queue) : queue_(std::move(queue)) {}
  void mark(const char* name, int64_t step) override {
    auto reached = std::make_shared<Clock::time_point>();
    pending_.push_back({name, step, Clock::now(), reached});
    queue_->enqueue([reached] { *reached = Clock::now(); });
  }
  std::vector<Mark> collect() override {
    std::vector<Mark> marks;
    for (const Pending& p : pending_) marks.push_back({p.name, p.step, p.queued, *p.reached});
    pending_.clear();
    return marks;
  }

 private:
  struct Pending {
    const char* name;
    int64_t step;
    Clock::time_point queued;
    std::shared_ptr<Clock::time_point> reached;  // written by the worker
  };
  std::shared_ptr<WorkQueue> queue_;
  std::vector<Pending> pending_;
};

class CpuAsyncBackend final : public OpsBackend {
 public:
  CpuAsyncBackend(std::shared_ptr<WorkQueue> compute, int num_threads)
      : compute_(std::move(compute)),
        worker_ctx_(DeviceKind::Cpu, std::unique_ptr<LentWorkspace>(lent_ = new LentWorkspace),
                    cpu_, num_threads) {}
  ~CpuAsyncBackend() override {
    // Queued ops use this object; the queue itself lives on in the allocator.
    drain_all();
  }

  const char* name() const override { return "cpu-async"; }

  void gemm(Context& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
            ConstTypedPtr a, int64_t lda, ConstTypedPtr b, int64_t ldb, float beta, TypedPtr c,
            int64_t ldc) override {
    // bf16 inputs are widened into workspace (none for fp32).
    queue_with_workspace(ctx, cpu_.gemm_workspace_bytes(m, n, k, a.type, c.type), [=, this](Context& w) {
      cpu_.gemm(w, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    });
  }
  size_t gemm_workspace_bytes(int64_t m, int64_t n, int64_t k, DType ab, DType c) const override {
    return cpu_.gemm_workspace_bytes(m, n, k, ab, c);
  }
  void add_bias(Context&, TypedPtr y, ConstTypedPtr bias, int64_t outer, int64_t channels,
                int64_t inner) override {
    queue([=, this](Context& w) { cpu_.add_bias(w, y, bias, outer, channels, inner); });
  }
  void bias_backward(Context&, ConstTypedPtr dy, float* dbias, int64_t outer, int64_t channels,
                     int64_t inner) override {
    queue([=, this](Context& w) { cpu_.bias_backward(w, dy, dbias, outer, channels, inner); });
  }
  void relu_forward(Context&, const float* x, float* y, int64_t n) override {
    queue([=, this](Context& w) { cpu_.relu_forward(w, x, y, n); });
  }
  void relu_backward(Context&, const float* y, const float* dy, float* dx, int64_t n) override {
    queue([=, this](Context& w) { cpu_.relu_backward(w, y, dy, dx, n); });
  }
  size_t conv2d_workspace_bytes(Context& ctx, const Conv2dShape& s) override {
    return cpu_.conv2d_workspace_bytes(ctx, s);
  }
  // The CPU backend's plans, which the worker's ops use. Dropping them while ops are
  // queued is safe: an op keeps the plan it runs alive.
  void release_plans() override { cpu_.release_plans(); }
  size_t plan_count() const override { return cpu_.plan_count(); }
  Conv2dDeterminism conv2d_determinism(Context& ctx, const Conv2dShape& s) override {
    return cpu_.conv2d_determinism(ctx, s);
  }
  void conv2d_forward(Context& ctx, const Conv2dShape& s, const float* x, const float* wt,
                      const float* bias, float* y) override {
    queue_with_workspace(ctx, cpu_.conv2d_workspace_bytes(ctx, s),
                         [=, this](Context& w) { cpu_.conv2d_forward(w, s, x, wt, bias, y); });
  }
  void conv2d_backward_data(Context& ctx, const Conv2dShape& s, const float* dy, const float* wt,
                            float* dx) override {
    queue_with_workspace(ctx, cpu_.conv2d_workspace_bytes(ctx, s),
                         [=, this](Context& w) { cpu_.conv2d_backward_data(w, s, dy, wt, dx); });
  }
  void conv2d_backward_filter(Context& ctx, const Conv2dShape& s, const float* x, const float* dy,
                              float* dw, float* dbias) override {
    queue_with_workspace(ctx, cpu_.conv2d_workspace_bytes(ctx, s),
                         [=, this](Context& w) { cpu_.conv2d_backward_filter(w, s, x, dy, dw, dbias); });
  }
  void maxpool2d_forward(Context&, const Pool2dShape& s, const float* x, float* y,
                         int32_t* argmax) override {
    queue([=, this](Context& w) { cpu_.maxpool2d_forward(w, s, x, y, argmax); });
  }
  void maxpool2d_backward(Context&, const Pool2dShape& s, const float* dy, const int32_t* argmax,
                          float* dx) override {
    queue([=, this](Context& w) { cpu_.maxpool2d_backward(w, s, dy, argmax, dx); });
  }
  void softmax_cross_entropy(Context& ctx, ConstTypedPtr logits, const int32_t* labels,
                             int64_t batch, int64_t classes, float grad_scale, TypedPtr dlogits,
                             double* stats, double loss_weight) override {
    queue_with_workspace(ctx, cpu_.softmax_cross_entropy_workspace_bytes(batch), [=, this](Context& w) {
      cpu_.softmax_cross_entropy(w, logits, labels, batch, classes, grad_scale, dlogits, stats, loss_weight);
    });
  }
  size_t softmax_cross_entropy_workspace_bytes(int64_t batch) const override {
    return cpu_.softmax_cross_entropy_workspace_bytes(batch);
  }
  void sgd_update(Context&, float* params, const float* grads, float* momentum, int64_t n,
                  const SgdHyper& h) override {
    queue([=, this](Context& w) { cpu_.sgd_update(w, params, grads, momentum, n, h); });
  }
  void layernorm_forward(Context&, ConstTypedPtr x, ConstTypedPtr weight, ConstTypedPtr bias, TypedPtr y,
                         float* mean, float* rstd, int64_t rows, int64_t channels) override {
    queue([=, this](Context& w) { cpu_.layernorm_forward(w, x, weight, bias, y, mean, rstd, rows, channels); });
  }
  void layernorm_backward(Context&, ConstTypedPtr dy, ConstTypedPtr x, ConstTypedPtr weight,
                          const float* mean, const float* rstd, TypedPtr dx, float* dweight, float* dbias,
                          int64_t rows, int64_t channels, bool accumulate_dx) override {
    queue([=, this](Context& w) {
      cpu_.layernorm_backward(w, dy, x, weight, mean, rstd, dx, dweight, dbias, rows, channels, accumulate_dx);
    });
  }
  void add_layernorm_forward(Context&, ConstTypedPtr a, ConstTypedPtr b, TypedPtr residual_out, ConstTypedPtr weight,
                             ConstTypedPtr bias, TypedPtr y, float* mean, float* rstd, int64_t rows,
                             int64_t channels) override {
    queue([=, this](Context& w) {
      cpu_.add_layernorm_forward(w, a, b, residual_out, weight, bias, y, mean, rstd, rows, channels);
    });
  }
  void linear_forward(Context& ctx, ConstTypedPtr x, ConstTypedPtr w, ConstTypedPtr bias, TypedPtr pre, TypedPtr y,
                      int64_t rows, int64_t in, int64_t out, LinearEpilogue epilogue) override {
    queue_with_workspace(ctx, cpu_.linear_forward_workspace_bytes(rows, in, out, y.type), [=, this](Context& w_ctx) {
      cpu_.linear_forward(w_ctx, x, w, bias, pre, y, rows, in, out, epilogue);
    });
  }
  size_t linear_forward_workspace_bytes(int64_t rows, int64_t in, int64_t out, DType type) const override {
    return cpu_.linear_forward_workspace_bytes(rows, in, out, type);
  }
  void gelu_forward(Context&, ConstTypedPtr x, TypedPtr y, int64_t n) override {
    queue([=, this](Context& w) { cpu_.gelu_forward(w, x, y, n); });
  }
  void gelu_backward(Context&, ConstTypedPtr x, ConstTypedPtr dy, TypedPtr dx, int64_t n) override {
    queue([=, this](Context& w) { cpu_.gelu_backward(w, x, dy, dx, n); });
  }
  void add(Context&, ConstTypedPtr a, ConstTypedPtr b, TypedPtr y, int64_t n) override {
    queue([=, this](Context& w) { cpu_.add(w, a, b, y, n); });
  }
  void scale(Context&, float* x, int64_t n, float alpha) override {
    queue([=, this](Context& w) { cpu_.scale(w, x, n, alpha); });
  }
  void embedding_forward(Context&, const int32_t* tokens, ConstTypedPtr wte, ConstTypedPtr wpe, TypedPtr y,
                         int64_t batch, int64_t seq, int64_t channels, int64_t vocab) override {
    queue([=, this](Context& w) { cpu_.embedding_forward(w, tokens, wte, wpe, y, batch, seq, channels, vocab); });
  }
  void embedding_backward(Context& ctx, ConstTypedPtr dy, const int32_t* tokens, float* dwte, float* dwpe,
                          int64_t batch, int64_t seq, int64_t channels, int64_t vocab) override {
    queue_with_workspace(ctx, cpu_.embedding_backward_workspace_bytes(batch, seq, channels, vocab),
                         [=, this](Context& w) {
                           cpu_.embedding_backward(w, dy, tokens, dwte, dwpe, batch, seq, channels, vocab);
                         });
  }
  size_t embedding_backward_workspace_bytes(int64_t batch, int64_t seq, int64_t channels,
                                            int64_t vocab) const override {
    return cpu_.embedding_backward_workspace_bytes(batch, seq, channels, vocab);
  }
  // fp32 forward takes no workspace (probs holds the scores); bf16 forward widens its
  // operands into the scratch backward takes.
  void attention_forward(Context& ctx, ConstTypedPtr qkv, TypedPtr out, TypedPtr probs, int64_t batch, int64_t seq,
                         int64_t channels, int64_t heads) override {
    const size_t bytes =
        qkv.type == DType::kF32 ? 0 : cpu_.attention_workspace_bytes(batch, seq, channels, heads, qkv.type);
    queue_with_workspace(ctx, bytes, [=, this](Context& w) {
      cpu_.attention_forward(w, qkv, out, probs, batch, seq, channels, heads);
    });
  }
  void attention_backward(Context& ctx, ConstTypedPtr dout, ConstTypedPtr qkv, ConstTypedPtr out,
                          ConstTypedPtr probs, TypedPtr dqkv, int64_t batch, int64_t seq, int64_t channels,
                          int64_t heads) override {
    queue_with_workspace(ctx, cpu_.attention_workspace_bytes(batch, seq, channels, heads, qkv.type), [=, this](Context& w) {
      cpu_.attention_backward(w, dout, qkv, out, probs, dqkv, batch, seq, channels, heads);
    });
  }
  size_t attention_workspace_bytes(int64_t batch, int64_t seq, int64_t channels, int64_t heads,
                                   DType type) const override {
    return cpu_.attention_workspace_bytes(batch, seq, channels, heads, type);
  }
  void dropout_forward(Context&, ConstTypedPtr x, TypedPtr y, int64_t samples, int64_t per_sample,
                       const int64_t* sample_ids, uint64_t key, float p) override {
    queue([=, this](Context& w) { cpu_.dropout_forward(w, x, y, samples, per_sample, sample_ids, key, p); });
  }
  void dropout_backward(Context&, ConstTypedPtr dy, TypedPtr dx, int64_t samples, int64_t per_sample,
                        const int64_t* sample_ids, uint64_t key, float p) override {
    queue([=, this](Context& w) { cpu_.dropout_backward(w, dy, dx, samples, per_sample, sample_ids, key, p); });
  }
  void adamw_update(Context&, float* params, const float* grads, float* m, float* v, bf16* params_bf16,
                    int64_t n, const AdamWHyper& h) override {
    queue([=, this](Context& w) { cpu_.adamw_update(w, params, grads, m, v, params_bf16, n, h); });
  }
  void convert(Context&, ConstTypedPtr x, TypedPtr y, int64_t n) override {
    queue([=, this](Context& w) { cpu_.convert(w, x, y, n); });
  }
  void fill(Context&, float* x, int64_t n, float value) override {
    queue([=, this](Context& w) { cpu_.fill(w, x, n, value); });
  }
  void sum_squares(Context&, const float* x, int64_t n, double scale, double* out) override {
    queue([=, this](Context& w) { cpu_.sum_squares(w, x, n, scale, out); });
  }
  void copy_from_host(Context&, void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    std::shared_ptr<const void> source = transfer_->source_for_copy(src, bytes);
    compute_->enqueue([dst, source, bytes] { std::memcpy(dst, source.get(), bytes); });
  }
  void copy_to_host(Context& ctx, void* dst, const void* src, size_t bytes) override {
    if (bytes != 0) compute_->enqueue([dst, src, bytes] { std::memcpy(dst, src, bytes); });
    synchronize(ctx);
  }
  void synchronize(Context&) override {
    ++host_syncs_;
    compute_->drain();
    if (std::exception_ptr error = compute_->take_error()) std::rethrow_exception(error);
  }
  void* alloc_host(size_t bytes) override { return transfer_->allocate(bytes); }
  void free_host(void* p) override {
    // As cudaFreeHost: the device's queued work, copies included, finishes first.
    drain_all();
    transfer_->release(p);
  }
  int64_t host_syncs() const override { return host_syncs_; }
  std::unique_ptr<DeviceTimeline> make_timeline(Context&) override {
    return std::make_unique<QueueTimeline>(compute_);
  }
  std::unique_ptr<Uploader> make_uploader(Context&) override {
    // Its own queue, as each CUDA Uploader has its own stream: uploads of different
    // Uploaders are not ordered with each other.
    auto side = std::make_shared<WorkQueue>(std::chrono::microseconds{0}, nullptr);
    side_queues_.push_back(side);
    return make_async_uploader(compute_, std::move(side), transfer_);
  }

  // Work queued from now on, on the compute queue and every Uploader's, waits for `gate`.
  void hold(const std::shared_future<void>& gate) {
    for (const std::shared_ptr<WorkQueue>& q : live_queues()) q->enqueue([gate] { gate.wait(); });
  }

 private:
  template <class Op>
  void queue(Op op) {
    compute_->enqueue([this, op] { op(worker_ctx_); });
  }
  template <class Op>
  void queue_with_workspace(Context& ctx, size_t bytes, Op op) {
    void* workspace = bytes == 0 ? nullptr : ctx.workspace(bytes);
    compute_->enqueue([this, op, workspace, bytes] {
      // The loan lasts for this op only: an op queued without one that asks for
      // workspace fails instead of reusing a pointer that may be freed by then.
      struct EndLoan {
        CpuAsyncBackend& b;
        ~EndLoan() {
          b.worker_ctx_.release_workspace();
          b.lent_->lend(nullptr, 0);
        }
      } end_loan{*this};
      lent_->lend(workspace, bytes);
      op(worker_ctx_);
    });
  }

  // The compute queue and the queues of the Uploaders still alive.
  std::vector<std::shared_ptr<WorkQueue>> live_queues() {
    std::vector<std::shared_ptr<WorkQueue>> queues{compute_};
    std::erase_if(side_queues_, [](const std::weak_ptr<WorkQueue>& q) { return q.expired(); });
    for (const std::weak_ptr<WorkQueue>& q : side_queues_) {
      if (auto live = q.lock()) queues.push_back(std::move(live));
    }
    return queues;
  }
  void drain_all() {
    // Uploads first: the compute queue may wait for them, never the other way round
    // for work queued before.
    std::vector<std::shared_ptr<WorkQueue>> queues = live_queues();
    for (size_t i = queues.size(); i-- > 0;) queues[i]->drain();
  }

  OpsBackend& cpu_ = cpu::backend();
  std::shared_ptr<WorkQueue> compute_;
  int64_t host_syncs_ = 0;  // synchronize() calls (copy_to_host counts through it)
  std::vector<std::weak_ptr<WorkQueue>> side_queues_;  // one per Uploader made
  std::shared_ptr<TransferMemory> transfer_ = std::make_shared<TransferMemory>();
  LentWorkspace* lent_ = nullptr;  // owned by worker_ctx_
  Context worker_ctx_;             // used on the worker thread only
};

}  // namespace

CpuAsyncHold::CpuAsyncHold(Context& ctx) {
  auto* backend = dynamic_cast<CpuAsyncBackend*>(&ctx.backend());
  if (backend == nullptr) throw Error(std::string("CpuAsyncHold needs a cpu-async context, not ") + ctx.backend().name());
  backend->hold(gate_.get_future().share());
}

CpuAsyncHold::~CpuAsyncHold() { gate_.set_value(); }

std::unique_ptr<Context> Context::make_cpu_async(int num_threads, size_t memory_limit_bytes) {
  cpu::set_num_threads(num_threads);
  auto compute = std::make_shared<WorkQueue>(kCpuAsyncLag, [num_threads] { cpu::set_num_threads(num_threads); });
  // Freed memory goes back after the work queued before its release, poisoned (every
  // byte 0xff: a NaN in each float, -1 in each int) so a late reader sees garbage.
  auto dispose = [compute](void* ptr, size_t bytes) {
    compute->enqueue([ptr, bytes] {
      std::memset(ptr, 0xff, bytes);
      std::free(ptr);
    });
  };
  auto allocator = std::make_unique<CpuAllocator>(memory_limit_bytes, "cpu-async", dispose);
  auto backend = std::make_unique<CpuAsyncBackend>(compute, num_threads);
  return std::make_unique<Context>(DeviceKind::CpuAsync, std::move(allocator), std::move(backend),
                                   num_threads);
}

}  // namespace dtrain
