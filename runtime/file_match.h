// Which files a data path names: one file, every regular file of a folder (not its
// subfolders), or the files a glob (`*`, `?`, `[...]`) matches. The list is sorted by
// path, so the concatenated stream is the same on every rank and every run. A path
// that names nothing is a DataError naming the config key and the path.
#pragma once

#include <string>
#include <vector>

namespace dtrain {

// `key` is the config key the path came from (data.path, data.train_files, ...).
std::vector<std::string> match_files(const std::string& path, const std::string& key);

}  // namespace dtrain
