#include "runtime/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>

#include "kernels/errors.h"
#include "runtime/byte_size.h"

namespace dtrain {
namespace {

// Edit distance, to suggest the key the user probably meant.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1] ? 1 : 0)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

// Reads one YAML tree into a Config, recording where each key came from.
class ConfigReader {
 public:
  ConfigReader(Config& config, std::map<std::string, std::string> set_origins)
      : config_(config), set_origins_(std::move(set_origins)) {}

  // Location of a node for key `key`: the --set argument that wrote it, else FILE:LINE.
  std::string where(const std::string& key, const YAML::Node& node) const {
    for (const auto& [path, arg] : set_origins_) {
      if (key == path || key.rfind(path + ".", 0) == 0) return "--set " + arg;
    }
    std::ostringstream s;
    s << config_.source;
    if (node.Mark().line >= 0) s << ":" << node.Mark().line + 1;
    return s.str();
  }

  [[noreturn]] void fail(const std::string& key, const YAML::Node& node, const std::string& what) const {
    throw ConfigError(where(key, node) + ": " + what);
  }

  // Checks that `section` is a map of known keys; names the unknown one and suggests.
  void check_keys(const YAML::Node& section, const std::string& name,
                  const std::vector<std::string>& allowed) const {
    if (!section.IsMap()) fail(name, section, "'" + name + "' must be a mapping of keys to values");
    for (const auto& kv : section) {
      // A key that is itself a list or a mapping (found by tests/fuzz).
      if (!kv.first.IsScalar()) fail(name, kv.first, "'" + (name.empty() ? std::string("the config") : name) +
                                                         "' has a key that is not a plain name");
      const std::string key = kv.first.as<std::string>();
      if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
      std::string best;
      size_t best_d = 3;
      for (const auto& a : allowed) {
        const size_t d = edit_distance(key, a);
        if (d < best_d) best_d = d, best = a;
      }
      const std::string full = name.empty() ? key : name + "." + key;
      std::string msg = "unknown key '" + full + "'";
      if (!best.empty()) msg += "; did you mean '" + (name.empty() ? best : name + "." + best) + "'?";
      msg += " Known keys" + (name.empty() ? std::string() : " in '" + name + "'") + ": " +
             join(allowed, ", ");
      fail(full, kv.first, msg);
    }
  }

  template <class T>
  void read(const YAML::Node& section, const std::string& section_name, const std::string& key,
            T& out, const char* type_name) {
    const YAML::Node node = section[key];
    if (!node) return;
    const std::string full = section_name + "." + key;
    config_.origins[full] = where(full, node);
    try {
      if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
        if (!node.IsSequence()) throw YAML::Exception(node.Mark(), "");
        out = node.as<std::vector<int64_t>>();
      } else {
        if (!node.IsScalar()) throw YAML::Exception(node.Mark(), "");
        out = node.as<T>();
      }
    } catch (const YAML::Exception&) {
      std::string got = node.IsScalar() ? "'" + node.Scalar() + "'"
                        : node.IsSequence() ? std::string("a list")
                        : node.IsMap() ? std::string("a mapping") : std::string("nothing");
      fail(full, node, "key '" + full + "' expects " + type_name + ", got " + got);
    }
  }

  void read_int(const YAML::Node& s, const std::string& sn, const std::string& key, int64_t& out,
                int64_t lo, int64_t hi = std::numeric_limits<int64_t>::max()) {
    read(s, sn, key, out, "an integer");
    if (s[key] && (out < lo || out > hi)) {
      std::ostringstream r;
      r << "key '" << sn << "." << key << "' = " << out << " is out of range: must be ";
      if (hi == std::numeric_limits<int64_t>::max()) r << "at least " << lo;
      else r << "between " << lo << " and " << hi;
      fail(sn + "." + key, s[key], r.str());
    }
  }

  // An integer >= 1, or `auto` (stored as kAuto).
  void read_int_or_auto(const YAML::Node& s, const std::string& sn, const std::string& key, int64_t& out) {
    const YAML::Node node = s[key];
    if (node && node.IsScalar() && node.Scalar() == "auto") {
      config_.origins[sn + "." + key] = where(sn + "." + key, node);
      out = kAuto;
      return;
    }
    read(s, sn, key, out, "an integer or auto");
    if (node && out < 1) {
      fail(sn + "." + key, node, "key '" + sn + "." + key + "' = " + std::to_string(out) +
                                     " is out of range: must be at least 1, or auto");
    }
  }

  // A byte size: an integer, or a number with a unit (B, KB, MB, GB, KiB, MiB, GiB).
  int64_t byte_size(const std::string& key, const YAML::Node& node) {
    if (!node.IsScalar()) fail(key, node, "key '" + key + "' expects a size like 512MiB, got a " +
                                              (node.IsSequence() ? "list" : "mapping"));
    try {
      return parse_byte_size(node.Scalar());
    } catch (const std::invalid_argument& e) {
      fail(key, node, "key '" + key + "' = '" + node.Scalar() + "': " + e.what());
    }
  }

  void read_real(const YAML::Node& s, const std::string& sn, const std::string& key, double& out,
                 double lo, double hi, bool lo_open = false, bool hi_open = false) {
    read(s, sn, key, out, "a number");
    if (!s[key]) return;
    const bool bad = !(out == out) || (lo_open ? out <= lo : out < lo) || (hi_open ? out >= hi : out > hi);
    if (bad) {
      std::ostringstream r;
      r << "key '" << sn << "." << key << "' = " << out << " is out of range: must be in "
        << (lo_open ? "(" : "[") << lo << ", " << hi << (hi_open ? ")" : "]");
      fail(sn + "." + key, s[key], r.str());
    }
  }

  void read_choice(const YAML::Node& s, const std::string& sn, const std::string& key,
                   std::string& out, const std::vector<std::string>& choices) {
    read(s, sn, key, out, "a string");
    if (s[key] && std::find(choices.begin(), choices.end(), out) == choices.end()) {
      fail(sn + "." + key, s[key],
           "key '" + sn + "." + key + "' = '" + out + "' is not one of: " + join(choices, ", "));
    }
  }

  void read_positive_list(const YAML::Node& s, const std::string& sn, const std::string& key,
                          std::vector<int64_t>& out, bool allow_empty) {
    read(s, sn, key, out, "a list of integers");
    if (!s[key]) return;
    if (out.empty() && !allow_empty) fail(sn + "." + key, s[key], "key '" + sn + "." + key + "' must not be empty");
    for (int64_t v : out) {
      if (v < 1) fail(sn + "." + key, s[key], "key '" + sn + "." + key + "' has " + std::to_string(v) + "; every entry must be at least 1");
    }
  }

  // Runs `body` on the named top-level section if present, after checking its keys.
  void section(const YAML::Node& root, const std::string& name, const std::vector<std::string>& keys,
               const std::function<void(const YAML::Node&)>& body) {
    const YAML::Node s = root[name];
    if (!s) return;
    if (s.IsNull()) return;  // an empty section: all defaults
    check_keys(s, name, keys);
    body(s);
  }

  void read_all(const YAML::Node& root) {
    if (root.IsNull()) return;  // an empty file: all defaults
    check_keys(root, "", {"model", "data", "train", "optimizer", "schedule", "eval", "log", "memory", "checkpoint",
                           "comm", "device", "precision"});
    Config& c = config_;
    section(root, "model", {"name", "hidden", "channels", "kernel_size", "cnn_hidden", "n_layer", "n_head",
                            "n_embd", "seq_len", "vocab", "dropout"},
            [&](const YAML::Node& s) {
      read_choice(s, "model", "name", c.model.name, {"mlp", "cnn", "gpt"});
      read_positive_list(s, "model", "hidden", c.model.hidden, true);
      read_positive_list(s, "model", "channels", c.model.channels, false);
      read_int(s, "model", "kernel_size", c.model.kernel_size, 1, 15);
      if (s["kernel_size"] && c.model.kernel_size % 2 == 0) {
        fail("model.kernel_size", s["kernel_size"], "key 'model.kernel_size' must be odd (same padding keeps the image size)");
      }
      read_positive_list(s, "model", "cnn_hidden", c.model.cnn_hidden, true);
      // gpt (models/gpt.h); the builder checks them against the data.
      read_int(s, "model", "n_layer", c.model.n_layer, 1);
      read_int(s, "model", "n_head", c.model.n_head, 1);
      read_int(s, "model", "n_embd", c.model.n_embd, 1);
      read_int(s, "model", "seq_len", c.model.seq_len, 1);
      read_int(s, "model", "vocab", c.model.vocab, 0);
      read_real(s, "model", "dropout", c.model.dropout, 0.0, 1.0, false, true);
      if ((s["n_embd"] || s["n_head"]) && c.model.n_embd % c.model.n_head != 0) {
        const char* key = s["n_embd"] ? "n_embd" : "n_head";
        fail(std::string("model.") + key, s[key],
             "key 'model.n_embd' = " + std::to_string(c.model.n_embd) + " is not a multiple of 'model.n_head' = " +
                 std::to_string(c.model.n_head) + ": each attention head takes n_embd / n_head channels");
      }
    });
    section(root, "data", {"name", "path", "train_samples", "test_samples", "val_fraction", "train_files", "val_files"},
            [&](const YAML::Node& s) {
      read_choice(s, "data", "name", c.data.name, {"fashion_mnist", "synthetic", "text", "tokens"});
      read(s, "data", "path", c.data.path, "a path");
      read_int(s, "data", "train_samples", c.data.train_samples, 1, int64_t{1} << 31);
      read_int(s, "data", "test_samples", c.data.test_samples, 1, int64_t{1} << 31);
      read_real(s, "data", "val_fraction", c.data.val_fraction, 0.0, 1.0, true, true);
      read(s, "data", "train_files", c.data.train_files, "a path or glob");
      read(s, "data", "val_files", c.data.val_files, "a path or glob");
    });
    if (c.data.name == "tokens") {
      const std::pair<const char*, const std::string*> shards[] = {{"data.train_files", &c.data.train_files},
                                                                  {"data.val_files", &c.data.val_files}};
      for (const auto& [key, value] : shards) {
        if (value->empty()) {
          throw ConfigError(c.where("data.name") + ": data.name is 'tokens' but " + key +
                            " is not set; set it to llm.c token shards (a file, a folder or a glob like data/shard_*.bin)");
        }
      }
    }
    section(root, "train", {"global_batch", "micro_batch", "epochs", "max_steps", "seed", "on_nonfinite"},
            [&](const YAML::Node& s) {
      read_choice(s, "train", "on_nonfinite", c.train.on_nonfinite, {"stop", "skip"});
      read_int_or_auto(s, "train", "global_batch", c.train.global_batch);
      read_int_or_auto(s, "train", "micro_batch", c.train.micro_batch);
      read_int(s, "train", "epochs", c.train.epochs, 1);
      c.epochs_given = static_cast<bool>(s["epochs"]);
      read_int(s, "train", "max_steps", c.train.max_steps, 0);
      int64_t seed = static_cast<int64_t>(c.train.seed);
      read_int(s, "train", "seed", seed, 0);
      c.train.seed = static_cast<uint64_t>(seed);
    });
    section(root, "optimizer", {"name", "lr", "momentum", "nesterov", "weight_decay", "beta1", "beta2", "eps",
                                "lr_scaling", "base_batch", "decay_filter", "clip_grad_norm"},
            [&](const YAML::Node& s) {
      read_choice(s, "optimizer", "name", c.optimizer.name, {"sgd", "adamw"});
      read_real(s, "optimizer", "lr", c.optimizer.lr, 0.0, 1e3, true, false);
      read_real(s, "optimizer", "momentum", c.optimizer.momentum, 0.0, 1.0, false, true);
      read(s, "optimizer", "nesterov", c.optimizer.nesterov, "true or false");
      read_real(s, "optimizer", "weight_decay", c.optimizer.weight_decay, 0.0, 1e3);
      read_real(s, "optimizer", "beta1", c.optimizer.beta1, 0.0, 1.0, false, true);
      read_real(s, "optimizer", "beta2", c.optimizer.beta2, 0.0, 1.0, false, true);
      read_real(s, "optimizer", "eps", c.optimizer.eps, 0.0, 1.0, true, false);
      read_choice(s, "optimizer", "lr_scaling", c.optimizer.lr_scaling, {"none", "linear", "sqrt"});
      read_int(s, "optimizer", "base_batch", c.optimizer.base_batch, 1);
      read_choice(s, "optimizer", "decay_filter", c.optimizer.decay_filter, {"matrices", "all"});
      read_real(s, "optimizer", "clip_grad_norm", c.optimizer.clip_grad_norm, 0.0, 1e9);
    });
    section(root, "schedule", {"warmup_steps", "warmup_epochs", "decay", "min_lr", "step_size", "gamma"},
            [&](const YAML::Node& s) {
      read_int(s, "schedule", "warmup_steps", c.schedule.warmup_steps, 0);
      read_real(s, "schedule", "warmup_epochs", c.schedule.warmup_epochs, 0.0, 1e6);
      read_choice(s, "schedule", "decay", c.schedule.decay, {"none", "cosine", "step"});
      read_real(s, "schedule", "min_lr", c.schedule.min_lr, 0.0, 1e3);
      read_int(s, "schedule", "step_size", c.schedule.step_size, 1);
      read_real(s, "schedule", "gamma", c.schedule.gamma, 0.0, 1.0, true, false);
    });
    section(root, "eval", {"every_steps", "batch"}, [&](const YAML::Node& s) {
      read_int(s, "eval", "every_steps", c.eval.every_steps, 0);
      read_int(s, "eval", "batch", c.eval.batch, 1);
    });
    section(root, "log", {"every_steps", "noise_scale", "noise_ema", "trace"}, [&](const YAML::Node& s) {
      read(s, "log", "trace", c.log.trace, "true or false");
      read_int(s, "log", "every_steps", c.log.every_steps, 1);
      read(s, "log", "noise_scale", c.log.noise_scale, "true or false");
      read_real(s, "log", "noise_ema", c.log.noise_ema, 0.0, 1.0, false, true);
    });
    section(root, "checkpoint", {"dir", "every_steps", "keep", "on_error"}, [&](const YAML::Node& s) {
      read(s, "checkpoint", "dir", c.checkpoint.dir, "a path");
      read_int(s, "checkpoint", "every_steps", c.checkpoint.every_steps, 0);
      read_int(s, "checkpoint", "keep", c.checkpoint.keep, 1);
      read_choice(s, "checkpoint", "on_error", c.checkpoint.on_error, {"stop", "continue"});
    });
    section(root, "memory", {"fraction", "limit", "limit_per_rank"}, [&](const YAML::Node& s) {
      read_real(s, "memory", "fraction", c.memory.fraction, 0.0, 1.0, true, false);
      if (s["limit"]) {
        c.origins["memory.limit"] = where("memory.limit", s["limit"]);
        c.memory.limit = byte_size("memory.limit", s["limit"]);
      }
      if (const YAML::Node list = s["limit_per_rank"]) {
        c.origins["memory.limit_per_rank"] = where("memory.limit_per_rank", list);
        if (!list.IsSequence() || list.size() == 0) {
          fail("memory.limit_per_rank", list, "key 'memory.limit_per_rank' expects a list of sizes, one per rank, "
                                              "like [64MiB, 32MiB]");
        }
        c.memory.limit_per_rank.clear();
        for (const auto& item : list) {
          const int64_t bytes = byte_size("memory.limit_per_rank", item);
          if (bytes == 0) fail("memory.limit_per_rank", item, "key 'memory.limit_per_rank' has a size of 0; every rank needs memory");
          c.memory.limit_per_rank.push_back(bytes);
        }
      }
    });
    if (c.schedule.warmup_steps > 0 && c.schedule.warmup_epochs > 0) {
      throw ConfigError(c.where("schedule.warmup_epochs") + ": schedule.warmup_steps (" + c.where("schedule.warmup_steps") +
                        ") and schedule.warmup_epochs are both set; keep one");
    }
    if (c.optimizer.lr_scaling != "none" && c.optimizer.base_batch == 0) {
      throw ConfigError(c.where("optimizer.lr_scaling") + ": optimizer.lr_scaling is '" + c.optimizer.lr_scaling +
                        "' but optimizer.base_batch is not set; set it to the global batch that optimizer.lr was tuned for");
    }
    section(root, "comm", {"backend", "bucket_mb", "timeout_s"}, [&](const YAML::Node& s) {
      read_real(s, "comm", "timeout_s", c.comm.timeout_s, 0.0, 1e6);
      read_choice(s, "comm", "backend", c.comm.backend, {"auto", "mpi", "nccl", "self"});
      read_real(s, "comm", "bucket_mb", c.comm.bucket_mb, 0.0, 1e4, true, false);
    });
    section(root, "device", {"kind", "share", "threads"}, [&](const YAML::Node& s) {
      read_choice(s, "device", "kind", c.device.kind, {"auto", "cpu", "cpu-async", "cuda"});
      read(s, "device", "share", c.device.share, "true or false");
      read_int(s, "device", "threads", c.device.threads, 0, 1024);
    });
    section(root, "precision", {"tf32"}, [&](const YAML::Node& s) {
      read(s, "precision", "tf32", c.precision.tf32, "true or false");
    });
  }

 private:
  Config& config_;
  std::map<std::string, std::string> set_origins_;
};

// Writes `value` at the dotted `path` of `node`, making mappings on the way.
void set_path(YAML::Node node, const std::vector<std::string>& path, size_t i, const YAML::Node& value,
              const std::string& arg) {
  if (!node.IsMap() && !node.IsNull()) {
    throw ConfigError("--set " + arg + ": '" + path[i - 1] + "' is not a section, so it has no key '" + path[i] + "'");
  }
  if (i + 1 == path.size()) {
    node[path[i]] = value;
    return;
  }
  if (!node[path[i]] || node[path[i]].IsNull()) node[path[i]] = YAML::Node(YAML::NodeType::Map);
  set_path(node[path[i]], path, i + 1, value, arg);
}

YAML::Node load_file(const std::string& file) {
  std::ifstream in(file);
  if (!in) {
    throw ConfigError("cannot open config file '" + file + "': check the path (configs/ holds examples)");
  }
  std::stringstream text;
  text << in.rdbuf();
  try {
    return YAML::Load(text.str());
  } catch (const YAML::ParserException& e) {
    throw ConfigError(file + ":" + std::to_string(e.mark.line + 1) + ": not valid YAML: " + e.msg);
  }
}

}  // namespace

int64_t Config::memory_limit_of(int rank, int world_size) const {
  if (memory.limit_per_rank.empty()) return memory.limit;
  if (static_cast<int>(memory.limit_per_rank.size()) != world_size) {
    throw ConfigError(where("memory.limit_per_rank") + ": memory.limit_per_rank has " +
                      std::to_string(memory.limit_per_rank.size()) + " entries but the job has " +
                      std::to_string(world_size) + " rank(s); give one size per rank");
  }
  return memory.limit_per_rank[static_cast<size_t>(rank)];
}

std::string Config::where(const std::string& key) const {
  auto it = origins.find(key);
  if (it != origins.end()) return it->second;
  return source + " (default of " + key + ")";
}

namespace {

// The config in `root`, read from `file` (a path, or what the text came from), with
// `overrides` applied.
Config read_config(YAML::Node root, const std::string& file, const std::vector<std::string>& overrides) {
  if (!root.IsMap() && !root.IsNull()) {
    throw ConfigError(file + ":1: the config must be a mapping of sections (model, data, train, ...)");
  }
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);

  std::map<std::string, std::string> set_origins;
  for (const std::string& arg : overrides) {
    const size_t eq = arg.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw ConfigError("--set " + arg + ": expected KEY=VALUE, for example --set train.epochs=3");
    }
    const std::string key = arg.substr(0, eq);
    std::vector<std::string> path;
    std::stringstream ks(key);
    for (std::string part; std::getline(ks, part, '.');) {
      if (part.empty()) throw ConfigError("--set " + arg + ": '" + key + "' is not a dotted key like train.epochs");
      path.push_back(part);
    }
    YAML::Node value;
    try {
      value = YAML::Load(arg.substr(eq + 1));
    } catch (const YAML::ParserException& e) {
      throw ConfigError("--set " + arg + ": the value is not valid YAML: " + e.msg);
    }
    set_path(root, path, 0, value, arg);
    set_origins[key] = arg;
  }

  Config config;
  config.source = file;
  ConfigReader(config, set_origins).read_all(root);
  return config;
}

}  // namespace

Config load_config(const std::string& file, const std::vector<std::string>& overrides) {
  return read_config(load_file(file), file, overrides);
}

Config load_config_from_string(const std::string& yaml, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(source + ":" + std::to_string(e.mark.line + 1) + ": not valid YAML: " + e.msg);
  }
  return read_config(root, source, {});
}

std::string config_to_yaml(const Config& c, const std::vector<std::string>& trailer) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << c.model.name;
  out << YAML::Key << "hidden" << YAML::Value << YAML::Flow << c.model.hidden;
  out << YAML::Key << "channels" << YAML::Value << YAML::Flow << c.model.channels;
  out << YAML::Key << "kernel_size" << YAML::Value << c.model.kernel_size;
  out << YAML::Key << "cnn_hidden" << YAML::Value << YAML::Flow << c.model.cnn_hidden;
  out << YAML::Key << "n_layer" << YAML::Value << c.model.n_layer;
  out << YAML::Key << "n_head" << YAML::Value << c.model.n_head;
  out << YAML::Key << "n_embd" << YAML::Value << c.model.n_embd;
  out << YAML::Key << "seq_len" << YAML::Value << c.model.seq_len;
  out << YAML::Key << "vocab" << YAML::Value << c.model.vocab;
  out << YAML::Key << "dropout" << YAML::Value << c.model.dropout;
  out << YAML::EndMap;
  out << YAML::Key << "data" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << c.data.name;
  out << YAML::Key << "path" << YAML::Value << c.data.path;
  out << YAML::Key << "train_samples" << YAML::Value << c.data.train_samples;
  out << YAML::Key << "test_samples" << YAML::Value << c.data.test_samples;
  out << YAML::Key << "val_fraction" << YAML::Value << c.data.val_fraction;
  out << YAML::Key << "train_files" << YAML::Value << c.data.train_files;
  out << YAML::Key << "val_files" << YAML::Value << c.data.val_files;
  out << YAML::EndMap;
  out << YAML::Key << "train" << YAML::Value << YAML::BeginMap;
  const auto batch_value = [](int64_t v) { return v == kAuto ? std::string("auto") : std::to_string(v); };
  out << YAML::Key << "global_batch" << YAML::Value << batch_value(c.train.global_batch);
  out << YAML::Key << "micro_batch" << YAML::Value << batch_value(c.train.micro_batch);
  if (c.epochs_given || c.train.max_steps == 0) out << YAML::Key << "epochs" << YAML::Value << c.train.epochs;
  out << YAML::Key << "max_steps" << YAML::Value << c.train.max_steps;
  out << YAML::Key << "seed" << YAML::Value << c.train.seed;
  out << YAML::Key << "on_nonfinite" << YAML::Value << c.train.on_nonfinite;
  out << YAML::EndMap;
  out << YAML::Key << "optimizer" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << c.optimizer.name;
  out << YAML::Key << "lr" << YAML::Value << c.optimizer.lr;
  out << YAML::Key << "momentum" << YAML::Value << c.optimizer.momentum;
  out << YAML::Key << "nesterov" << YAML::Value << c.optimizer.nesterov;
  out << YAML::Key << "weight_decay" << YAML::Value << c.optimizer.weight_decay;
  out << YAML::Key << "beta1" << YAML::Value << c.optimizer.beta1;
  out << YAML::Key << "beta2" << YAML::Value << c.optimizer.beta2;
  out << YAML::Key << "eps" << YAML::Value << c.optimizer.eps;
  out << YAML::Key << "lr_scaling" << YAML::Value << c.optimizer.lr_scaling;
  if (c.optimizer.base_batch > 0) out << YAML::Key << "base_batch" << YAML::Value << c.optimizer.base_batch;
  out << YAML::Key << "decay_filter" << YAML::Value << c.optimizer.decay_filter;
  out << YAML::Key << "clip_grad_norm" << YAML::Value << c.optimizer.clip_grad_norm;
  out << YAML::EndMap;
  out << YAML::Key << "schedule" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "warmup_steps" << YAML::Value << c.schedule.warmup_steps;
  out << YAML::Key << "warmup_epochs" << YAML::Value << c.schedule.warmup_epochs;
  out << YAML::Key << "decay" << YAML::Value << c.schedule.decay;
  out << YAML::Key << "min_lr" << YAML::Value << c.schedule.min_lr;
  out << YAML::Key << "step_size" << YAML::Value << c.schedule.step_size;
  out << YAML::Key << "gamma" << YAML::Value << c.schedule.gamma;
  out << YAML::EndMap;
  out << YAML::Key << "eval" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "every_steps" << YAML::Value << c.eval.every_steps;
  out << YAML::Key << "batch" << YAML::Value << c.eval.batch;
  out << YAML::EndMap;
  out << YAML::Key << "log" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "every_steps" << YAML::Value << c.log.every_steps;
  out << YAML::Key << "noise_scale" << YAML::Value << c.log.noise_scale;
  out << YAML::Key << "noise_ema" << YAML::Value << c.log.noise_ema;
  out << YAML::Key << "trace" << YAML::Value << c.log.trace;
  out << YAML::EndMap;
  out << YAML::Key << "checkpoint" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "dir" << YAML::Value << c.checkpoint.dir;
  out << YAML::Key << "every_steps" << YAML::Value << c.checkpoint.every_steps;
  out << YAML::Key << "keep" << YAML::Value << c.checkpoint.keep;
  out << YAML::Key << "on_error" << YAML::Value << c.checkpoint.on_error;
  out << YAML::EndMap;
  out << YAML::Key << "memory" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "fraction" << YAML::Value << c.memory.fraction;
  out << YAML::Key << "limit" << YAML::Value << c.memory.limit;
  if (!c.memory.limit_per_rank.empty()) {
    out << YAML::Key << "limit_per_rank" << YAML::Value << YAML::Flow << c.memory.limit_per_rank;
  }
  out << YAML::EndMap;
  out << YAML::Key << "comm" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "backend" << YAML::Value << c.comm.backend;
  out << YAML::Key << "bucket_mb" << YAML::Value << c.comm.bucket_mb;
  out << YAML::Key << "timeout_s" << YAML::Value << c.comm.timeout_s;
  out << YAML::EndMap;
  out << YAML::Key << "device" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "kind" << YAML::Value << c.device.kind;
  out << YAML::Key << "share" << YAML::Value << c.device.share;
  out << YAML::Key << "threads" << YAML::Value << c.device.threads;
  out << YAML::EndMap;
  out << YAML::Key << "precision" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "tf32" << YAML::Value << c.precision.tf32;
  out << YAML::EndMap;
  out << YAML::EndMap;
  std::string text = std::string("# effective config of this run (defaults, file and --set applied)\n") + out.c_str() + "\n";
  for (const auto& line : trailer) text += "# " + line + "\n";
  return text;
}

}  // namespace dtrain
