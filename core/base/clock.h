/* clock — the one monotonic clock the core and the host read for rates, ETAs and timings.
 *
 * up_clock_seconds(): seconds on CLOCK_MONOTONIC (an arbitrary origin, never goes back), as a
 * double. Differences of two readings are elapsed wall time; the value itself means nothing. */
#ifndef UP_CLOCK_H
#define UP_CLOCK_H

double up_clock_seconds(void);

#endif
