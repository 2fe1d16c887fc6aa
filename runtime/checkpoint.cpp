#include "runtime/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "runtime/crc32c.h"

namespace dtrain {

namespace {

constexpr char kMagic[8] = {'D', 'T', 'R', 'N', 'C', 'K', 'P', 'T'};
constexpr size_t kHeaderBytes = 24;
constexpr size_t kSectionHeaderBytes = 16;

constexpr uint32_t tag_of(const char (&s)[5]) {
  return static_cast<uint32_t>(s[0]) | static_cast<uint32_t>(s[1]) << 8 | static_cast<uint32_t>(s[2]) << 16 |
         static_cast<uint32_t>(s[3]) << 24;
}
constexpr uint32_t kMeta = tag_of("META"), kPlan = tag_of("PLAN"), kSampler = tag_of("SAMP"),
                   kRng = tag_of("RNGS"), kParams = tag_of("PARM"), kOptimizer = tag_of("OPTM"),
                   kNoise = tag_of("NOIS");
const std::map<uint32_t, const char*> kSectionNames = {
    {kMeta, "META (step, config)"}, {kPlan, "PLAN (batch plan)"},     {kSampler, "SAMP (sampler position)"},
    {kRng, "RNGS (random streams)"}, {kParams, "PARM (parameters)"}, {kOptimizer, "OPTM (optimizer state)"},
    {kNoise, "NOIS (noise scale)"}};

std::string section_name(uint32_t tag) {
  auto it = kSectionNames.find(tag);
  if (it != kSectionNames.end()) return it->second;
  char s[5] = {static_cast<char>(tag), static_cast<char>(tag >> 8), static_cast<char>(tag >> 16),
               static_cast<char>(tag >> 24), 0};
  for (char& c : s) {
    if (c != 0 && (c < 32 || c > 126)) c = '?';
  }
  return std::string("'") + s + "'";
}

class Writer {
 public:
  template <class T>
  void put(T v) {
    const auto* p = reinterpret_cast<const char*>(&v);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    bytes_.insert(bytes_.end(), s.begin(), s.end());
  }
  void put_floats(const std::vector<float>& v) {
    put<uint64_t>(v.size());
    const auto* p = reinterpret_cast<const char*>(v.data());
    bytes_.insert(bytes_.end(), p, p + v.size() * sizeof(float));
  }
  std::vector<char>& bytes() { return bytes_; }

 private:
  std::vector<char> bytes_;
};

// Reads a section's payload; every overrun is a DataError naming the file and section.
class Reader {
 public:
  Reader(const char* data, size_t size, std::string where) : data_(data), size_(size), where_(std::move(where)) {}
  template <class T>
  T get() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, data_ + at_, sizeof(T));
    at_ += sizeof(T);
    return v;
  }
  std::string get_string() {
    const uint64_t n = get<uint64_t>();
    need(n);
    std::string s(data_ + at_, n);
    at_ += n;
    return s;
  }
  std::vector<float> get_floats() {
    const uint64_t n = get<uint64_t>();
    if (n > (size_ - at_) / sizeof(float)) fail("holds fewer floats than it says (" + std::to_string(n) + ")");
    std::vector<float> v(n);
    std::memcpy(v.data(), data_ + at_, n * sizeof(float));
    at_ += n * sizeof(float);
    return v;
  }
  void finish() {
    if (at_ != size_) fail("has " + std::to_string(size_ - at_) + " unread bytes");
  }
  [[noreturn]] void fail(const std::string& what) const { throw DataError(where_ + " " + what + "; the checkpoint is corrupt"); }

 private:
  void need(uint64_t n) {
    if (n > size_ - at_) fail("ends early");
  }
  const char* data_;
  size_t size_;
  size_t at_ = 0;
  std::string where_;
};

std::vector<char> encode(const CheckpointState& s) {
  std::vector<std::pair<uint32_t, Writer>> sections;
  auto section = [&](uint32_t tag) -> Writer& { return sections.emplace_back(tag, Writer()).second; };
  Writer& meta = section(kMeta);
  meta.put<int64_t>(s.step);
  meta.put<int64_t>(s.samples);
  meta.put<uint64_t>(s.seed);
  meta.put<uint64_t>(s.config_hash);
  meta.put<uint64_t>(s.compat.size());
  for (const auto& line : s.compat) meta.put_string(line);
  meta.put_string(s.config_yaml);
  Writer& plan = section(kPlan);
  plan.put<int64_t>(s.plan.world_size());
  plan.put<int64_t>(s.plan.accumulation_steps);
  plan.put<int64_t>(s.plan.global_batch);
  for (int64_t m : s.plan.micro_batch) plan.put<int64_t>(m);
  Writer& sampler = section(kSampler);
  sampler.put<int64_t>(s.epoch);
  sampler.put<int64_t>(s.batch_in_epoch);
  sampler.put<int64_t>(s.steps_per_epoch);
  Writer& rng = section(kRng);
  rng.put<uint64_t>(s.seed);
  rng.put<int64_t>(s.epoch);
  section(kParams).put_floats(s.params);
  Writer& optimizer = section(kOptimizer);
  optimizer.put<int64_t>(s.optimizer_steps);
  optimizer.put<uint64_t>(s.optimizer_state.size());
  for (const auto& buffer : s.optimizer_state) optimizer.put_floats(buffer);
  Writer& noise = section(kNoise);
  for (double d : s.noise) noise.put<double>(d);
  noise.put<int64_t>(s.noise_steps);

  Writer file;
  for (char c : kMagic) file.put<char>(c);
  file.put<uint32_t>(kCheckpointVersion);
  file.put<uint32_t>(static_cast<uint32_t>(sections.size()));
  file.put<uint32_t>(0);  // flags
  file.put<uint32_t>(crc32c(file.bytes().data(), 20));
  for (auto& [tag, w] : sections) {
    file.put<uint32_t>(tag);
    file.put<uint64_t>(w.bytes().size());
    file.put<uint32_t>(crc32c(w.bytes().data(), w.bytes().size()));
    file.bytes().insert(file.bytes().end(), w.bytes().begin(), w.bytes().end());
  }
  return std::move(file.bytes());
}

[[noreturn]] void storage_failure(const std::string& what, const std::string& path, int err) {
  throw StorageError("cannot write checkpoint " + path + ": " + what + ": " + std::strerror(err) +
                     "; the previous checkpoints are kept. Check checkpoint.dir (writable, space left)");
}

void fsync_directory(const std::string& dir, const std::string& path) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) storage_failure("open its directory", path, errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) storage_failure("fsync its directory", path, err);
}

}  // namespace

void write_checkpoint(const std::string& path, const CheckpointState& state) {
  const std::vector<char> bytes = encode(state);
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) storage_failure("create " + tmp, path, errno);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : ENOSPC;
      ::close(fd);
      ::unlink(tmp.c_str());
      storage_failure("write " + tmp, path, err);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    storage_failure("fsync " + tmp, path, err);
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    storage_failure("close " + tmp, path, err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    storage_failure("rename " + tmp, path, err);
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  fsync_directory(dir.empty() ? "." : dir, path);
}

CheckpointState read_checkpoint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError("cannot open checkpoint " + path + ": " + std::strerror(errno));
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string file = "checkpoint " + path;
  if (bytes.size() < kHeaderBytes) {
    throw DataError(file + " is truncated: " + std::to_string(bytes.size()) + " bytes, not even a header");
  }
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    throw DataError(file + " is not a dtrain checkpoint (wrong magic)");
  }
  uint32_t header[4];
  std::memcpy(header, bytes.data() + 8, sizeof(header));
  if (crc32c(bytes.data(), 20) != header[3]) throw DataError(file + ": the header's checksum does not match; the checkpoint is corrupt");
  if (header[0] > kCheckpointVersion) {
    throw DataError(file + " has format version " + std::to_string(header[0]) + ", newer than this dtrain reads (" +
                    std::to_string(kCheckpointVersion) + "); resume it with a newer dtrain");
  }
  if (header[0] == 0 || header[2] != 0) throw DataError(file + ": unknown format version 0 or flags; the checkpoint is corrupt");

  std::map<uint32_t, std::pair<size_t, size_t>> sections;  // tag -> (offset, length)
  size_t at = kHeaderBytes;
  for (uint32_t i = 0; i < header[1]; ++i) {
    if (bytes.size() - at < kSectionHeaderBytes) {
      throw DataError(file + " is truncated: it ends inside the header of section " + std::to_string(i + 1) + " of " +
                      std::to_string(header[1]));
    }
    uint32_t tag, crc;
    uint64_t length;
    std::memcpy(&tag, bytes.data() + at, 4);
    std::memcpy(&length, bytes.data() + at + 4, 8);
    std::memcpy(&crc, bytes.data() + at + 12, 4);
    at += kSectionHeaderBytes;
    const std::string name = section_name(tag);
    if (!kSectionNames.count(tag)) throw DataError(file + ": unknown section " + name + "; the checkpoint is corrupt");
    if (length > bytes.size() - at) {
      throw DataError(file + " is truncated: section " + name + " needs " + std::to_string(length) + " bytes, " +
                      std::to_string(bytes.size() - at) + " remain");
    }
    if (crc32c(bytes.data() + at, length) != crc) {
      throw DataError(file + ": section " + name + " fails its checksum; the checkpoint is corrupt");
    }
    if (!sections.emplace(tag, std::make_pair(at, static_cast<size_t>(length))).second) {
      throw DataError(file + ": section " + name + " appears twice; the checkpoint is corrupt");
    }
    at += length;
  }
  if (at != bytes.size()) {
    throw DataError(file + " has " + std::to_string(bytes.size() - at) + " bytes after its last section; it is corrupt");
  }
  auto reader = [&](uint32_t tag) {
    auto it = sections.find(tag);
    if (it == sections.end()) throw DataError(file + " has no section " + section_name(tag) + "; it is corrupt");
    return Reader(bytes.data() + it->second.first, it->second.second, file + ": section " + section_name(tag));
  };

  CheckpointState s;
  Reader meta = reader(kMeta);
  s.step = meta.get<int64_t>();
  s.samples = meta.get<int64_t>();
  s.seed = meta.get<uint64_t>();
  s.config_hash = meta.get<uint64_t>();
  const uint64_t lines = meta.get<uint64_t>();
  if (lines > 4096) meta.fail("claims " + std::to_string(lines) + " config lines");
  for (uint64_t i = 0; i < lines; ++i) s.compat.push_back(meta.get_string());
  s.config_yaml = meta.get_string();
  meta.finish();
  Reader plan = reader(kPlan);
  const int64_t world = plan.get<int64_t>();
  if (world < 1 || world > (int64_t{1} << 20)) plan.fail("has a world size of " + std::to_string(world));
  s.plan.accumulation_steps = plan.get<int64_t>();
  s.plan.global_batch = plan.get<int64_t>();
  for (int64_t r = 0; r < world; ++r) s.plan.micro_batch.push_back(plan.get<int64_t>());
  plan.finish();
  if (s.plan.accumulation_steps < 1 || s.plan.accumulation_steps * s.plan.samples_per_micro_step() != s.plan.global_batch) {
    throw DataError(file + ": section PLAN (batch plan) is inconsistent (k x sum(micro) != G); the checkpoint is corrupt");
  }
  Reader sampler = reader(kSampler);
  s.epoch = sampler.get<int64_t>();
  s.batch_in_epoch = sampler.get<int64_t>();
  s.steps_per_epoch = sampler.get<int64_t>();
  sampler.finish();
  Reader rng = reader(kRng);
  if (rng.get<uint64_t>() != s.seed || rng.get<int64_t>() != s.epoch) rng.fail("disagrees with META and SAMP");
  rng.finish();
  Reader params = reader(kParams);
  s.params = params.get_floats();
  params.finish();
  Reader optimizer = reader(kOptimizer);
  s.optimizer_steps = optimizer.get<int64_t>();
  const uint64_t buffers = optimizer.get<uint64_t>();
  if (buffers > 16) optimizer.fail("claims " + std::to_string(buffers) + " state buffers");
  for (uint64_t i = 0; i < buffers; ++i) s.optimizer_state.push_back(optimizer.get_floats());
  optimizer.finish();
  Reader noise = reader(kNoise);
  for (double& d : s.noise) d = noise.get<double>();
  s.noise_steps = noise.get<int64_t>();
  noise.finish();
  return s;
}

std::string checkpoint_path(const std::string& dir, int64_t step) {
  char name[48];
  std::snprintf(name, sizeof(name), "ckpt-%09lld.dtrain", static_cast<long long>(step));
  return (std::filesystem::path(dir) / name).string();
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() == 21 && name.rfind("ckpt-", 0) == 0 && name.compare(14, 7, ".dtrain") == 0) {
      found.push_back(entry.path().string());
    }
  }
  std::sort(found.rbegin(), found.rend());  // zero-padded steps sort by name
  return found;
}

void rotate_checkpoints(const std::string& dir, int64_t keep) {
  const std::vector<std::string> all = list_checkpoints(dir);
  std::error_code ec;
  for (size_t i = static_cast<size_t>(std::max<int64_t>(keep, 1)); i < all.size(); ++i) {
    std::filesystem::remove(all[i], ec);
  }
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("ckpt-", 0) == 0 && name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0) {
      std::filesystem::remove(entry.path(), ec);
    }
  }
}

ResumeChoice newest_valid_checkpoint(const std::string& dir) {
  ResumeChoice choice;
  for (const std::string& path : list_checkpoints(dir)) {
    try {
      read_checkpoint(path);
      choice.path = path;
      return choice;
    } catch (const DataError& e) {
      choice.rejected.push_back(e.what());
    }
  }
  return choice;
}

}  // namespace dtrain
