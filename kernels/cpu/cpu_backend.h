// The CPU backend of the op set: OpenBLAS for GEMM, oneDNN for convolutions, OpenMP
// loops for the rest.
// One file per op family (gemm.cpp, elementwise.cpp, conv2d.cpp on oneDNN, pool.cpp,
// cross_entropy.cpp, optimizers.cpp); cpu_backend.cpp binds them to OpsBackend.
#pragma once

#include "kernels/ops.h"

namespace dtrain::cpu {

// The process-wide CPU backend. Per-rank state lives in the Context; the backend keeps
// only the oneDNN primitives of each convolution shape (release_plans() drops them),
// shared by the process's contexts and safe to use from several threads.
OpsBackend& backend();

// Sets the threads of this process's one pool (OpenMP's; OpenBLAS stays on one thread).
// Ranks sharing a node's cores each take their share (launch/ computes it), so they
// never oversubscribe.
void set_num_threads(int n);

}  // namespace dtrain::cpu
