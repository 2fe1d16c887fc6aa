// Tensor views: a pointer and a shape, never owning. Memory is owned by Buffers
// from the device allocator (kernels/memory.h); layers and ops only see views.
// Layout is row-major (C order); image tensors are NCHW.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/check.h"

namespace dtrain {

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) : dims_(dims) {}
  explicit Shape(std::vector<int64_t> dims) : dims_(std::move(dims)) {}

  int rank() const { return static_cast<int>(dims_.size()); }
  int64_t operator[](int i) const { return dims_.at(static_cast<size_t>(i)); }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : dims_) n *= d;
    return n;
  }
  const std::vector<int64_t>& dims() const { return dims_; }
  // The same shape with a leading batch dimension.
  Shape with_batch(int64_t n) const {
    std::vector<int64_t> d{n};
    d.insert(d.end(), dims_.begin(), dims_.end());
    return Shape(std::move(d));
  }
  bool operator==(const Shape& o) const { return dims_ == o.dims_; }
  bool operator!=(const Shape& o) const { return dims_ != o.dims_; }
  std::string str() const {
    std::ostringstream s;
    s << "(";
    for (size_t i = 0; i < dims_.size(); ++i) s << (i ? ", " : "") << dims_[i];
    s << ")";
    return s.str();
  }

 private:
  std::vector<int64_t> dims_;
};

template <class T>
struct TensorView {
  T* data = nullptr;
  Shape shape;

  TensorView() = default;
  TensorView(T* d, Shape s) : data(d), shape(std::move(s)) {}
  int64_t numel() const { return shape.numel(); }
  int64_t dim(int i) const { return shape[i]; }
  operator TensorView<const T>() const { return {data, shape}; }  // NOLINT: view is const-widening
};

using Tensor = TensorView<float>;
using ConstTensor = TensorView<const float>;

}  // namespace dtrain
