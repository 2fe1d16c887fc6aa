#include "runtime/file_match.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "kernels/errors.h"

namespace dtrain {
namespace {

namespace fs = std::filesystem;

bool is_glob(const std::string& path) { return path.find_first_of("*?[") != std::string::npos; }

bool is_regular_file(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

std::vector<std::string> glob_files(const std::string& pattern, const std::string& key) {
  glob_t g{};
  const int rc = glob(pattern.c_str(), 0, nullptr, &g);
  std::vector<std::string> out;
  if (rc == 0) {
    for (size_t i = 0; i < g.gl_pathc; ++i) {
      if (is_regular_file(g.gl_pathv[i])) out.emplace_back(g.gl_pathv[i]);
    }
  }
  globfree(&g);
  if (rc != 0 && rc != GLOB_NOMATCH) {
    throw DataError(key + " = '" + pattern + "': cannot read the folders the glob searches; check their permissions");
  }
  if (out.empty()) {
    throw DataError(key + " = '" + pattern + "': no files match the glob; check the pattern and that the files exist");
  }
  return out;
}

}  // namespace

std::vector<std::string> match_files(const std::string& path, const std::string& key) {
  if (path.empty()) throw DataError(key + " is empty: set it to a file, a folder or a glob");
  std::vector<std::string> files;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (fs::is_regular_file(st)) {
    files.push_back(path);
  } else if (fs::is_directory(st)) {
    for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->is_regular_file(ec)) files.push_back(it->path().string());
    }
    if (ec) throw DataError(key + " = '" + path + "': cannot list the folder: " + ec.message());
    if (files.empty()) {
      throw DataError(key + " = '" + path + "': the folder holds no files; put the data there or point " + key +
                      " at another file, folder or glob");
    }
  } else if (fs::exists(st)) {
    throw DataError(key + " = '" + path + "' is neither a regular file nor a folder; point it at the data");
  } else if (is_glob(path)) {
    files = glob_files(path, key);
  } else {
    throw DataError(key + " = '" + path + "' does not exist; check the path (a file, a folder or a glob)");
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace dtrain
