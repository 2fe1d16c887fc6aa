// Note [Setup agreement]: a setup failure on one rank ends every rank together, and
// only the lowest failing rank reports it.
#include <gtest/gtest.h>

#include "kernels/errors.h"
#include "runtime/setup_agreement.h"
#include "tests/mpi/mpi_env.h"

namespace dtrain {
namespace {

TEST(SetupAgreement, AllSucceededReturns) {
  EXPECT_NO_THROW(agree_on_setup(testing_mpi::world(), nullptr));
}

TEST(SetupAgreement, OneFailingRankStopsEveryRankWithItsCode) {
  Communicator& comm = testing_mpi::world();
  const int failing = comm.size() - 1;
  std::exception_ptr local;
  if (comm.rank() == failing) local = std::make_exception_ptr(DataError("/data/x.gz: truncated"));
  try {
    agree_on_setup(comm, local);
    FAIL() << "rank " << comm.rank() << " was not told of rank " << failing << "'s failure";
  } catch (const Error& e) {
    EXPECT_TRUE(e.agreed());
    EXPECT_EQ(e.exit_code(), kExitBadInput);
    EXPECT_EQ(e.should_report(), comm.rank() == failing);
    if (comm.rank() != failing) {
      EXPECT_NE(std::string(e.what()).find("rank(s) " + std::to_string(failing)), std::string::npos) << e.what();
    }
  }
}

TEST(SetupAgreement, LowestFailingRankReports) {
  Communicator& comm = testing_mpi::world();
  auto local = std::make_exception_ptr(ConfigError("same on every rank"));
  try {
    agree_on_setup(comm, local);
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.should_report(), comm.rank() == 0);
  }
}

}  // namespace
}  // namespace dtrain
