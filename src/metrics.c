/* metrics.c - the Prometheus scrape endpoint (see metrics.h). */
#include "metrics.h"

#include <stdlib.h>

/* From a banner (a millisecond) to a session that runs into session_timeout
 * (60 s by default) or lingers (30 s more). */
const uint64_t metrics_duration_bounds_usec[METRICS_DURATION_BUCKETS] = {
	1000, 5000, 10000, 50000, 100000, 500000, 1000000, 5000000, 10000000, 30000000, 60000000, 300000000,
};

void metrics_snapshot_free(struct metrics_snapshot *s)
{
	free(s->listeners);
	s->listeners = NULL;
	s->nlisteners = 0;
}
