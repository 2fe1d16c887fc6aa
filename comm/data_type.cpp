#include "comm/communicator.h"

namespace dtrain {

size_t data_type_size(DataType t) {
  switch (t) {
    case DataType::Float32: return 4;
    case DataType::Float64: return 8;
    case DataType::Int32: return 4;
    case DataType::Int64: return 8;
    case DataType::UInt64: return 8;
    case DataType::UInt8: return 1;
    case DataType::BFloat16: return 2;
  }
  return 0;
}

const char* data_type_name(DataType t) {
  switch (t) {
    case DataType::Float32: return "float32";
    case DataType::Float64: return "float64";
    case DataType::Int32: return "int32";
    case DataType::Int64: return "int64";
    case DataType::UInt64: return "uint64";
    case DataType::UInt8: return "uint8";
    case DataType::BFloat16: return "bfloat16";
  }
  return "unknown";
}

}  // namespace dtrain
