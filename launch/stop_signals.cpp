#include "launch/stop_signals.h"

#include <csignal>
#include <initializer_list>

namespace dtrain::launch {

namespace {

// A signal handler can only reach global state; this flag is the one piece, written
// by the handler and read once per step by the trainer.
volatile std::sig_atomic_t stop_requested = 0;

void on_stop_signal(int signal) {
  stop_requested = 1;
  // The next SIGINT or SIGTERM takes the default action: the process ends.
  if (signal == SIGINT || signal == SIGTERM) std::signal(signal, SIG_DFL);
}

}  // namespace

const volatile int* install_stop_signal_handlers() {
  for (int signal : {SIGTERM, SIGINT, SIGUSR1}) {
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(signal, &action, nullptr);
  }
  return &stop_requested;
}

}  // namespace dtrain::launch
