// Typed wrappers over Communicator: the element count and the DataType come from the
// C++ type of the span, so no call site can pass bytes where elements are meant or
// name the wrong type.
#pragma once

#include <cstdint>
#include <numeric>
#include <span>
#include <type_traits>

#include "comm/communicator.h"
#include "kernels/check.h"
#include "kernels/dtype.h"

namespace dtrain {

template <class T>
constexpr DataType data_type_of() {
  using U = std::remove_const_t<T>;
  if constexpr (std::is_same_v<U, float>) return DataType::Float32;
  else if constexpr (std::is_same_v<U, double>) return DataType::Float64;
  else if constexpr (std::is_same_v<U, int32_t>) return DataType::Int32;
  else if constexpr (std::is_same_v<U, int64_t>) return DataType::Int64;
  else if constexpr (std::is_same_v<U, uint64_t>) return DataType::UInt64;
  else if constexpr (std::is_same_v<U, uint8_t>) return DataType::UInt8;
  else if constexpr (std::is_same_v<U, bf16>) return DataType::BFloat16;
  else static_assert(sizeof(U) == 0, "no collective data type for this C++ type");
}

template <class T>
std::unique_ptr<Work> all_reduce(Communicator& comm, std::span<T> buf, ReduceOp op = ReduceOp::Sum) {
  return comm.all_reduce(buf.data(), buf.size(), data_type_of<T>(), op);
}

template <class T>
std::unique_ptr<Work> reduce_scatter(Communicator& comm, std::span<const T> send, std::span<T> recv,
                                     ReduceOp op = ReduceOp::Sum) {
  DTRAIN_ASSERT(send.size() == recv.size() * static_cast<size_t>(comm.size()),
                "reduce_scatter: send must hold size() * recv.size() elements");
  return comm.reduce_scatter(send.data(), recv.data(), recv.size(), data_type_of<T>(), op);
}

template <class T>
std::unique_ptr<Work> all_gather(Communicator& comm, std::span<const T> send, std::span<T> recv) {
  DTRAIN_ASSERT(recv.size() == send.size() * static_cast<size_t>(comm.size()),
                "all_gather: recv must hold size() * send.size() elements");
  return comm.all_gather(send.data(), recv.data(), send.size(), data_type_of<T>());
}

template <class T>
std::unique_ptr<Work> broadcast(Communicator& comm, std::span<T> buf, int root) {
  return comm.broadcast(buf.data(), buf.size(), data_type_of<T>(), root);
}

// `buf` holds the blocks of every rank back to back, counts[r] elements for rank r.
template <class T>
std::unique_ptr<Work> reduce_scatter_v(Communicator& comm, std::span<T> buf, std::span<const size_t> counts,
                                       ReduceOp op = ReduceOp::Sum) {
  DTRAIN_ASSERT(std::accumulate(counts.begin(), counts.end(), size_t{0}) == buf.size(),
                "reduce_scatter_v: buf must hold sum(counts) elements");
  return comm.reduce_scatter_v(buf.data(), counts, data_type_of<T>(), op);
}

template <class T>
std::unique_ptr<Work> all_gather_v(Communicator& comm, std::span<T> buf, std::span<const size_t> counts) {
  DTRAIN_ASSERT(std::accumulate(counts.begin(), counts.end(), size_t{0}) == buf.size(),
                "all_gather_v: buf must hold sum(counts) elements");
  return comm.all_gather_v(buf.data(), counts, data_type_of<T>());
}

// Blocking conveniences for scalars.
template <class T>
T all_reduce_value(Communicator& comm, T value) {
  all_reduce(comm, std::span<T>(&value, 1))->wait();
  return value;
}

}  // namespace dtrain
