/* dist — work units over MPI ranks; the contract is in dist.h.
 *
 * Messages (all on a private duplicate of MPI_COMM_WORLD, so a script's own MPI use, if any,
 * cannot meet them):
 *   TAG_RESULT  worker → 0   {unit, status, size} then size bytes in TAG_DATA chunks; unit -1
 *                            is the first request of a map; status != 0 carries the message
 *   TAG_UNIT    0 → worker   {unit}: the next unit, or -1: no more for this map
 *   TAG_FINAL   0 → worker   {status, size} then the message: the map's outcome
 *   TAG_SHARE   0 → worker   {size} then the bytes (up_dist_share)
 *   TAG_AGREE   worker → 0   {status, size} then the message (up_dist_agree)
 * Messages between two ranks are not overtaken (MPI's ordering), and a worker starts the next
 * collective only after the last one's final message, so collectives cannot mix. */
#include "dist/dist.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"

#ifdef UP_HAVE_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1;
static char **g_hosts; /* (g_size) */
static char g_host0[256];
static up_dist_stats g_stats;
static char g_shared_error[sizeof ((up_error *)0)->msg];

const char *up_dist_shared_error(void) { return g_shared_error; }

int up_dist_rank(void) { return g_rank; }
int up_dist_size(void) { return g_size; }
up_dist_stats up_dist_last_stats(void) { return g_stats; }

const char *up_dist_host(int rank) {
    if (g_hosts && rank >= 0 && rank < g_size) return g_hosts[rank];
    if (!g_host0[0] && gethostname(g_host0, sizeof g_host0 - 1)) strcpy(g_host0, "?");
    return g_host0;
}

void up_dist_out_of_memory(const char *what) {
    fprintf(stderr, "upstream: rank %d on host %s: out of memory for %s\n", g_rank, up_dist_host(g_rank), what);
    fflush(stderr);
    up_dist_abort(1);
}

up_status up_dist_share_into(void *buf, size_t size, const char *what, up_error *err) {
    if (g_size == 1) return UP_OK;
    void *data = buf;
    size_t got = size;
    up_status st = up_dist_share(&data, &got, err);
    if (st || g_rank == 0) return st;
    if (got == size) memcpy(buf, data, size);
    else st = up_error_set(err, UP_ERR_FORMAT, "%s: rank 0 sent %zu bytes, not %zu", what, got, size);
    free(data);
    return st;
}

int up_dist_have_mpi(void) {
#ifdef UP_HAVE_MPI
    return 1;
#else
    return 0;
#endif
}

/* The variable by which a launcher told this process it is one rank of many, or NULL. */
static const char *launcher_variable(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        if (getenv(vars[i])) return vars[i];
    return NULL;
}

/* ---- one process: the units in turn ---- */

static int g_limit; /* units at or past it are not handed out (rank 0; under M.mu with MPI) */

static up_status map_local(const up_dist_job *job, up_error *err) {
    for (int u = 0; u < g_limit; u++) {
        up_dist_bytes out = {0};
        up_status st = job->compute(u, job->user, &out, err);
        if (!st && u < g_limit) {
            st = job->arrived(u, out.data, out.size, job->user, err);
            g_stats.units++;
        }
        free(out.data);
        if (st) return st;
    }
    return UP_OK;
}

#ifndef UP_HAVE_MPI

up_status up_dist_init(up_error *err) {
    const char *var = launcher_variable();
    if (var)
        return up_error_set(err, UP_ERR_UNSUPPORTED,
                            "this process was started by an MPI launcher (%s is set), but this build of upstream has no "
                            "MPI: install Open MPI (scripts/install-deps.sh) and rebuild",
                            var);
    return UP_OK;
}
void up_dist_finalize(void) {}
void up_dist_limit(int n) {
    if (n < g_limit) g_limit = n;
}
void up_dist_abort(int code) { exit(code); }
void up_dist_service(void) {}

up_status up_dist_map(const up_dist_job *job, up_error *err) {
    const double t0 = up_clock_seconds();
    memset(&g_stats, 0, sizeof g_stats);
    g_limit = job->n_units;
    up_status st = map_local(job, err);
    g_stats.seconds = up_clock_seconds() - t0;
    return st;
}

up_status up_dist_share(void **data, size_t *size, up_error *err) {
    (void)data, (void)size, (void)err;
    return UP_OK;
}

up_status up_dist_agree(up_status st, up_error *err) { return st; }

#else /* UP_HAVE_MPI */

enum { TAG_RESULT = 1, TAG_DATA, TAG_UNIT, TAG_FINAL, TAG_SHARE, TAG_AGREE };
static int g_started = 0;

/* Collective failures are remembered by message (up_dist_shared_error). */
static up_status shared(up_status st, const up_error *err) {
    if (st && err) snprintf(g_shared_error, sizeof g_shared_error, "%s", err->msg);
    return st;
}
#define CHUNK ((size_t)1 << 30) /* MPI counts are int: larger payloads go in pieces */

static MPI_Comm g_comm = MPI_COMM_NULL;

up_status up_dist_init(up_error *err) {
    if (g_started || !launcher_variable()) return UP_OK;
    int provided = 0;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
        return up_error_set(err, UP_ERR_IO, "MPI_Init_thread failed");
    if (provided < MPI_THREAD_SERIALIZED) {
        MPI_Finalize();
        return up_error_set(err, UP_ERR_UNSUPPORTED,
                            "this MPI library does not support MPI_THREAD_SERIALIZED (gave level %d)", provided);
    }
    g_started = 1;
    MPI_Comm_dup(MPI_COMM_WORLD, &g_comm);
    MPI_Comm_rank(g_comm, &g_rank);
    MPI_Comm_size(g_comm, &g_size);
    char name[256] = {0};
    if (gethostname(name, sizeof name - 1)) strcpy(name, "?");
    char *all = calloc((size_t)g_size, sizeof name);
    g_hosts = calloc((size_t)g_size, sizeof *g_hosts);
    if (!all || !g_hosts) return up_error_set(err, UP_ERR_NOMEM, "dist: out of memory");
    MPI_Allgather(name, (int)sizeof name, MPI_CHAR, all, (int)sizeof name, MPI_CHAR, g_comm);
    for (int r = 0; r < g_size; r++) g_hosts[r] = strdup(all + (size_t)r * sizeof name);
    free(all);
    return UP_OK;
}

void up_dist_finalize(void) {
    if (!g_started) return;
    MPI_Comm_free(&g_comm);
    MPI_Finalize();
    g_started = 0;
}

void up_dist_abort(int code) {
    if (g_started) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

static void nap(long *ns) {
    struct timespec ts = {0, *ns};
    nanosleep(&ts, NULL);
    if (*ns < 2000000) *ns *= 2;
}

/* Waits without spinning for a message from `source` (or any) with `tag`. */
static void wait_message(int source, int tag, MPI_Status *status) {
    long ns = 50000;
    for (;;) {
        int flag = 0;
        MPI_Iprobe(source, tag, g_comm, &flag, status);
        if (flag) return;
        nap(&ns);
    }
}

static void send_bytes(const void *data, size_t size, int dest) {
    for (size_t off = 0; off < size; off += CHUNK) {
        const size_t n = size - off < CHUNK ? size - off : CHUNK;
        MPI_Send((const char *)data + off, (int)n, MPI_BYTE, dest, TAG_DATA, g_comm);
    }
}

static void recv_bytes(void *data, size_t size, int source) {
    for (size_t off = 0; off < size; off += CHUNK) {
        const size_t n = size - off < CHUNK ? size - off : CHUNK;
        long ns = 50000;
        for (;;) { /* the data follows its header at once, but may still be on its way */
            int flag = 0;
            MPI_Iprobe(source, TAG_DATA, g_comm, &flag, MPI_STATUS_IGNORE);
            if (flag) break;
            nap(&ns);
        }
        MPI_Recv((char *)data + off, (int)n, MPI_BYTE, source, TAG_DATA, g_comm, MPI_STATUS_IGNORE);
    }
}

/* A header and its payload. */
static void send_message(int tag, const int64_t *head, int n_head, const void *data, size_t size, int dest) {
    MPI_Send(head, n_head, MPI_INT64_T, dest, tag, g_comm);
    send_bytes(data, size, dest);
}

/* ---- rank 0 during a map: the main thread computes, a thread answers the other ranks ---- */

typedef struct arrival {
    struct arrival *next;
    int unit, rank;
    up_status status;
    void *data;
    size_t size;
} arrival;

static struct {
    const up_dist_job *job;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int next;              /* the next unit to hand out */
    int workers_active;    /* ranks not yet told "no more" */
    arrival *head, *tail;  /* results waiting for the main thread */
    up_status failed;      /* the first failure, or UP_OK */
    up_error ferr;
    int in_map;
} M = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* Under M.mu: the next unit to hand out, or -1. */
static int claim_unit(void) {
    if (M.failed || M.next >= g_limit) return -1;
    return M.next++;
}

/* Under M.mu: records the map's first failure, naming where it happened. */
static void fail_locked(up_status st, int rank, const char *msg) {
    if (M.failed) return;
    M.failed = st;
    up_error_set(&M.ferr, st, "rank %d on host %s: %s", rank, up_dist_host(rank), msg);
}

static void *dispatcher(void *unused) {
    (void)unused;
    long ns = 50000;
    for (;;) {
        pthread_mutex_lock(&M.mu);
        const int active = M.workers_active;
        pthread_mutex_unlock(&M.mu);
        if (!active) break;
        int flag = 0;
        MPI_Status s;
        MPI_Iprobe(MPI_ANY_SOURCE, TAG_RESULT, g_comm, &flag, &s);
        if (!flag) {
            nap(&ns);
            continue;
        }
        ns = 50000;
        const int src = s.MPI_SOURCE;
        int64_t head[3];
        MPI_Recv(head, 3, MPI_INT64_T, src, TAG_RESULT, g_comm, MPI_STATUS_IGNORE);
        arrival *a = NULL;
        if (head[0] >= 0) {
            a = calloc(1, sizeof *a);
            void *data = head[2] > 0 ? malloc((size_t)head[2]) : NULL;
            if (!a || (head[2] > 0 && !data)) {
                /* The bytes are on their way and the other ranks wait on this one. */
                up_dist_out_of_memory("a work unit's result from another rank");
            } else {
                recv_bytes(data, (size_t)head[2], src);
                *a = (arrival){NULL, (int)head[0], src, (up_status)head[1], data, (size_t)head[2]};
            }
        }
        pthread_mutex_lock(&M.mu);
        if (a && a->status) { /* a failed unit: no more units for anyone, from now on */
            char msg[sizeof M.ferr.msg];
            snprintf(msg, sizeof msg, "%.*s", (int)a->size, a->data ? (const char *)a->data : "");
            fail_locked(a->status, a->rank, msg);
            free(a->data), free(a), a = NULL;
        }
        if (a) {
            if (M.tail) M.tail->next = a;
            else M.head = a;
            M.tail = a;
            g_stats.bytes += (double)a->size;
        }
        const int64_t unit = claim_unit();
        if (unit < 0) M.workers_active--;
        pthread_cond_broadcast(&M.cv);
        pthread_mutex_unlock(&M.mu);
        MPI_Send(&unit, 1, MPI_INT64_T, src, TAG_UNIT, g_comm);
    }
    return NULL;
}

/* Main thread of rank 0: hands the queued results to arrived. */
static void deliver(void) {
    for (;;) {
        pthread_mutex_lock(&M.mu);
        arrival *a = M.head;
        if (a) {
            M.head = a->next;
            if (!M.head) M.tail = NULL;
        }
        const up_status failed = M.failed;
        pthread_mutex_unlock(&M.mu);
        if (!a) return;
        if (!failed && a->unit < g_limit) {
            up_error e = {0};
            up_status st = M.job->arrived(a->unit, a->data, a->size, M.job->user, &e);
            g_stats.units++, g_stats.units_remote++;
            if (st) {
                pthread_mutex_lock(&M.mu);
                fail_locked(st, 0, e.msg);
                pthread_mutex_unlock(&M.mu);
            }
        }
        free(a->data);
        free(a);
    }
}

void up_dist_limit(int n) {
    pthread_mutex_lock(&M.mu);
    if (n < g_limit) g_limit = n;
    pthread_mutex_unlock(&M.mu);
}

void up_dist_service(void) {
    if (M.in_map && g_rank == 0 && g_size > 1) deliver();
}

static up_status map_root(const up_dist_job *job, up_error *err) {
    M.job = job;
    M.next = 0;
    M.workers_active = g_size - 1;
    M.head = M.tail = NULL;
    M.failed = UP_OK;
    M.ferr.msg[0] = 0;
    M.in_map = 1;
    pthread_t th;
    if (pthread_create(&th, NULL, dispatcher, NULL)) {
        M.in_map = 0;
        return up_error_set(err, UP_ERR_NOMEM, "dist: cannot start the dispatcher thread");
    }
    for (;;) {
        deliver();
        pthread_mutex_lock(&M.mu);
        const int unit = claim_unit();
        pthread_mutex_unlock(&M.mu);
        if (unit < 0) break;
        up_dist_bytes out = {0};
        up_error e = {0};
        up_status st = job->compute(unit, job->user, &out, &e);
        deliver();
        if (!st && unit < g_limit) {
            pthread_mutex_lock(&M.mu);
            const up_status failed = M.failed;
            pthread_mutex_unlock(&M.mu);
            if (!failed) {
                st = job->arrived(unit, out.data, out.size, job->user, &e);
                g_stats.units++;
            }
        }
        free(out.data);
        if (st) {
            pthread_mutex_lock(&M.mu);
            fail_locked(st, 0, e.msg);
            pthread_mutex_unlock(&M.mu);
        }
    }
    /* Wait for the other ranks' last units, delivering them as they come. */
    for (;;) {
        pthread_mutex_lock(&M.mu);
        const int active = M.workers_active, queued = M.head != NULL;
        if (active && !queued) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100000000;
            if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
            pthread_cond_timedwait(&M.cv, &M.mu, &ts);
        }
        pthread_mutex_unlock(&M.mu);
        deliver();
        if (!active) break;
    }
    pthread_join(th, NULL);
    deliver();
    M.in_map = 0;
    /* Everyone learns the outcome. */
    const size_t len = M.failed ? strlen(M.ferr.msg) : 0;
    const int64_t head[2] = {M.failed, (int64_t)len};
    for (int r = 1; r < g_size; r++) send_message(TAG_FINAL, head, 2, M.ferr.msg, len, r);
    if (M.failed) return up_error_set(err, M.failed, "%s", M.ferr.msg);
    return UP_OK;
}

static up_status map_worker(const up_dist_job *job, up_error *err) {
    int64_t head[3] = {-1, 0, 0};
    MPI_Send(head, 3, MPI_INT64_T, 0, TAG_RESULT, g_comm);
    for (;;) {
        MPI_Status s;
        wait_message(0, TAG_UNIT, &s);
        int64_t unit;
        MPI_Recv(&unit, 1, MPI_INT64_T, 0, TAG_UNIT, g_comm, MPI_STATUS_IGNORE);
        if (unit < 0) break;
        up_dist_bytes out = {0};
        up_error e = {0};
        up_status st = job->compute((int)unit, job->user, &out, &e);
        if (st) {
            free(out.data);
            out.size = strlen(e.msg);
            out.data = NULL;
            head[0] = unit, head[1] = st, head[2] = (int64_t)out.size;
            send_message(TAG_RESULT, head, 3, e.msg, out.size, 0);
        } else {
            head[0] = unit, head[1] = 0, head[2] = (int64_t)out.size;
            send_message(TAG_RESULT, head, 3, out.data, out.size, 0);
            g_stats.units_remote++, g_stats.bytes += (double)out.size;
        }
        free(out.data);
    }
    MPI_Status s;
    wait_message(0, TAG_FINAL, &s);
    int64_t fin[2];
    MPI_Recv(fin, 2, MPI_INT64_T, 0, TAG_FINAL, g_comm, MPI_STATUS_IGNORE);
    char msg[sizeof err->msg];
    const size_t n = (size_t)fin[1] < sizeof msg - 1 ? (size_t)fin[1] : sizeof msg - 1;
    char *buf = fin[1] > 0 ? malloc((size_t)fin[1]) : NULL;
    if (fin[1] > 0) {
        if (!buf) up_dist_out_of_memory("a map's final message");
        recv_bytes(buf, (size_t)fin[1], 0);
        memcpy(msg, buf, n);
    }
    msg[n] = 0;
    free(buf);
    if (fin[0]) return up_error_set(err, (up_status)fin[0], "%s", msg);
    return UP_OK;
}

up_status up_dist_map(const up_dist_job *job, up_error *err) {
    const double t0 = up_clock_seconds();
    memset(&g_stats, 0, sizeof g_stats);
    g_limit = job->n_units;
    up_status st;
    if (g_size == 1) st = map_local(job, err);
    else if (g_rank == 0) st = map_root(job, err);
    else st = map_worker(job, err);
    g_stats.seconds = up_clock_seconds() - t0;
    return g_size > 1 ? shared(st, err) : st;
}

/* A binomial tree from rank 0: in round k (mask = 2^k) every rank below mask that has the
 * bytes sends them to rank + mask, so N ranks are reached in ceil(log2 N) rounds and rank 0
 * sends ceil(log2 N) copies, not N - 1. */
up_status up_dist_share(void **data, size_t *size, up_error *err) {
    if (g_size == 1) return UP_OK;
    void *buf = g_rank == 0 ? *data : NULL;
    int64_t head = g_rank == 0 ? (int64_t)*size : 0;
    for (int mask = 1; mask < g_size; mask <<= 1) {
        if (g_rank < mask) {
            if (g_rank + mask < g_size) send_message(TAG_SHARE, &head, 1, buf, (size_t)head, g_rank + mask);
        } else if (g_rank < 2 * mask) {
            const int from = g_rank - mask;
            MPI_Status s;
            wait_message(from, TAG_SHARE, &s);
            MPI_Recv(&head, 1, MPI_INT64_T, from, TAG_SHARE, g_comm, MPI_STATUS_IGNORE);
            buf = head > 0 ? malloc((size_t)head) : NULL;
            if (head > 0 && !buf) up_dist_out_of_memory("bytes shared by rank 0"); /* the others wait on it */
            recv_bytes(buf, (size_t)head, from);
        }
    }
    if (g_rank != 0) *data = buf, *size = (size_t)head;
    (void)err;
    return UP_OK;
}

up_status up_dist_agree(up_status st, up_error *err) {
    if (g_size == 1) return st;
    char *msg = NULL;
    size_t len = 0;
    if (g_rank == 0) {
        up_error first = {0};
        if (st) up_error_set(&first, st, "rank 0 on host %s: %s", up_dist_host(0), err ? err->msg : "failed");
        for (int r = 1; r < g_size; r++) {
            MPI_Status s;
            wait_message(r, TAG_AGREE, &s);
            int64_t head[2];
            MPI_Recv(head, 2, MPI_INT64_T, r, TAG_AGREE, g_comm, MPI_STATUS_IGNORE);
            char *m = head[1] > 0 ? calloc(1, (size_t)head[1] + 1) : NULL;
            if (head[1] > 0 && !m) up_dist_out_of_memory("another rank's error message");
            recv_bytes(m, (size_t)head[1], r);
            if (head[0] && !first.status)
                up_error_set(&first, (up_status)head[0], "rank %d on host %s: %s", r, up_dist_host(r), m ? m : "failed");
            free(m);
        }
        char buf[sizeof first.msg + 16];
        len = (size_t)snprintf(buf, sizeof buf, "%d %s", (int)first.status, first.msg);
        msg = buf;
        void *p = msg;
        up_dist_share(&p, &len, err);
        if (first.status && err) *err = first;
        return shared(first.status, &first);
    }
    const char *mine = st && err ? err->msg : "";
    const int64_t head[2] = {st, (int64_t)strlen(mine)};
    send_message(TAG_AGREE, head, 2, mine, strlen(mine), 0);
    void *p = NULL;
    up_dist_share(&p, &len, err);
    msg = p;
    int status = 0, off = 0;
    char *text = calloc(1, len + 1);
    if (!text) up_dist_out_of_memory("the agreed error message");
    memcpy(text, msg, len);
    free(msg);
    sscanf(text, "%d %n", &status, &off);
    up_error mine_err = {0};
    if (status) up_error_set(&mine_err, (up_status)status, "%s", text + off);
    if (status && err) *err = mine_err;
    free(text);
    return shared((up_status)status, &mine_err);
}

#endif /* UP_HAVE_MPI */
