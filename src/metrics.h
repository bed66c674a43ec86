/* metrics.h - the Prometheus scrape endpoint (GET /metrics, text format
 * 0.0.4) on the fd systemd passes as `metrics` or on [metrics] address.
 *
 * The split: the reactor owns the counters and fills a snapshot on demand
 * (reactor_metrics(), thread-safe, called from the metrics thread); this
 * module only serves HTTP and renders a snapshot as text. */
#ifndef POOLD_METRICS_H
#define POOLD_METRICS_H

#include "session.h"

#include <stddef.h>
#include <stdint.h>

struct log;
struct metrics;

/* poold_session_duration_seconds: upper bounds of the buckets, in
 * microseconds (the +Inf bucket is the count). */
#define METRICS_DURATION_BUCKETS 12
extern const uint64_t metrics_duration_bounds_usec[METRICS_DURATION_BUCKETS];

/* PROXY headers by outcome (poold_proxy_headers_total{result}). */
enum { PROXY_RESULT_PROXY, PROXY_RESULT_LOCAL, PROXY_RESULT_BAD, PROXY_RESULT_TIMEOUT, PROXY_RESULT_N };

struct metrics_listener {
	const char *name; /* the fds' name, "default" for unnamed fds */
	uint64_t accepted;
	uint64_t refused[REFUSE_N]; /* by enum refusal */
};

struct metrics_snapshot {
	struct metrics_listener *listeners; /* malloc'd by the filler, freed by metrics_snapshot_free() */
	size_t nlisteners;
	unsigned sessions_active; /* open connections (admitted, not yet closed) */
	unsigned parked;          /* waiting for their client in an event loop */
	unsigned queue_waiting;   /* clients in the listen backlogs, not yet accepted */
	unsigned threads_busy, threads_idle;
	uint64_t messages_received, bytes_received, bytes_sent;
	/* Sessions by duration: duration_bucket[i] counts those that took
	 * at most metrics_duration_bounds_usec[i] and more than the bound
	 * before (not cumulative); count and sum cover all of them. */
	uint64_t duration_bucket[METRICS_DURATION_BUCKETS];
	uint64_t duration_count, duration_sum_usec;
	uint64_t log_dropped;
	uint64_t reloads_success, reloads_failure;
	uint64_t last_reload_success_usec; /* CLOCK_REALTIME; the start-up counts as one */
	uint64_t proxy_headers[PROXY_RESULT_N];
};

typedef void (*metrics_collect_fn)(void *ctx, struct metrics_snapshot *s);

void metrics_snapshot_free(struct metrics_snapshot *s);

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4"

/* Serves GET /metrics on each listening fd (borrowed: the caller closes them
 * after metrics_stop()), each from an HTTP thread of its own; collect(ctx, ...)
 * fills the snapshot of each scrape, on that thread. */
int metrics_start(const int *fds, size_t nfds, metrics_collect_fn collect, void *ctx, struct log *log,
		  struct metrics **ret, char *err, size_t errlen);
struct metrics *metrics_stop(struct metrics *m);

/* The scrape body: a snapshot as text format 0.0.4, malloc'd into *ret. */
int metrics_render(const struct metrics_snapshot *s, const char *version, char **ret, size_t *ret_len);
/* The reason label of a refusal (enum refusal): "deny", "max_connections", ... */
const char *metrics_refusal_name(int refusal);

#endif
