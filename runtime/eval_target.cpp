#include "runtime/eval_target.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "kernels/errors.h"

namespace dtrain {

std::string EvalTarget::describe() const {
  std::ostringstream out;
  out << key << (higher_is_better ? " >= " : " <= ") << value;
  return out.str();
}

std::vector<std::string> eval_metric_keys(const std::vector<Metric>& model_metrics) {
  std::vector<std::string> keys = {"eval_loss"};
  for (const Metric& m : model_metrics) keys.push_back("eval_" + m.name);
  return keys;
}

EvalTarget parse_eval_target(const std::string& text, const std::vector<std::string>& known_keys) {
  std::string known;
  for (const std::string& k : known_keys) known += (known.empty() ? "" : ", ") + k;
  const size_t eq = text.find('=');
  if (eq == std::string::npos) {
    throw UsageError("--target " + text + ": expected KEY=VALUE, e.g. --target " +
                     (known_keys.empty() ? std::string("eval_loss") : known_keys.back()) + "=0.9 (keys: " + known +
                     ")");
  }
  EvalTarget target;
  target.key = text.substr(0, eq);
  bool found = false;
  for (const std::string& k : known_keys) found = found || k == target.key;
  if (!found) {
    throw UsageError("--target " + text + ": this model's evaluation does not report " + target.key +
                     "; it reports " + known);
  }
  const std::string number = text.substr(eq + 1);
  char* end = nullptr;
  errno = 0;
  target.value = std::strtod(number.c_str(), &end);
  if (number.empty() || end != number.c_str() + number.size() || errno != 0 || !std::isfinite(target.value)) {
    throw UsageError("--target " + text + ": '" + number + "' is not a number");
  }
  target.higher_is_better = target.key == "eval_accuracy";
  return target;
}

bool target_evaluation_due(int64_t step, double resolution) {
  if (step <= 1) return true;
  if (static_cast<double>(step) <= 1.0 / resolution) return true;
  const double base = std::log1p(resolution);
  return std::floor(std::log(static_cast<double>(step)) / base) !=
         std::floor(std::log(static_cast<double>(step - 1)) / base);
}

double eval_metric_value(const std::string& key, double eval_loss, const std::vector<Metric>& metrics) {
  if (key == "eval_loss") return eval_loss;
  for (const Metric& m : metrics) {
    if ("eval_" + m.name == key) return m.value;
  }
  throw Error("the evaluation reports no " + key);
}

bool target_reached(const EvalTarget& target, double eval_loss, const std::vector<Metric>& metrics) {
  const double v = eval_metric_value(target.key, eval_loss, metrics);
  return target.higher_is_better ? v >= target.value : v <= target.value;
}

}  // namespace dtrain
