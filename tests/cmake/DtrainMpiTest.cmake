# dtrain_add_mpi_test(NAME name NP n COMMAND exe args...)
# Registers `name_npN` that runs the command under mpirun with N ranks. The settings
# that Open MPI needs on CI and development machines live here, not in people's
# heads: running as root is allowed (containers run as root), and more ranks than
# cores is allowed (--oversubscribe; the machines have 2 cores and the tests use 4).
set(DTRAIN_MPI_TEST_ENV
  OMPI_ALLOW_RUN_AS_ROOT=1
  OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  OMPI_MCA_rmaps_base_oversubscribe=1
  # Shared-memory transport without ptrace-based single copy, which containers forbid.
  OMPI_MCA_btl_vader_single_copy_mechanism=none)

function(dtrain_add_mpi_test)
  cmake_parse_arguments(T "" "NAME;NP;TIMEOUT" "COMMAND;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set(test_name ${T_NAME}_np${T_NP})
  add_test(NAME ${test_name}
           COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${T_NP} --oversubscribe
                   ${MPIEXEC_PREFLAGS} ${T_COMMAND} ${MPIEXEC_POSTFLAGS})
  set_tests_properties(${test_name} PROPERTIES
    ENVIRONMENT "${DTRAIN_MPI_TEST_ENV}"
    LABELS "mpi;${T_LABELS}"
    PROCESSORS ${T_NP}
    TIMEOUT ${T_TIMEOUT})
endfunction()
