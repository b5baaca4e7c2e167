/* dist: the work-unit map's contract, as one process (ctest) and as several ranks (the same
 * program under mpirun, tests/mpi.test.cmake: mpi_dist_units). Every unit below the limit is
 * computed exactly once and arrives once on rank 0; a limit set in arrived stops the handing
 * out and drops later results; an error in a unit, wherever it ran, comes back to every rank
 * with the same status and message, naming the rank and host when there are several; share
 * (and share_into) and agree give every rank rank 0's bytes and the first failure. */
#include "testutil.h"

#include <stdlib.h>

#include "dist/dist.h"

#define N_UNITS 23

typedef struct job_state {
    int computed_here[N_UNITS]; /* this rank's compute calls per unit */
    int arrived[N_UNITS];       /* rank 0: arrivals per unit */
    int order[N_UNITS], n_order;
    int stop_at;                /* arrived lowers the limit past this unit (-1: never) */
    int fail_unit;              /* compute fails on this unit (-1: never) */
    int fail_arrival;           /* arrived fails on this unit (-1: never) */
} job_state;

static up_status compute(int unit, void *user, up_dist_bytes *out, up_error *err) {
    job_state *s = user;
    s->computed_here[unit]++;
    if (unit == s->fail_unit) return up_error_set(err, UP_ERR_INVALID, "unit %d failed on purpose", unit);
    int *v = malloc(2 * sizeof *v);
    if (!v) return up_error_set(err, UP_ERR_NOMEM, "out of memory");
    v[0] = unit, v[1] = unit * unit; /* the result depends on the unit only */
    out->data = v, out->size = 2 * sizeof *v;
    return UP_OK;
}

static up_status arrived(int unit, const void *data, size_t size, void *user, up_error *err) {
    job_state *s = user;
    const int *v = data;
    /* One process passes no bytes when compute kept its result in place; ours always sends. */
    assert_int_equal(size, 2 * sizeof *v);
    assert_int_equal(v[0], unit);
    assert_int_equal(v[1], unit * unit);
    s->arrived[unit]++;
    s->order[s->n_order++] = unit;
    if (unit == s->fail_arrival) return up_error_set(err, UP_ERR_FORMAT, "arrival %d refused on purpose", unit);
    if (s->stop_at >= 0 && unit == s->stop_at) up_dist_limit(s->stop_at + 1);
    return UP_OK;
}

static job_state fresh(void) {
    job_state s;
    memset(&s, 0, sizeof s);
    s.stop_at = s.fail_unit = s.fail_arrival = -1;
    return s;
}

static void test_every_unit_once(void **state) {
    job_state s = fresh();
    const up_dist_job job = {N_UNITS, compute, arrived, &s};
    up_error e = {0};
    assert_int_equal(up_dist_map(&job, &e), UP_OK);
    int here = 0;
    for (int u = 0; u < N_UNITS; u++) here += s.computed_here[u];
    if (up_dist_rank() == 0) {
        for (int u = 0; u < N_UNITS; u++) assert_int_equal(s.arrived[u], 1);
        const up_dist_stats st = up_dist_last_stats();
        assert_int_equal(st.units, N_UNITS);
        if (up_dist_size() == 1) {
            for (int u = 0; u < N_UNITS; u++) assert_int_equal(s.order[u], u); /* in turn */
            assert_int_equal(st.units_remote, 0);
        }
        assert_int_equal(here + st.units_remote, N_UNITS); /* what rank 0 did not, the others did */
    }
}

static void test_limit_stops_and_drops(void **state) {
    job_state s = fresh();
    s.stop_at = 6;
    const up_dist_job job = {N_UNITS, compute, arrived, &s};
    up_error e = {0};
    assert_int_equal(up_dist_map(&job, &e), UP_OK);
    if (up_dist_rank() != 0) return;
    for (int u = 0; u <= 6; u++) assert_int_equal(s.arrived[u], 1);
    for (int u = 7; u < N_UNITS; u++) assert_int_equal(s.arrived[u], 0); /* run beside it, or never */
    if (up_dist_size() == 1)
        for (int u = 7; u < N_UNITS; u++) assert_int_equal(s.computed_here[u], 0);
}

static void test_unit_error_reaches_every_rank(void **state) {
    job_state s = fresh();
    s.fail_unit = 9;
    const up_dist_job job = {N_UNITS, compute, arrived, &s};
    up_error e = {0};
    assert_int_equal(up_dist_map(&job, &e), UP_ERR_INVALID);
    assert_non_null(strstr(e.msg, "unit 9 failed on purpose"));
    if (up_dist_size() > 1) {
        assert_non_null(strstr(e.msg, "on host "));
        assert_string_equal(up_dist_shared_error(), e.msg);
    }
    job_state t = fresh();
    t.fail_arrival = 4;
    const up_dist_job job2 = {N_UNITS, compute, arrived, &t};
    assert_int_equal(up_dist_map(&job2, &e), UP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "arrival 4 refused on purpose"));
    /* The next map still works: nothing of the failed ones is left in flight. */
    job_state u = fresh();
    const up_dist_job job3 = {N_UNITS, compute, arrived, &u};
    assert_int_equal(up_dist_map(&job3, &e), UP_OK);
}

static void test_share_and_agree(void **state) {
    char mine[32];
    snprintf(mine, sizeof mine, "from rank %d", up_dist_rank());
    void *data = mine;
    size_t size = strlen(mine) + 1;
    up_error e = {0};
    assert_int_equal(up_dist_share(&data, &size, &e), UP_OK);
    assert_string_equal(data, "from rank 0");
    if (up_dist_rank() != 0) free(data);
    assert_int_equal(up_dist_agree(UP_OK, &e), UP_OK);
    /* The last rank fails: every rank gets its failure, named. */
    const int last = up_dist_size() - 1;
    up_status st = UP_OK;
    if (up_dist_rank() == last) st = up_error_set(&e, UP_ERR_IO, "cannot open /nowhere/model.safetensors");
    assert_int_equal(up_dist_agree(st, &e), UP_ERR_IO);
    assert_non_null(strstr(e.msg, "/nowhere/model.safetensors"));
    if (up_dist_size() > 1) {
        char want[64];
        snprintf(want, sizeof want, "rank %d on host %s", last, up_dist_host(last));
        assert_non_null(strstr(e.msg, want));
    }
    /* Into an array every rank sizes alike: rank 0's values everywhere. */
    int arr[5];
    for (int i = 0; i < 5; i++) arr[i] = 100 * up_dist_rank() + i;
    assert_int_equal(up_dist_share_into(arr, sizeof arr, "test array", &e), UP_OK);
    for (int i = 0; i < 5; i++) assert_int_equal(arr[i], i);
    /* The empty share: NULL and 0 elsewhere. */
    void *none = NULL;
    size_t zero = 0;
    assert_int_equal(up_dist_share(&none, &zero, &e), UP_OK);
    assert_int_equal(zero, 0);
}

int main(void) {
    up_error e = {0};
    if (up_dist_init(&e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_unit_once),
        cmocka_unit_test(test_limit_stops_and_drops),
        cmocka_unit_test(test_unit_error_reaches_every_rank),
        cmocka_unit_test(test_share_and_agree),
    };
    const int failed = cmocka_run_group_tests(tests, NULL, NULL);
    up_dist_finalize();
    return failed;
}
