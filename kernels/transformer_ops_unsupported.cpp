// The transformer ops' defaults (kernels/ops.h): a backend that does not implement an
// op says so by name instead of computing nothing.
#include <string>

#include "kernels/errors.h"
#include "kernels/ops.h"

namespace dtrain {
namespace {

[[noreturn]] void unsupported(const OpsBackend& backend, const char* op) {
  throw Error(std::string("the ") + backend.name() + " backend has no " + op + " op");
}

}  // namespace

void OpsBackend::layernorm_forward(Context&, ConstTypedPtr, ConstTypedPtr, ConstTypedPtr, TypedPtr, float*, float*,
                                   int64_t, int64_t) {
  unsupported(*this, "layernorm_forward");
}
void OpsBackend::layernorm_backward(Context&, ConstTypedPtr, ConstTypedPtr, ConstTypedPtr, const float*,
                                    const float*, TypedPtr, float*, float*, int64_t, int64_t, bool) {
  unsupported(*this, "layernorm_backward");
}
void OpsBackend::add_layernorm_forward(Context&, ConstTypedPtr, ConstTypedPtr, TypedPtr, ConstTypedPtr,
                                       ConstTypedPtr, TypedPtr, float*, float*, int64_t, int64_t) {
  unsupported(*this, "add_layernorm_forward");
}
void OpsBackend::linear_forward(Context&, ConstTypedPtr, ConstTypedPtr, ConstTypedPtr, TypedPtr, TypedPtr, int64_t,
                                int64_t, int64_t, LinearEpilogue) {
  unsupported(*this, "linear_forward");
}
size_t OpsBackend::linear_forward_workspace_bytes(int64_t, int64_t, int64_t, DType) const { return 0; }
void OpsBackend::gelu_forward(Context&, ConstTypedPtr, TypedPtr, int64_t) { unsupported(*this, "gelu_forward"); }
void OpsBackend::gelu_backward(Context&, ConstTypedPtr, ConstTypedPtr, TypedPtr, int64_t) {
  unsupported(*this, "gelu_backward");
}
void OpsBackend::add(Context&, ConstTypedPtr, ConstTypedPtr, TypedPtr, int64_t) { unsupported(*this, "add"); }
void OpsBackend::convert(Context&, ConstTypedPtr, TypedPtr, int64_t) { unsupported(*this, "convert"); }
void OpsBackend::scale(Context&, float*, int64_t, float) { unsupported(*this, "scale"); }
void OpsBackend::embedding_forward(Context&, const int32_t*, ConstTypedPtr, ConstTypedPtr, TypedPtr, int64_t,
                                   int64_t, int64_t, int64_t) {
  unsupported(*this, "embedding_forward");
}
void OpsBackend::embedding_backward(Context&, ConstTypedPtr, const int32_t*, float*, float*, int64_t, int64_t,
                                    int64_t, int64_t) {
  unsupported(*this, "embedding_backward");
}
size_t OpsBackend::embedding_backward_workspace_bytes(int64_t, int64_t, int64_t, int64_t) const { return 0; }
void OpsBackend::attention_forward(Context&, ConstTypedPtr, TypedPtr, TypedPtr, int64_t, int64_t, int64_t, int64_t) {
  unsupported(*this, "attention_forward");
}
void OpsBackend::attention_backward(Context&, ConstTypedPtr, ConstTypedPtr, ConstTypedPtr, ConstTypedPtr, TypedPtr,
                                    int64_t, int64_t, int64_t, int64_t) {
  unsupported(*this, "attention_backward");
}
size_t OpsBackend::attention_workspace_bytes(int64_t, int64_t, int64_t, int64_t, DType) const { return 0; }
size_t OpsBackend::attention_saved_bytes(int64_t batch, int64_t seq, int64_t, int64_t heads, DType type) const {
  return static_cast<size_t>(batch * heads * seq * seq) * dtype_size(type);  // the probabilities
}
void OpsBackend::dropout_forward(Context&, ConstTypedPtr, TypedPtr, int64_t, int64_t, const int64_t*, uint64_t,
                                 float) {
  unsupported(*this, "dropout_forward");
}
void OpsBackend::dropout_backward(Context&, ConstTypedPtr, TypedPtr, int64_t, int64_t, const int64_t*, uint64_t,
                                  float) {
  unsupported(*this, "dropout_backward");
}

}  // namespace dtrain
