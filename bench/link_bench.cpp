// Times the all-reduce between two ranks at message sizes from 8 B to MAX_BYTES
// (default 16 MiB: 8 B times powers of 4, then MAX_BYTES itself), the way dtrain's
// gradient buckets travel on the host (MPI_Iallreduce of floats, then MPI_Wait), and
// gives the link's alpha and beta (runtime/collective_cost.h: t(S) = 2 alpha + S / beta
// on two ranks). Prints the measurements and the link as a cluster table's entry
// (runtime/cluster_spec.h), for bench/run_scaling_validation.sh, which passes a job's
// largest gradient bucket as MAX_BYTES: a link's cost per byte is not the same at
// every size (TCP's grows past a few hundred KiB here), so the entry is the line
// through the smallest size and MAX_BYTES, the two sizes a step sends (its small
// all-reduce of sums, and its buckets), with the least-squares line over every size
// printed beside it.
//   mpirun -np 2 link_bench [LABEL [MAX_BYTES]]
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
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

  const long max_bytes = argc > 2 ? std::atol(argv[2]) : 16L << 20;
  if (max_bytes < 64 || max_bytes > (1L << 30)) {
    if (rank == 0) std::fprintf(stderr, "link_bench: MAX_BYTES %s is not between 64 and 1 GiB\n", argv[2]);
    MPI_Finalize();
    return 2;
  }
  const int max_count = static_cast<int>(max_bytes / 4);
  std::vector<double> bytes, seconds;
  std::vector<float> buf(static_cast<size_t>(max_count), 1.0f);
  for (int count = 2; count < max_count; count *= 4) bytes.push_back(4.0 * count);
  bytes.push_back(4.0 * max_count);
  seconds.assign(bytes.size(), 1e30);
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
    // The table's entry: the line through the smallest message (latency alone) and the
    // largest (the job's bucket), the two sizes the scaling model uses a link at
    // (ring_link_from_ends); the least-squares line over every size, for comparison.
    const dtrain::LinkFit fit = dtrain::fit_ring_link(2, bytes, seconds);
    std::printf("# least squares over every size: latency %.4g us, bandwidth %.4g GB/s, rms error %.1f%%\n",
                fit.link.latency_s * 1e6, fit.link.bandwidth_Bps / 1e9, 100.0 * fit.residual);
    const dtrain::Link ends = dtrain::ring_link_from_ends(2, seconds.front(), bytes.back(), seconds.back());
    std::printf("%s: {latency_us: %.4g, bandwidth_GBps: %.4g, source: \"bench/link_bench: through %.0f B and %.0f B\"}\n",
                label.c_str(), ends.latency_s * 1e6, ends.bandwidth_Bps / 1e9, bytes.front(), bytes.back());
  }
  MPI_Finalize();
  return 0;
}
