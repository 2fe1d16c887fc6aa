#include "runtime/sweep_report.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

namespace dtrain {
namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

// Epochs as a person says them: two significant figures, whole numbers from 10 up
// ("180", not "1.8e+02").
std::string epochs_text(double e) { return e >= 10 ? fmt("%.0f", e) : fmt("%.2g", e); }

// Two or three significant figures, as a person says a measured number.
std::string about(double v) {
  if (v >= 100) return fmt("%.0f", std::round(v / std::pow(10.0, std::floor(std::log10(v)) - 1)) *
                                       std::pow(10.0, std::floor(std::log10(v)) - 1));
  if (v >= 10) return fmt("%.0f", v);
  return fmt("%.2g", v);
}

// Per batch: the mean over its seeds, and whether every seed reached the target.
struct BatchMean {
  double steps = 0, samples = 0, wall = 0;
  int runs = 0, reached = 0;
};

std::map<int64_t, BatchMean> by_batch(const std::vector<SweepRecord>& records) {
  std::map<int64_t, BatchMean> out;
  for (const SweepRecord& r : records) {
    BatchMean& m = out[r.batch];
    ++m.runs;
    if (!r.reached) continue;
    ++m.reached;
    m.steps += static_cast<double>(r.steps);
    m.samples += static_cast<double>(r.samples);
    m.wall += r.wall_s;
  }
  for (auto& [b, m] : out) {
    if (m.reached == 0) continue;
    m.steps /= m.reached;
    m.samples /= m.reached;
    m.wall /= m.reached;
  }
  return out;
}

std::string json_number(double v) { return std::isfinite(v) ? fmt("%.6g", v) : "null"; }

std::string fit_value_json(const FitValue& v) {
  return "{\"value\":" + json_number(v.value) + ",\"low\":" + json_number(v.low) + ",\"high\":" +
         json_number(v.high) + "}";
}

}  // namespace

double sweep_b_simple(const std::vector<SweepRecord>& records) {
  std::vector<std::pair<double, double>> v;  // (B_simple, steps)
  double total = 0.0;
  for (const SweepRecord& r : records) {
    if (r.reached && r.b_simple > 0 && r.steps > 0) {
      v.emplace_back(r.b_simple, static_cast<double>(r.steps));
      total += static_cast<double>(r.steps);
    }
  }
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  // The weighted median: the value where the weight below and the weight above are
  // each at most half; where a value's cumulative weight is exactly half, the midpoint
  // of it and the next (the plain median's rule for an even count of equal weights).
  double below = 0.0;
  for (size_t i = 0; i < v.size(); ++i) {
    below += v[i].second;
    if (below == total / 2.0 && i + 1 < v.size()) return (v[i].first + v[i + 1].first) / 2.0;
    if (below > total / 2.0) return v[i].first;
  }
  return v.back().first;
}

std::string sweep_verdict(const SweepSummary& s) {
  std::ostringstream out;
  const double n = static_cast<double>(s.train_samples);
  const double g = static_cast<double>(s.largest_plain);
  const std::map<int64_t, BatchMean> batches = by_batch(s.records);
  const std::string target = fmt("%g", s.target.value);
  out << "The largest batch that fits without accumulation is " << s.largest_plain << ".";
  const auto at_plain = batches.find(s.largest_plain);
  if (at_plain != batches.end() && at_plain->second.reached == at_plain->second.runs) {
    out << " It needs about " << about(at_plain->second.steps) << " steps (" << epochs_text(at_plain->second.samples / n)
        << " epochs) to reach " << target << " (measured).";
  } else if (s.fit.ok) {
    out << " It needs about " << about(s.fit.steps_at(g)) << " steps (" << epochs_text(s.fit.samples_at(g) / n)
        << " epochs) to reach " << target << " (from the fit; it was not run to the target).";
  }
  if (s.fit.ok) {
    out << " B_crit is about " << about(s.fit.b_crit.value) << " (range " << about(s.fit.b_crit.low) << "-"
        << about(s.fit.b_crit.high) << ")";
    if (!s.fit.b_crit_resolved) out << ", beyond what this ladder resolves";
    out << ".";
    const double cut = 1.0 - s.fit.steps_at(2 * g) / s.fit.steps_at(g);
    const double more = s.fit.samples_at(2 * g) / s.fit.samples_at(g) - 1.0;
    out << " Doubling the memory would cut the steps by about " << fmt("%.0f", 100 * cut) << "% and cost "
        << fmt("%.0f", 100 * more) << "% more epochs.";
  } else {
    // The fit's last note says why there is none ("no fit: it needs ..."); said once, as a sentence.
    std::string why = s.fit.notes.empty() ? std::string("no fit: too few points") : s.fit.notes.back();
    if (!why.empty()) why[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(why[0])));
    out << " " << why << ".";
  }
  int64_t min_epochs = 0, min_wall = 0;
  double best_samples = 0, best_wall = 0;
  for (const auto& [b, m] : batches) {
    if (m.reached == 0 || m.reached < m.runs) continue;
    if (min_epochs == 0 || m.samples < best_samples) min_epochs = b, best_samples = m.samples;
    if (min_wall == 0 || m.wall < best_wall) min_wall = b, best_wall = m.wall;
  }
  if (min_epochs > 0) {
    out << " The batch that minimises epochs is " << min_epochs << "; the one that minimises wall time on these "
        << "devices is " << min_wall << ".";
  }
  const double b_simple = sweep_b_simple(s.records);
  if (b_simple > 0) {
    out << " The gradient noise scale B_simple at the target is about " << about(b_simple)
        << " (measured at the end of each run that reached it; their median, weighted by steps)";
    if (s.fit.ok) out << ", against the fitted B_crit of " << about(s.fit.b_crit.value);
    out << ".";
  } else {
    out << " B_simple was not measured (log.noise_scale is off, or no run that reached the target measured it).";
  }
  return out.str();
}

std::string sweep_json(const SweepSummary& s) {
  std::ostringstream out;
  out << "{\"target\":{\"key\":\"" << s.target.key << "\",\"value\":" << json_number(s.target.value)
      << ",\"higher_is_better\":" << (s.target.higher_is_better ? "true" : "false")
      << ",\"resolution\":" << json_number(s.target.resolution) << "},\n"
      << " \"world_size\":" << s.world_size << ",\"train_samples\":" << s.train_samples
      << ",\"largest_batch_without_accumulation\":" << s.largest_plain << ",\n \"points\":[\n";
  for (size_t i = 0; i < s.records.size(); ++i) {
    out << "  " << sweep_record_json(s.records[i]) << (i + 1 < s.records.size() ? ",\n" : "\n");
  }
  out << " ],\n \"fit\":{\"ok\":" << (s.fit.ok ? "true" : "false");
  if (s.fit.ok) {
    out << ",\"s_min\":" << fit_value_json(s.fit.s_min) << ",\"e_min\":" << fit_value_json(s.fit.e_min)
        << ",\"b_crit\":" << fit_value_json(s.fit.b_crit)
        << ",\"b_crit_resolved\":" << (s.fit.b_crit_resolved ? "true" : "false") << ",\"points\":" << s.fit.points
        << ",\"seeds\":" << s.fit.seeds << ",\"uncertainty\":\"" << s.fit.uncertainty << "\"";
  }
  out << ",\"notes\":[";
  for (size_t i = 0; i < s.fit.notes.size(); ++i) out << (i ? "," : "") << "\"" << s.fit.notes[i] << "\"";
  out << "]},\n \"b_simple\":" << json_number(sweep_b_simple(s.records)) << ",\n \"verdict\":\"" << sweep_verdict(s)
      << "\"}\n";
  return out.str();
}

std::string sweep_report_markdown(const SweepSummary& s, const std::string& picture) {
  std::ostringstream out;
  const double n = static_cast<double>(s.train_samples);
  out << "# Batch-size sweep to " << s.target.describe() << "\n\n"
      << "```\n" << s.command << "\n```\n\n"
      << s.world_size << " rank(s); an epoch is " << s.train_samples << " samples; the largest batch without "
      << "accumulation is " << s.largest_plain << ". Each run evaluates at every step up to "
      << fmt("%.0f", 1.0 / s.target.resolution) << ", then whenever the step count has grown by "
      << fmt("%.0f", 100 * s.target.resolution) << "%, so the steps to the target are resolved to that.\n\n"
      << "| batch | seed | k | reached | steps | epochs | wall s | final " << s.target.key << " | B_simple |\n"
      << "| ---: | ---: | ---: | :---: | ---: | ---: | ---: | ---: | ---: |\n";
  for (const SweepRecord& r : s.records) {
    out << "| " << r.batch << " | " << r.seed << " | " << r.accumulation << " | " << (r.reached ? "yes" : "no")
        << " | " << (r.reached ? std::to_string(r.steps) : "(" + std::to_string(r.steps) + ")") << " | "
        << fmt("%.3g", r.reached ? static_cast<double>(r.samples) / n : r.epochs) << " | " << fmt("%.1f", r.wall_s)
        << " | " << fmt("%.4g", r.final_metric) << " | " << (r.b_simple > 0 ? (r.b_simple >= 100 ? fmt("%.0f", r.b_simple) : fmt("%.3g", r.b_simple)) : "-")
        << " |\n";
  }
  out << "\n## Fit\n\n";
  if (s.fit.ok) {
    out << "(S / S_min - 1)(E / E_min - 1) = 1 by least squares on log S over " << s.fit.points << " points ("
        << s.fit.uncertainty << "):\n\n"
        << "- S_min = " << fmt("%.4g", s.fit.s_min.value) << " steps (" << fmt("%.4g", s.fit.s_min.low) << "-"
        << fmt("%.4g", s.fit.s_min.high) << ")\n"
        << "- E_min = " << fmt("%.4g", s.fit.e_min.value) << " samples, " << fmt("%.3g", s.fit.e_min.value / n)
        << " epochs (" << fmt("%.4g", s.fit.e_min.low) << "-" << fmt("%.4g", s.fit.e_min.high) << " samples)\n"
        << "- B_crit = E_min / S_min = " << fmt("%.4g", s.fit.b_crit.value) << " (" << fmt("%.4g", s.fit.b_crit.low)
        << "-" << fmt("%.4g", s.fit.b_crit.high) << ")" << (s.fit.b_crit_resolved ? "" : ", not resolved by the ladder")
        << "\n- B_simple measured at the final weights of the runs that reached the target (their median, "
        << "weighted by steps): "
        << fmt("%.4g", sweep_b_simple(s.records)) << "\n";
  }
  for (const std::string& note : s.fit.notes) out << "- " << note << "\n";
  out << "\n## Verdict\n\n" << sweep_verdict(s) << "\n\n![steps, epochs and the Pareto front](" << picture << ")\n";
  return out.str();
}

std::string sweep_gnuplot_script(const SweepSummary& s, const std::string& out_png) {
  std::ostringstream out;
  const double n = static_cast<double>(s.train_samples);
  out << "set terminal pngcairo size 1500,450 font 'sans,10'\nset termoption noenhanced\n"
      << "set output '" << out_png << "'\n"
      << "set multiplot layout 1,3 title 'dtrain sweep: steps and samples to " << s.target.describe() << "'\n"
      << "set grid\nset logscale xy\nset key top right\n";
  // The points that reached the target: batch, steps, epochs, samples.
  out << "$points << EOD\n";
  for (const SweepRecord& r : s.records) {
    if (r.reached) {
      out << r.batch << " " << r.steps << " " << static_cast<double>(r.samples) / n << " " << r.samples << "\n";
    }
  }
  out << "EOD\n";
  const bool fit = s.fit.ok;
  if (fit) {
    out << "smin = " << s.fit.s_min.value << "\nemin = " << s.fit.e_min.value << "\nbcrit = " << s.fit.b_crit.value
        << "\nN = " << n << "\n"
        << "set arrow 1 from bcrit, graph 0 to bcrit, graph 1 nohead dt 2 lc rgb 'gray40'\n"
        << "set label 1 sprintf('B_crit %.0f', bcrit) at bcrit, graph 0.05 offset 1,0\n";
  }
  out << "set title 'steps to the target'\nset xlabel 'global batch'\nset ylabel 'steps'\n"
      << "plot $points using 1:2 with points pt 7 title 'runs'"
      << (fit ? ", smin * (1 + bcrit / x) with lines lw 1.5 title 'fit'" : "") << "\n"
      << "set title 'epochs to the target'\nset ylabel 'epochs'\n"
      << "plot $points using 1:3 with points pt 7 title 'runs'"
      << (fit ? ", emin * (1 + x / bcrit) / N with lines lw 1.5 title 'fit'" : "") << "\n"
      << "unset arrow 1\nunset label 1\n"
      << "set title 'Pareto front: steps against samples'\nset xlabel 'samples'\nset ylabel 'steps'\n";
  if (fit) {
    out << "set parametric\nset trange [log(" << s.fit.b_crit.value << ") - 6:log(" << s.fit.b_crit.value
        << ") + 6]\nset samples 400\n"
        << "plot $points using 4:2 with points pt 7 title 'runs', emin * (1 + exp(t) / bcrit), smin * (1 + bcrit / "
           "exp(t)) with lines lw 1.5 title 'fit (S/S_min - 1)(E/E_min - 1) = 1'\nunset parametric\n";
  } else {
    out << "plot $points using 4:2 with points pt 7 title 'runs'\n";
  }
  out << "unset multiplot\n";
  return out.str();
}

}  // namespace dtrain
