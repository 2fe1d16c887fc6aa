// Times the all-reduce between two ranks at message sizes from 8 B to 16 MiB, the way
// dtrain's gradient buckets travel on the host (MPI_Iallreduce of floats, then
// MPI_Wait), and fits the link's alpha and beta (runtime/collective_cost.h:
// t(S) = 2 alpha + S / beta on two ranks). Prints the measurements and the fit as
// a cluster table's link entry (runtime/cluster_spec.h), for bench/run_scaling_validation.sh.
//   mpirun -np 2 link_bench [LABEL]
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "runtime/collective_cost.h"

namespace {

// The median of `reps` all-reduces of `count` floats, after `warmup` untimed ones;
// every rank starts each one together (a barrier), so the time is the collective's.
double median_all_reduce_s(std::vector<float>& buf, int count, int reps, int warmup) {
  std::vector<double> times;
  for (int i = 0; i < warmup + reps; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = MPI_Wtime();
    MPI_Request request;
    MPI_Iallreduce(MPI_IN_PLACE, buf.data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &request);
    MPI_Wait(&request, MPI_STATUS_IGNORE);
    const double t = MPI_Wtime() - t0;
    // The slowest rank's time is the collective's.
    double slowest = 0.0;
    MPI_Allreduce(&t, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (i >= warmup) times.push_back(slowest);
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const std::string label = argc > 1 ? argv[1] : "link";
  if (size != 2) {
    if (rank == 0) std::fprintf(stderr, "link_bench: run it on 2 ranks (mpirun -np 2), one each side of the link\n");
    MPI_Finalize();
    return 2;
  }
  char host[MPI_MAX_PROCESSOR_NAME];
  int host_len = 0;
  MPI_Get_processor_name(host, &host_len);
  std::vector<char> hosts(2 * MPI_MAX_PROCESSOR_NAME);
  MPI_Gather(host, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, hosts.data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR, 0, MPI_COMM_WORLD);

  std::vector<double> bytes, seconds;
  std::vector<float> buf(4 << 20, 1.0f);
  for (int count = 2; count <= (4 << 20); count *= 4) {
    bytes.push_back(4.0 * count);
    seconds.push_back(1e30);
  }
  // Three passes over the sizes, each size's median kept from its best pass: a moment
  // of other load on the machine moves one pass, not the fit.
  constexpr int kPasses = 3;
  for (int pass = 0; pass < kPasses; ++pass) {
    for (size_t i = 0; i < bytes.size(); ++i) {
      const int count = static_cast<int>(bytes[i] / 4);
      // Fewer repetitions for large messages: about the same time for each size.
      const int reps = count <= (1 << 14) ? 200 : count <= (1 << 18) ? 40 : 12;
      seconds[i] = std::min(seconds[i], median_all_reduce_s(buf, count, reps, 3));
    }
  }
  if (rank == 0) {
    std::printf("# %s: all-reduce between %s and %s (median of repetitions, best of 3 passes)\n", label.c_str(), hosts.data(),
                hosts.data() + MPI_MAX_PROCESSOR_NAME);
    std::printf("# bytes seconds\n");
    for (size_t i = 0; i < bytes.size(); ++i) std::printf("%.0f %.9f\n", bytes[i], seconds[i]);
    const dtrain::LinkFit fit = dtrain::fit_ring_link(2, bytes, seconds);
    std::printf("%s: {latency_us: %.4g, bandwidth_GBps: %.4g, source: \"fitted by bench/link_bench, rms error %.1f%%\"}\n",
                label.c_str(), fit.link.latency_s * 1e6, fit.link.bandwidth_Bps / 1e9, 100.0 * fit.residual);
  }
  MPI_Finalize();
  return 0;
}
