// The start-of-run check that every rank holds the same parameters.
#include <gtest/gtest.h>

#include <vector>

#include "kernels/errors.h"
#include "kernels/ops.h"
#include "models/batch.h"
#include "models/model.h"
#include "runtime/param_check.h"
#include "tests/mpi/mpi_env.h"

namespace dtrain {
namespace {

const DataFacts kMnistFacts{SampleLayout{Shape{1, 28, 28}, ElementType::kFloat32, Shape{}}, 10, false};

TEST(ParamCheck, IdenticalParametersPass) {
  auto ctx = Context::make_cpu(1);
  auto model = build_model(*ctx, ModelSpec{}, kMnistFacts);
  model->init(7);
  EXPECT_NO_THROW(verify_identical_params(*model, *ctx, testing_mpi::world()));
}

TEST(ParamCheck, DifferentParametersOnOneRankAreNamed) {
  Communicator& comm = testing_mpi::world();
  if (comm.size() < 2) GTEST_SKIP() << "needs two ranks to disagree (runs in the np2 and np4 variants)";
  auto ctx = Context::make_cpu(1);
  auto model = build_model(*ctx, ModelSpec{}, kMnistFacts);
  model->init(7);
  if (comm.rank() == comm.size() - 1) {
    std::vector<float> host(static_cast<size_t>(model->param_count()));
    ops::copy_to_host(*ctx, host.data(), model->params(), host.size() * sizeof(float));
    host[5] += 1e-3f;
    model->load_params(host.data(), model->param_count());
  }
  try {
    verify_identical_params(*model, *ctx, comm);
    FAIL() << "a rank with different parameters was not detected";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("ranks " + std::to_string(comm.size() - 1)), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dtrain
