// `dtrain plot RUN_DIR... [--out FILE.png|FILE.svg]`: training loss, the held-out loss,
// test accuracy (classifiers) or bits per byte (text), learning rate, throughput and
// the gradient noise scale over the steps, one panel each, the runs overlaid, drawn by
// gnuplot (Debian's gnuplot-nox) from their metrics.jsonl. The evaluation panels are
// drawn only where some run has their metric, so a classifier's plot and a language
// model's each show their own.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/errors.h"
#include "launch/gnuplot.h"
#include "launch/job.h"

namespace dtrain::launch {

namespace {

namespace fs = std::filesystem;

std::optional<double> field(const std::string& line, const std::string& key) {
  const std::string tag = "\"" + key + "\":";
  const size_t at = line.find(tag);
  if (at == std::string::npos) return std::nullopt;
  return std::strtod(line.c_str() + at + tag.size(), nullptr);
}

// The panels: a metrics key and its title, which kind of line holds it, and whether
// the panel is left out when no run has the key (an evaluation metric of some models).
struct Panel {
  const char* key;
  const char* title;
  const char* kind;
  bool log_scale;
  bool optional;
};
const Panel kPanels[] = {{"loss", "training loss", "train", true, false},
                         {"eval_loss", "held-out loss", "eval", true, true},
                         {"eval_accuracy", "test accuracy", "eval", false, true},
                         {"eval_bits_per_byte", "validation bits per byte", "eval", false, true},
                         {"lr", "learning rate", "train", false, false},
                         {"samples_per_s", "throughput (samples/s)", "train", false, false},
                         {"noise_scale", "gradient noise scale B_simple", "train", true, false}};

bool any_points(const std::vector<size_t>& counts) {
  return std::any_of(counts.begin(), counts.end(), [](size_t n) { return n > 0; });
}

// The held-out split is a classifier's test set and a text's validation split.
std::string held_out_loss_title(const std::map<std::string, std::vector<size_t>>& points) {
  const bool test = any_points(points.at("eval_accuracy"));
  const bool validation = any_points(points.at("eval_bits_per_byte"));
  if (test && !validation) return "test loss";
  if (validation && !test) return "validation loss";
  return "test / validation loss";
}

// gnuplot reads strings in double quotes; keep names printable and quote-free.
std::string quoted(std::string s) {
  for (char& c : s) {
    if (c == '"' || c == '\\' || static_cast<unsigned char>(c) < 32) c = '_';
  }
  return "\"" + s + "\"";
}

}  // namespace

int run_plot(const CliCommand& cmd) {
  const std::string out = cmd.plot_out.empty() ? "plot.png" : cmd.plot_out;
  const bool svg = out.size() > 4 && out.compare(out.size() - 4, 4, ".svg") == 0;
  const fs::path data_dir = fs::temp_directory_path() / ("dtrain_plot_" + std::to_string(::getpid()));
  fs::create_directories(data_dir);

  // One data file per run and panel: "step value" lines.
  std::vector<std::string> names;
  std::map<std::string, std::vector<size_t>> points;  // per panel key, per run
  for (size_t r = 0; r < cmd.plot_runs.size(); ++r) {
    const std::string file = cmd.plot_runs[r] + "/metrics.jsonl";
    std::ifstream in(file);
    if (!in) {
      std::cerr << "dtrain: data error: cannot read " << file << "; give run directories that dtrain train wrote"
                << std::endl;
      fs::remove_all(data_dir);
      return kExitBadInput;
    }
    std::map<std::string, std::ofstream> series;
    for (const Panel& p : kPanels) points[p.key].push_back(0);
    for (const Panel& p : kPanels) series[p.key].open(data_dir / (std::to_string(r) + "_" + p.key + ".dat"));
    size_t lines = 0;
    for (std::string line; std::getline(in, line); ++lines) {
      const auto step = field(line, "step");
      if (!step) continue;
      for (const Panel& p : kPanels) {
        if (line.find(std::string("\"kind\":\"") + p.kind + "\"") == std::string::npos) continue;
        if (const auto v = field(line, p.key)) {
          series[p.key] << *step << " " << *v << "\n";
          ++points[p.key][r];
        }
      }
    }
    if (lines == 0) {
      std::cerr << "dtrain: data error: " << file << " is empty: the run has not logged a step yet" << std::endl;
      fs::remove_all(data_dir);
      return kExitBadInput;
    }
    names.push_back(fs::path(cmd.plot_runs[r]).lexically_normal().filename().string());
    if (names.back().empty()) names.back() = cmd.plot_runs[r];
  }

  std::vector<const Panel*> panels;
  for (const Panel& p : kPanels) {
    if (!p.optional || any_points(points[p.key])) panels.push_back(&p);
  }
  const size_t rows = (panels.size() + 2) / 3;
  std::ostringstream script;
  script << (svg ? "set terminal svg size 1500," : "set terminal pngcairo size 1500,") << 425 * rows
         << (svg ? " dynamic font 'sans,11'\n" : " font 'sans,10'\n")
         << "set termoption noenhanced\n"  // run names and titles are plain text, not markup
         << "set output " << quoted(out) << "\n"
         << "set multiplot layout " << rows << ",3 title 'dtrain: " << names.size() << " run(s)'\n"
         << "set grid\nset key top right\nset xlabel 'step'\n";
  for (const Panel* panel : panels) {
    const Panel& p = *panel;
    const std::string title = std::string(p.key) == "eval_loss" ? held_out_loss_title(points) : p.title;
    script << "set title '" << title << "'\n" << (p.log_scale ? "set logscale y\n" : "unset logscale y\n");
    const std::vector<size_t>& counts = points[p.key];
    if (!any_points(counts)) {
      // Nothing to draw (one rank without accumulation has no noise scale): say so.
      script << "unset logscale y\nset label 1 'not measured in these runs' at graph 0.5, 0.5 center\n"
             << "plot [0:1] [0:1] NaN notitle\nunset label 1\n";
      continue;
    }
    script << "plot ";
    bool first = true;
    for (size_t r = 0; r < names.size(); ++r) {
      if (counts[r] == 0) continue;
      const fs::path dat = data_dir / (std::to_string(r) + "_" + p.key + ".dat");
      // Each run keeps its colour in every panel, also where another run has no line.
      script << (first ? "" : ", ") << quoted(dat.string()) << " using 1:2 with lines lt " << r + 1
             << " lw 1.5 title " << quoted(names[r]);
      first = false;
    }
    script << "\n";
  }
  script << "unset multiplot\n";

  const bool drawn = run_gnuplot(script.str());
  fs::remove_all(data_dir);
  if (!drawn) return kExitRuntime;
  std::cout << "dtrain: wrote " << out << " (" << names.size() << " run(s))" << std::endl;
  return kExitOk;
}

}  // namespace dtrain::launch
