#include "runtime/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <variant>

#include "kernels/errors.h"
#include "runtime/byte_size.h"
#include "runtime/config_schema.h"

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

// The checks that involve more than one key, made once every key is read, so a config
// with a bad key and a bad combination reports the bad key first. Each names where the
// key it blames was written.
void check_across_keys(const Config& c) {
  if (c.model.n_embd % c.model.n_head != 0) {
    const char* key = c.origins.count("model.n_embd") ? "model.n_embd" : "model.n_head";
    throw ConfigError(c.where(key) + ": key 'model.n_embd' = " + std::to_string(c.model.n_embd) +
                      " is not a multiple of 'model.n_head' = " + std::to_string(c.model.n_head) +
                      ": each attention head takes n_embd / n_head channels");
  }
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
  // data.path's default is Fashion-MNIST's folder; read as text it would train a
  // language model on image files without a word.
  if (c.data.name == "text" && c.origins.count("data.path") == 0) {
    throw ConfigError(c.where("data.name") + ": data.name is 'text' but data.path is not set; set it to a text " +
                      "file, a folder or a glob (for example /usr/share/games/fortunes/*[!t8], from the fortunes package)");
  }
  if (c.schedule.warmup_steps > 0 && c.schedule.warmup_epochs > 0) {
    throw ConfigError(c.where("schedule.warmup_epochs") + ": schedule.warmup_steps (" + c.where("schedule.warmup_steps") +
                      ") and schedule.warmup_epochs are both set; keep one");
  }
  if (c.precision.compute == "bf16" && c.model.name != "gpt") {
    throw ConfigError(c.where("precision.compute") + ": precision.compute is 'bf16' but the " + c.model.name +
                      " computes in fp32 only (bf16 is the gpt's); set precision.compute: fp32");
  }
  if (c.memory.recompute == "blocks" && c.model.name != "gpt") {
    throw ConfigError(c.where("memory.recompute") + ": memory.recompute is '" + c.memory.recompute + "' but the " +
                      c.model.name + " has no blocks to recompute (recompute is the gpt's); set memory.recompute: none");
  }
  if (c.optimizer.lr_scaling != "none" && c.optimizer.base_batch == 0) {
    throw ConfigError(c.where("optimizer.lr_scaling") + ": optimizer.lr_scaling is '" + c.optimizer.lr_scaling +
                      "' but optimizer.base_batch is not set; set it to the global batch that optimizer.lr was tuned for");
  }
}

// Reads one YAML tree into a Config by config_schema(), recording where each key came from.
class ConfigReader {
 public:
  ConfigReader(Config& config, std::map<std::string, std::string> set_origins)
      : config_(config), set_origins_(std::move(set_origins)) {}

  // Location of a node for key `key`: the --set argument that wrote it, else FILE:LINE.
  // A section the file does not have (no line) was made by the --set that wrote a key
  // in it (--set foo.bar=1 makes 'foo').
  std::string where(const std::string& key, const YAML::Node& node) const {
    for (const auto& [path, arg] : set_origins_) {
      if (key == path || key.rfind(path + ".", 0) == 0) return "--set " + arg;
    }
    if (node.Mark().line < 0) {
      for (const auto& [path, arg] : set_origins_) {
        if (path.rfind(key + ".", 0) == 0) return "--set " + arg;
      }
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
      msg += best.empty() ? "." : "; did you mean '" + (name.empty() ? best : name + "." + best) + "'?";
      msg += " Known keys" + (name.empty() ? std::string() : " in '" + name + "'") + ": " +
             join(allowed, ", ");
      fail(full, kv.first, msg);
    }
  }

  // Reads the key `key` of `section` (the section named `section_name`) if it is there.
  void read_key(const YAML::Node& section, const std::string& section_name, const ConfigKey& key) {
    const YAML::Node node = section[key.name];
    if (!node) return;
    const std::string full = section_name + "." + key.name;
    config_.origins[full] = where(full, node);
    std::visit([&](const auto& kind) { read_value(node, full, kind); }, key.kind);
  }

  // Every section of config_schema() that `root` has, then the checks across keys.
  void read_all(const YAML::Node& root) {
    if (root.IsNull()) return;  // an empty file: all defaults
    std::vector<std::string> sections;
    for (const ConfigSection& section : config_schema()) sections.push_back(section.name);
    check_keys(root, "", sections);
    for (const ConfigSection& section : config_schema()) {
      const YAML::Node s = root[section.name];
      if (!s || s.IsNull()) continue;  // absent or empty: all defaults
      check_keys(s, section.name, section.key_names());
      for (const ConfigKey& key : section.keys) read_key(s, section.name, key);
    }
    config_.epochs_given = config_.origins.count("train.epochs") > 0;
    check_across_keys(config_);
  }

 private:
  // `node` as a T, or a ConfigError saying the key expects `type_name`.
  template <class T>
  T parse(const YAML::Node& node, const std::string& full, const char* type_name) const {
    try {
      if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
        if (!node.IsSequence()) throw YAML::Exception(node.Mark(), "");
      } else {
        if (!node.IsScalar()) throw YAML::Exception(node.Mark(), "");
      }
      return node.as<T>();
    } catch (const YAML::Exception&) {
      std::string got = node.IsScalar() ? "'" + node.Scalar() + "'"
                        : node.IsSequence() ? std::string("a list")
                        : node.IsMap() ? std::string("a mapping") : std::string("nothing");
      fail(full, node, "key '" + full + "' expects " + type_name + ", got " + got);
    }
  }

  int64_t integer_in(const YAML::Node& node, const std::string& full, int64_t lo, int64_t hi) const {
    const int64_t v = parse<int64_t>(node, full, "an integer");
    if (v < lo || v > hi) {
      std::ostringstream r;
      r << "key '" << full << "' = " << v << " is out of range: must be ";
      if (hi == config_kind::kNoUpperBound) r << "at least " << lo;
      else r << "between " << lo << " and " << hi;
      fail(full, node, r.str());
    }
    return v;
  }

  void read_value(const YAML::Node& node, const std::string& full, const config_kind::Integer& kind) {
    const int64_t v = integer_in(node, full, kind.lo, kind.hi);
    if (kind.rule && !kind.rule(v)) fail(full, node, "key '" + full + "' " + kind.rule_says);
    kind.field.of(config_) = v;
  }

  void read_value(const YAML::Node& node, const std::string& full, const config_kind::Unsigned& kind) {
    kind.field.of(config_) = static_cast<uint64_t>(integer_in(node, full, 0, config_kind::kNoUpperBound));
  }

  void read_value(const YAML::Node& node, const std::string& full, const config_kind::IntegerOrAuto& kind) {
    if (node.IsScalar() && node.Scalar() == "auto") {
      kind.field.of(config_) = kAuto;
      return;
    }
    const int64_t v = parse<int64_t>(node, full, "an integer or auto");
    if (v < 1) {
      fail(full, node, "key '" + full + "' = " + std::to_string(v) + " is out of range: must be at least 1, or auto");
    }
    kind.field.of(config_) = v;
  }

  void read_value(const YAML::Node& node, const std::string& full, const config_kind::Real& kind) {
    const double v = parse<double>(node, full, "a number");
    const bool bad = !(v == v) || (kind.lo_open ? v <= kind.lo : v < kind.lo) ||
                     (kind.hi_open ? v >= kind.hi : v > kind.hi);
    if (bad) {
      std::ostringstream r;
      r << "key '" << full << "' = " << v << " is out of range: must be in " << (kind.lo_open ? "(" : "[") << kind.lo
        << ", " << kind.hi << (kind.hi_open ? ")" : "]");
      fail(full, node, r.str());
    }
    kind.field.of(config_) = v;
  }

  void read_value(const YAML::Node& node, const std::string& full, const config_kind::Boolean& kind) {
    kind.field.of(config_) = parse<bool>(node, full, "true or false");
  }

  void read_value(const YAML::Node& node, const std::string& full, const config_kind::Text& kind) {
    kind.field.of(config_) = parse<std::string>(node, full, kind.what);
  }

  void read_value(const YAML::Node& node, const std::string& full, const config_kind::Choice& kind) {
    const std::string v = parse<std::string>(node, full, "a string");
    if (std::find(kind.choices.begin(), kind.choices.end(), v) == kind.choices.end()) {
      fail(full, node, "key '" + full + "' = '" + v + "' is not one of: " + join(kind.choices, ", "));
    }
    kind.field.of(config_) = v;
  }

  void read_value(const YAML::Node& node, const std::string& full, const config_kind::PositiveList& kind) {
    const auto list = parse<std::vector<int64_t>>(node, full, "a list of integers");
    if (list.empty() && !kind.allow_empty) fail(full, node, "key '" + full + "' must not be empty");
    for (int64_t v : list) {
      if (v < 1) fail(full, node, "key '" + full + "' has " + std::to_string(v) + "; every entry must be at least 1");
    }
    kind.field.of(config_) = list;
  }

  void read_value(const YAML::Node& node, const std::string& full, const config_kind::ByteSize& kind) {
    kind.field.of(config_) = byte_size(full, node);
  }

  void read_value(const YAML::Node& node, const std::string& full, const config_kind::ByteSizeList& kind) {
    if (!node.IsSequence() || node.size() == 0) {
      fail(full, node, "key '" + full + "' expects a list of sizes, one per rank, like [64MiB, 32MiB]");
    }
    std::vector<int64_t> sizes;
    for (const auto& item : node) {
      const int64_t bytes = byte_size(full, item);
      if (bytes == 0) fail(full, item, "key '" + full + "' has a size of 0; every rank needs memory");
      sizes.push_back(bytes);
    }
    kind.field.of(config_) = sizes;
  }

  // A byte size: an integer, or a number with a unit (B, KB, MB, GB, KiB, MiB, GiB).
  int64_t byte_size(const std::string& key, const YAML::Node& node) const {
    if (!node.IsScalar()) fail(key, node, "key '" + key + "' expects a size like 512MiB, got a " +
                                              (node.IsSequence() ? "list" : "mapping"));
    try {
      return parse_byte_size(node.Scalar());
    } catch (const std::invalid_argument& e) {
      fail(key, node, "key '" + key + "' = '" + node.Scalar() + "': " + e.what());
    }
  }

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

// The value of one key as config_to_yaml writes it, in a form its kind reads back.
void write_value(YAML::Emitter& out, const Config& c, const config_kind::Integer& kind) { out << kind.field.in(c); }
void write_value(YAML::Emitter& out, const Config& c, const config_kind::Unsigned& kind) { out << kind.field.in(c); }
void write_value(YAML::Emitter& out, const Config& c, const config_kind::IntegerOrAuto& kind) {
  const int64_t v = kind.field.in(c);
  out << (v == kAuto ? std::string("auto") : std::to_string(v));
}
void write_value(YAML::Emitter& out, const Config& c, const config_kind::Real& kind) { out << kind.field.in(c); }
void write_value(YAML::Emitter& out, const Config& c, const config_kind::Boolean& kind) { out << kind.field.in(c); }
void write_value(YAML::Emitter& out, const Config& c, const config_kind::Text& kind) { out << kind.field.in(c); }
void write_value(YAML::Emitter& out, const Config& c, const config_kind::Choice& kind) { out << kind.field.in(c); }
void write_value(YAML::Emitter& out, const Config& c, const config_kind::PositiveList& kind) {
  out << YAML::Flow << kind.field.in(c);
}
void write_value(YAML::Emitter& out, const Config& c, const config_kind::ByteSize& kind) { out << kind.field.in(c); }
void write_value(YAML::Emitter& out, const Config& c, const config_kind::ByteSizeList& kind) {
  out << YAML::Flow << kind.field.in(c);
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
  for (const ConfigSection& section : config_schema()) {
    out << YAML::Key << section.name << YAML::Value << YAML::BeginMap;
    for (const ConfigKey& key : section.keys) {
      if (key.written_if && !key.written_if(c)) continue;
      out << YAML::Key << key.name << YAML::Value;
      std::visit([&](const auto& kind) { write_value(out, c, kind); }, key.kind);
    }
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  std::string text = std::string("# effective config of this run (defaults, file and --set applied)\n") + out.c_str() + "\n";
  for (const auto& line : trailer) text += "# " + line + "\n";
  return text;
}

}  // namespace dtrain
