# Sourced by the scripts that start ranks: the Open MPI settings this project needs.
# Root may run Open MPI (containers and CI run as root); Open MPI refuses otherwise.
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# Shared-memory transport without ptrace-based single copy, which containers forbid.
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
