#include "runtime/checkpoint_dir_check.h"

#include <unistd.h>

#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <span>
#include <sstream>

#include "comm/typed_collectives.h"
#include "kernels/errors.h"

namespace dtrain {

namespace {

constexpr size_t kHostBytes = 64;  // a gathered host name, truncated and zero-padded
// The probe's name carries its token, so that two jobs started at once on one
// directory do not overwrite each other's probe.
std::string probe_path(const std::string& dir, uint64_t token) {
  return (std::filesystem::path(dir) / (".dtrain-dir-probe-" + std::to_string(token))).string();
}

std::optional<std::string> read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

uint64_t random_token() {
  std::random_device device;
  uint64_t token = 0;
  while (token == 0) token = (static_cast<uint64_t>(device()) << 32) ^ device() ^ static_cast<uint64_t>(getpid());
  return token;
}

std::string token_text(uint64_t token) { return "dtrain checkpoint.dir probe " + std::to_string(token) + "\n"; }

// Rank 0: writes the probe; returns false where the directory or the file cannot be
// made. `created` tells whether the directory itself did not exist before.
bool write_probe(const std::string& dir, const std::string& path, uint64_t token, bool& created) {
  std::error_code ec;
  created = !std::filesystem::exists(dir, ec);
  std::filesystem::create_directories(dir, ec);
  if (ec) return false;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << token_text(token);
  out.close();
  return static_cast<bool>(out);
}

}  // namespace

std::string this_host_name() {
  char name[256] = {0};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

std::string checkpoint_dir_unseen_message(const std::string& dir, const std::vector<RankSight>& sights) {
  std::map<std::string, std::vector<const RankSight*>> by_host;  // sorted by host name
  for (const RankSight& s : sights) {
    if (s.sight != ProbeSight::kSeen) by_host[s.host].push_back(&s);
  }
  if (by_host.empty()) return "";
  std::ostringstream msg;
  msg << "checkpoint.dir " << dir << " is not the same directory on every node: a file rank 0 wrote there is ";
  bool first_host = true;
  for (const auto& [host, ranks] : by_host) {
    msg << (first_host ? "" : "; ") << "not seen on " << host << " by rank" << (ranks.size() > 1 ? "s " : " ");
    for (size_t i = 0; i < ranks.size(); ++i) {
      msg << (i ? ", " : "") << ranks[i]->rank
          << (ranks[i]->sight == ProbeSight::kMissing ? " (missing)" : " (another file in its place)");
    }
    first_host = false;
  }
  msg << ". Rank 0 writes every checkpoint and reads the one a run resumes from, and after a requeue it may run "
         "on any node, which would then start afresh. Set checkpoint.dir to a directory every node shares "
         "(on the cluster's shared file system)";
  return msg.str();
}

void check_checkpoint_dir_shared(const std::string& dir, const std::string& host, Communicator& control,
                                 const ProbeReader& read) {
  uint64_t token = 0;  // 0: rank 0 could not write the probe, nothing to check
  bool created = false;
  if (control.rank() == 0) {
    const uint64_t candidate = random_token();
    if (write_probe(dir, probe_path(dir, candidate), candidate, created)) token = candidate;
  }
  broadcast(control, std::span<uint64_t>(&token, 1), 0)->wait();
  if (token == 0) return;
  const std::string path = probe_path(dir, token);

  ProbeSight sight = ProbeSight::kSeen;
  if (control.rank() != 0) {
    const std::optional<std::string> text = read ? read(path) : read_whole_file(path);
    if (!text) sight = ProbeSight::kMissing;
    else if (*text != token_text(token)) sight = ProbeSight::kOtherToken;
  }
  const int32_t mine = static_cast<int32_t>(sight);
  const auto n = static_cast<size_t>(control.size());
  std::vector<int32_t> all(n);
  all_gather(control, std::span<const int32_t>(&mine, 1), std::span<int32_t>(all))->wait();
  std::array<uint8_t, kHostBytes> my_host{};
  std::memcpy(my_host.data(), host.data(), std::min(host.size(), kHostBytes - 1));
  std::vector<uint8_t> hosts(n * kHostBytes);
  all_gather(control, std::span<const uint8_t>(my_host), std::span<uint8_t>(hosts))->wait();

  // Every rank has read the file (the gathers are past), so it can go.
  if (control.rank() == 0) {
    std::error_code ec;
    std::filesystem::remove(path, ec);
    if (created) std::filesystem::remove(dir, ec);  // only when empty; a later checkpoint makes it again
  }
  std::vector<RankSight> sights(n);
  for (size_t r = 0; r < n; ++r) {
    sights[r].rank = static_cast<int>(r);
    sights[r].host = reinterpret_cast<const char*>(&hosts[r * kHostBytes]);
    sights[r].sight = static_cast<ProbeSight>(all[r]);
  }
  const std::string message = checkpoint_dir_unseen_message(dir, sights);
  if (message.empty()) return;
  ConfigError error(message);
  error.set_agreed(control.rank() == 0);
  throw error;
}

}  // namespace dtrain
