// Drawing with gnuplot (Debian: gnuplot-nox), for dtrain plot and dtrain sweep.
#pragma once

#include <string>

namespace dtrain::launch {

// Feeds `script` to gnuplot. Returns true when it drew; otherwise says why on stderr
// (gnuplot missing or failing) and returns false.
bool run_gnuplot(const std::string& script);

}  // namespace dtrain::launch
