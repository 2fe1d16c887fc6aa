// What a batch-size sweep says (dtrain sweep): the verdict in plain words, sweep.json
// with every figure, report.md, and the gnuplot script of its pictures.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/eval_target.h"
#include "runtime/sweep_fit.h"
#include "runtime/sweep_ladder.h"

namespace dtrain {

struct SweepSummary {
  EvalTarget target;
  std::string command;          // how the sweep was run, for report.md
  int world_size = 1;
  int64_t train_samples = 0;    // an epoch's samples
  int64_t largest_plain = 0;    // the largest global batch the memory plans with k = 1
  std::vector<SweepRecord> records;  // every point, in ladder order
  SweepFit fit;
};

// The sweep's B_simple: the median of the points' B_simple (each measured at the run's
// final weights) among those that reached the target and measured one, each point
// weighted by its steps; 0 when none did. Why the steps: a run stops at most one step
// past the target, and a run of S steps moves about 1/S of its way in its last step,
// so a point's value is the noise scale at the target to about that much (Note [Noise
// scale at the end of a run]); the runs of few large steps, which stop well past it,
// count least. The median, not the mean: B_simple is a ratio, and a point whose
// |G|^2 estimate lands near 0 gives an outlier.
double sweep_b_simple(const std::vector<SweepRecord>& records);

// The verdict: the largest batch without accumulation, its steps and epochs to the
// target, B_crit with its interval, what doubling the memory would buy, the batches
// that minimise epochs and wall time, and the measured B_simple beside B_crit.
std::string sweep_verdict(const SweepSummary& s);

std::string sweep_json(const SweepSummary& s);
std::string sweep_report_markdown(const SweepSummary& s, const std::string& picture);
// gnuplot's input for three panels: steps against batch and epochs against batch
// (log-log, the fit drawn and B_crit marked), and steps against samples with the
// fitted Pareto front.
std::string sweep_gnuplot_script(const SweepSummary& s, const std::string& out_png);

}  // namespace dtrain
