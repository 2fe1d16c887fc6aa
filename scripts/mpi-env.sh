# shellcheck shell=bash
# Sourced by the scripts that start ranks: the Open MPI settings this project needs.
# Root may run Open MPI (containers and CI run as root); Open MPI refuses otherwise.
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# Shared-memory transport without ptrace-based single copy, which containers forbid.
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
# Open MPI insists on a remote-shell agent even when every rank is local; a machine
# without ssh or rsh (a bare container image) gets /bin/false, never used for local ranks.
if ! command -v ssh >/dev/null && ! command -v rsh >/dev/null; then
  export OMPI_MCA_plm_rsh_agent=${OMPI_MCA_plm_rsh_agent:-false}
fi
