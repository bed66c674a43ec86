/* pool.h - the fixed pool of worker threads and its bounded waiting queue. */
#ifndef POOLD_POOL_H
#define POOLD_POOL_H

#include <stdbool.h>
#include <stdint.h>

struct pool;

/* Embedded in whatever the pool runs (a connection). */
struct pool_item {
	struct pool_item *next;
	bool fresh; /* a new connection, counted against queue_max */
};

struct pool_stats {
	unsigned threads, busy, idle, waiting;
	uint64_t done; /* items run so far */
};

typedef void (*pool_fn)(struct pool_item *item, void *ctx, void **scratch);

int pool_new(unsigned threads, unsigned queue_max, pool_fn fn, void *ctx, struct pool **ret);
enum { POOL_FRESH = 1, POOL_NOWAKE = 2 };

int pool_submit(struct pool *p, struct pool_item *item, unsigned flags);
void pool_wake(struct pool *p);
bool pool_run_alone(struct pool *p, void **scratch);
bool pool_has_waiting(struct pool *p);
int pool_resize(struct pool *p, unsigned threads, unsigned queue_max);
void pool_stats(struct pool *p, struct pool_stats *ret);
struct pool *pool_free(struct pool *p);

#endif
