# One experiment over MPI ranks (issue 19; core/dist/dist.h), when the build has MPI:
#   mpi_published_set  experiments/all.lua on the organism as 1 process and as 2 ranks: the same
#                      tables and direction, byte for byte; manifests record the ranks; and
#                      `upstream steer` as 3 ranks prints one process's table
#   mpi_kill_rank      rank 1, then rank 0, of a 2-rank steering job SIGKILLed mid-grid: the
#                      job ends naming the rank and host, and the rerun computes only the
#                      missing cells, with the one-process tables
#   mpi_load_failure   a rank whose model has no weights fails the job at load, before any work,
#                      with one message naming the rank, host and path
#   mpi_dist_units     tests/test_dist.c as 3 ranks: the map's contract with remote ranks
# Labelled mpi: the sanitizer pass leaves them out (Open MPI's own allocations would be leaks
# to LeakSanitizer; the code they run is covered there by the one-process tests).
include_guard(GLOBAL)
if(UP_MPI AND MPI_C_FOUND)
  foreach(t published_set kill_rank load_failure)
    add_test(NAME mpi_${t} COMMAND bash ${CMAKE_SOURCE_DIR}/tests/mpi/${t}_test.sh
                                   $<TARGET_FILE:upstream> ${CMAKE_SOURCE_DIR})
    set_tests_properties(mpi_${t} PROPERTIES LABELS mpi TIMEOUT 600
                         ENVIRONMENT "OMP_WAIT_POLICY=passive;OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
  endforeach()
  add_test(NAME mpi_dist_units COMMAND bash -c ". ${CMAKE_SOURCE_DIR}/tests/mpi/launch.sh && mpi_launch 3 $<TARGET_FILE:test_dist>")
  set_tests_properties(mpi_dist_units PROPERTIES LABELS mpi TIMEOUT 120
                       ENVIRONMENT "CMOCKA_MESSAGE_OUTPUT=STDOUT;OMP_WAIT_POLICY=passive;OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
endif()
