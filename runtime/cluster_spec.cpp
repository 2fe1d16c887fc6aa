#include "runtime/cluster_spec.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "kernels/errors.h"

namespace dtrain {

ClusterSpec default_cluster_spec() {
  ClusterSpec s;
  s.name = "8 x H100 SXM a node: NVLink 4 inside, 8 x 400 Gb/s InfiniBand NDR between (built in)";
  s.file = "built in";
  s.ranks_per_node = 8;
  s.devices_per_node = 8;
  s.overlap = true;
  s.intra_node = {3.4e-6, 370e9};
  s.intra_source =
      "bus bandwidth: about 370 GB/s for a ring over H100 NVLink (450 GB/s line rate less "
      "~20% protocol overhead), NVIDIA's NCCL maintainer in github.com/NVIDIA/nccl-tests/issues/212; "
      "latency: 3.4 us a step, NCCL's tuning model for a ring (Simple protocol) over NVLink, "
      "github.com/NVIDIA/nccl src/graph/tuning.cc";
  s.inter_node = {9.6e-6, 8 * 46e9};
  s.inter_source =
      "bus bandwidth: 8 NICs a node x 46 GB/s each (46-48 GB/s per 400 Gb/s NDR NIC, NVIDIA in "
      "github.com/NVIDIA/nccl-tests/issues/290), NCCL's rings each leaving a node through their own "
      "NIC; latency: 9.6 us a step, NCCL's tuning model for a ring (Simple) over the network, "
      "src/graph/tuning.cc";
  return s;
}

namespace {

class SpecReader {
 public:
  explicit SpecReader(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const YAML::Node& at, const std::string& key, const std::string& what) const {
    std::ostringstream s;
    s << file_;
    if (at.Mark().line >= 0) s << ":" << at.Mark().line + 1;
    s << ": " << key << ": " << what
      << " (a cluster table: see runtime/cluster_spec.h, or configs/clusters/ for examples)";
    throw ConfigError(s.str());
  }

  void only_keys(const YAML::Node& map, const std::string& name, const std::set<std::string>& allowed) const {
    if (!map.IsMap()) fail(map, name, "must be a mapping of keys to values");
    for (const auto& kv : map) {
      const std::string key = kv.first.IsScalar() ? kv.first.as<std::string>() : "?";
      if (!allowed.count(key)) {
        std::string list;
        for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
        fail(kv.first, name.empty() ? key : name + "." + key, "unknown key; the keys here are " + list);
      }
    }
  }

  const YAML::Node required(const YAML::Node& map, const std::string& key, const std::string& path) const {
    const YAML::Node v = map[key];
    if (!v) fail(map, path, "missing");
    return v;
  }

  double positive(const YAML::Node& map, const std::string& key, const std::string& path) const {
    const YAML::Node v = required(map, key, path);
    double x = 0.0;
    try {
      x = v.as<double>();
    } catch (const YAML::Exception&) {
      fail(v, path, "must be a number");
    }
    if (!(x > 0.0) || !std::isfinite(x)) fail(v, path, "must be a positive number");
    return x;
  }

  int count(const YAML::Node& map, const std::string& key) const {
    const YAML::Node v = required(map, key, key);
    int x = 0;
    try {
      x = v.as<int>();
    } catch (const YAML::Exception&) {
      fail(v, key, "must be a whole number");
    }
    if (x < 1) fail(v, key, "must be at least 1");
    return x;
  }

  std::string text(const YAML::Node& map, const std::string& key, const std::string& path) const {
    const YAML::Node v = required(map, key, path);
    if (!v.IsScalar() || v.as<std::string>().empty()) fail(v, path, "must be a non-empty text");
    return v.as<std::string>();
  }

  // {latency_us, bandwidth_GBps, source}
  void link(const YAML::Node& root, const std::string& key, Link& out, std::string& source) const {
    const YAML::Node v = required(root, key, key);
    only_keys(v, key, {"latency_us", "bandwidth_GBps", "source"});
    out.latency_s = positive(v, "latency_us", key + ".latency_us") * 1e-6;
    out.bandwidth_Bps = positive(v, "bandwidth_GBps", key + ".bandwidth_GBps") * 1e9;
    source = text(v, "source", key + ".source");
  }

 private:
  std::string file_;
};

}  // namespace

ClusterSpec load_cluster_spec(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw ConfigError("cannot open cluster table '" + file + "': check the path (configs/clusters/ holds examples)");
  std::stringstream body;
  body << in.rdbuf();
  YAML::Node root;
  try {
    root = YAML::Load(body.str());
  } catch (const YAML::ParserException& e) {
    throw ConfigError(file + ":" + std::to_string(e.mark.line + 1) + ": not valid YAML: " + e.msg);
  }
  const SpecReader r(file);
  r.only_keys(root, "", {"name", "ranks_per_node", "devices_per_node", "overlap", "intra_node", "inter_node", "device"});
  ClusterSpec s;
  s.file = file;
  s.name = r.text(root, "name", "name");
  s.ranks_per_node = r.count(root, "ranks_per_node");
  s.devices_per_node = root["devices_per_node"] ? r.count(root, "devices_per_node") : s.ranks_per_node;
  if (root["overlap"]) {
    try {
      s.overlap = root["overlap"].as<bool>();
    } catch (const YAML::Exception&) {
      r.fail(root["overlap"], "overlap", "must be true or false");
    }
  }
  r.link(root, "intra_node", s.intra_node, s.intra_source);
  r.link(root, "inter_node", s.inter_node, s.inter_source);
  if (const YAML::Node d = root["device"]) {
    r.only_keys(d, "device", {"flops", "source"});
    s.device_flops = r.positive(d, "flops", "device.flops");
    s.device_source = r.text(d, "source", "device.source");
  }
  return s;
}

}  // namespace dtrain
