/* dist — one job as N cooperating processes (MPI ranks), or as one process without MPI.
 *
 * Model: SPMD. Every rank runs the same program on the same inputs and makes the same calls in
 * the same order; the calls marked "collective" below must be made by every rank, or the job
 * hangs. Work that is cheap runs on every rank alike; an expensive step is cut into units and
 * handed out (up_dist_map); a result every rank needs is sent from rank 0 (up_dist_share).
 *
 * Work units. up_dist_map hands out unit indices in increasing order, one at a time, to the
 * rank that asks next — rank 0's own main thread included — so uneven units and uneven
 * machines balance. A unit's result comes back to rank 0 as bytes and is passed to the
 * caller's `arrived` there, on rank 0's main thread, as results come in (not in unit order).
 * The promise that N ranks give the bits of one process is the caller's half of the contract:
 * a unit's result must depend on the unit only, never on the rank or on what ran before it on
 * that rank (same batch composition, same threads per rank), and anything combined from
 * several units must be combined in unit order. With one rank, up_dist_map calls compute and
 * arrived in turn, unit by unit, so one process and N ranks run the very same code per unit.
 *
 * Launch. up_dist_init starts MPI only when an MPI launcher started this process (mpirun /
 * mpiexec of Open MPI: OMPI_COMM_WORLD_SIZE; srun or a PMIx / PMI launcher: PMIX_RANK,
 * PMI_RANK) and the build has MPI (UP_HAVE_MPI). Otherwise there is one rank: no MPI call, no
 * thread, no message, no delay.
 *
 * Waiting. A rank waiting for a message polls with short sleeps (0.05 to 2 ms) instead of MPI's
 * blocking calls, which spin a core: an idle rank leaves its core to the ranks and threads that
 * compute. Rank 0 answers the other ranks from a thread of its own while its main thread
 * computes units (MPI_THREAD_SERIALIZED: only that thread calls MPI during a map).
 *
 * Faults. An error in a unit (any rank) or in `arrived` stops the handing out; the units
 * running finish, and every rank returns the same error from up_dist_map, prefixed with the
 * rank and host where it happened. A rank that dies ends the job through the launcher (Open
 * MPI's mpirun names the rank and host); what rank 0 was given before that stays given.
 *
 * Not re-entrant: no dist call inside compute or arrived but up_dist_service / up_dist_limit.
 * Errors: up_status with a message. The one exception to core's rule that it never prints or
 * exits (error.h): a rank that cannot allocate the bytes another rank is sending it (out of
 * memory mid-message) prints why, naming itself, and ends the job (up_dist_out_of_memory), since the
 * ranks waiting on it could never go on. */
#ifndef UP_DIST_H
#define UP_DIST_H

#include <stddef.h>

#include "base/error.h"

/* Starts MPI when launched by an MPI launcher (above); idempotent. The error names the
 * launcher's variable when MPI was wanted but this build has none. */
up_status up_dist_init(up_error *err);
void up_dist_finalize(void); /* NULL-safe in spirit: nothing when MPI was not started */

int up_dist_rank(void);              /* 0 without MPI */
int up_dist_size(void);              /* 1 without MPI */
const char *up_dist_host(int rank);  /* the host name of a rank (gethostname at init) */
int up_dist_have_mpi(void);          /* 1 when the build has MPI */

/* Ends every rank at once with exit status `code` (MPI_Abort); without MPI, exit(code). */
void up_dist_abort(int code) __attribute__((noreturn));

/* Out of memory in the middle of a collective (the exception in the header): prints
 * "upstream: rank R on host H: out of memory for WHAT" and ends the job with status 1. */
void up_dist_out_of_memory(const char *what) __attribute__((noreturn));

/* A unit's result: malloc'd bytes that up_dist_map takes over (and frees). */
typedef struct up_dist_bytes {
    void *data;
    size_t size;
} up_dist_bytes;

typedef struct up_dist_job {
    int n_units;
    /* Runs on whichever rank the unit falls to. Fills *out (may stay empty). */
    up_status (*compute)(int unit, void *user, up_dist_bytes *out, up_error *err);
    /* Rank 0 only, once per unit below the limit, as results come in. An error stops the job. */
    up_status (*arrived)(int unit, const void *data, size_t size, void *user, up_error *err);
    void *user;
} up_dist_job;

/* Collective. Every unit below the limit (n_units, or lower: up_dist_limit) is computed
 * exactly once and arrives on rank 0. Returns the job's status on every rank. */
up_status up_dist_map(const up_dist_job *job, up_error *err);

/* Rank 0, inside arrived: no unit at or past n is handed out from now on, and results of such
 * units are dropped (for "stop at the first that passes" searches). Never raises the limit. */
void up_dist_limit(int n);

/* Rank 0, inside compute: delivers the results that came in meanwhile (calls arrived), so a
 * long unit does not hold others' results back. Does nothing elsewhere. */
void up_dist_service(void);

/* Collective: rank 0's bytes to every rank. On rank 0 *data and *size are read; elsewhere they
 * are replaced by a malloc'd copy (the caller frees it; NULL when size is 0). */
up_status up_dist_share(void **data, size_t *size, up_error *err);

/* Collective: rank 0's `size` bytes at buf replace the same `size` bytes at buf on every other
 * rank (an array whose size every rank knows); no-op with one rank. `what` names it in the
 * error when rank 0's size differs. */
up_status up_dist_share_into(void *buf, size_t size, const char *what, up_error *err);

/* Collective: every rank passes its own status and error (err->msg read when st != UP_OK);
 * every rank gets back the first failure by rank order ("rank R on host H: msg"), or UP_OK.
 * For steps that can fail on one host only, e.g. loading a model from a local path. */
up_status up_dist_agree(up_status st, up_error *err);

/* The message of the last collective failure (up_dist_map, up_dist_agree): every rank has
 * it, so a host that prints errors can let rank 0 alone print it. "" when there was none. */
const char *up_dist_shared_error(void);

/* Counts of the last up_dist_map as this rank saw them (rank 0 sees every unit). */
typedef struct up_dist_stats {
    int units;          /* results accepted */
    int units_remote;   /* of them computed on other ranks than 0 */
    double bytes;       /* result bytes sent to rank 0 by other ranks */
    double seconds;     /* wall time of the map */
} up_dist_stats;

up_dist_stats up_dist_last_stats(void);

#endif
