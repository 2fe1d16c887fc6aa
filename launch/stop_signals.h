// Preemption: SIGTERM, SIGINT and SIGUSR1 (Slurm's --signal=USR1@90) ask the run to
// stop after the current step with a checkpoint, all ranks together (the trainer
// all-reduces the request with the step's loss). A second SIGINT or SIGTERM ends the
// process at once, for a user who does not want to wait.
#pragma once

namespace dtrain::launch {

// Installs the handlers; returns the flag they set (nonzero: stop requested).
const volatile int* install_stop_signal_handlers();

}  // namespace dtrain::launch
