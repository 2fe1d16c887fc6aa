#include "launch/gnuplot.h"

#include <sys/wait.h>

#include <cstdio>
#include <iostream>

namespace dtrain::launch {

bool run_gnuplot(const std::string& script) {
  FILE* gnuplot = ::popen("gnuplot", "w");
  if (gnuplot == nullptr) {
    std::cerr << "dtrain: cannot run gnuplot; install it (Debian: apt-get install gnuplot-nox)" << std::endl;
    return false;
  }
  std::fputs(script.c_str(), gnuplot);
  const int status = ::pclose(gnuplot);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const bool missing = WIFEXITED(status) && WEXITSTATUS(status) == 127;
    std::cerr << "dtrain: gnuplot " << (missing ? "is not installed (Debian: apt-get install gnuplot-nox)" : "failed")
              << "; no plot written" << std::endl;
    return false;
  }
  return true;
}

}  // namespace dtrain::launch
