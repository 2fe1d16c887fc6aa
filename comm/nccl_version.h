// NCCL version gates, in one place. dtrain has one code path for NCCL, so the only
// gate is the floor below which that path does not compile or behave as written:
//  - ncclGetLastError (2.13) gives the detail behind an error code in every message;
//  - ncclCommInitRankConfig (nonblocking communicators) and ncclCommFinalize, which
//    the destructor calls before ncclCommDestroy, are there from 2.14;
//  - ncclBfloat16 (comm.reduce_dtype bf16) is there from 2.10.
// Should a later feature need a newer NCCL, add a DTRAIN_NCCL_HAS_<FEATURE> flag here
// from NCCL_VERSION_CODE and use that flag, never the raw version, elsewhere.
#pragma once

#include <nccl.h>

#if !defined(NCCL_VERSION_CODE) || NCCL_VERSION_CODE < NCCL_VERSION(2, 14, 0)
#error "dtrain needs NCCL 2.14 or newer: point CMake at a newer nccl.h (DTRAIN_NCCL_INCLUDE) or configure with -DDTRAIN_CUDA=OFF"
#endif
