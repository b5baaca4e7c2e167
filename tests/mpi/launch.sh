# Sourced by the MPI tests. mpi_launch N [mpirun options] CMD... runs CMD as N ranks under Open
# MPI's mpirun with the options in $mpi_flags, which a test machine needs: --oversubscribe (more
# ranks than cores: CI has 2), --allow-run-as-root where the tests run as root (CI does), and
# no single-copy mechanism (CMA), which containers usually forbid (ptrace), so shared memory
# copies through a buffer. Threads: one per rank unless the caller set them.
mpi_flags=(--oversubscribe --mca btl_vader_single_copy_mechanism none -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS
           -x OMP_WAIT_POLICY)
[ "$(id -u)" -eq 0 ] && mpi_flags+=(--allow-run-as-root)
mpi_launch() {
  local n=$1; shift
  mpirun "${mpi_flags[@]}" -n "$n" "$@"
}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
