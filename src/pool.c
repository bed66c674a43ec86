/* pool.c - N worker threads fed from one FIFO, after libuv's threadpool.c:
 * one mutex, one condition variable, waits inside while(), shutdown by a flag
 * every worker sees, then join all; no pthread_cancel. Items never block in a
 * worker (sessions park in the reactor instead), so a worker is always about
 * to take the next item. The queue is intrusive, so submit never allocates;
 * only fresh connections count against queue_max, work on connections already
 * admitted is always taken. Resizing retires the highest-numbered workers;
 * each worker's scratch buffer (pool_fn's third argument) is freed as it
 * exits. Signals stay blocked in workers: they inherit the reactor's mask.
 * pool_run_alone() lets the submitter run a lone item itself while every
 * worker sleeps, instead of waking one for it. */
#include "pool.h"
#include "util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define POOL_THREADS_MAX 1024

struct worker {
	struct pool *pool;
	unsigned index;
	pthread_t thread;
};

struct pool {
	pool_fn fn;
	void *ctx;

	/* lock guards everything below it. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct pool_item *head, *tail;
	atomic_uint waiting; /* items in the queue; read without the lock by pool_has_waiting() */
	unsigned fresh;      /* of which fresh connections */
	unsigned queue_max;
	unsigned target; /* workers with index >= target exit */
	unsigned idle;   /* workers blocked in cond_wait */
	unsigned busy;
	bool shutdown;

	atomic_uint_fast64_t done;
	unsigned nworkers; /* slots in use in workers[]; reactor thread only */
	struct worker workers[POOL_THREADS_MAX];
};

/* Takes the head of the queue; with the lock held, the queue not empty. */
static struct pool_item *take_locked(struct pool *p)
{
	struct pool_item *it = p->head;

	p->head = it->next;
	if (!p->head)
		p->tail = NULL;
	atomic_fetch_sub_explicit(&p->waiting, 1, memory_order_relaxed);
	if (it->fresh)
		p->fresh--;
	p->busy++;
	it->next = NULL;
	return it;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct pool *p = w->pool;
	void *scratch = NULL;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct pool_item *it;

		while (!p->head && !p->shutdown && w->index < p->target) {
			p->idle++;
			pthread_cond_wait(&p->cond, &p->lock);
			p->idle--;
		}
		if (p->shutdown || w->index >= p->target)
			break;
		it = take_locked(p);
		pthread_mutex_unlock(&p->lock);

		p->fn(it, p->ctx, &scratch);
		atomic_fetch_add_explicit(&p->done, 1, memory_order_relaxed);

		pthread_mutex_lock(&p->lock);
		p->busy--;
	}
	pthread_mutex_unlock(&p->lock);
	free(scratch);
	return NULL;
}

int pool_new(unsigned threads, unsigned queue_max, pool_fn fn, void *ctx, struct pool **ret)
{
	struct pool *p = calloc(1, sizeof(*p));
	int r;

	if (!p)
		return -ENOMEM;
	p->fn = fn;
	p->ctx = ctx;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	r = pool_resize(p, threads, queue_max);
	if (r < 0) {
		pool_free(p);
		return r;
	}
	*ret = p;
	return 0;
}

/* Fresh connections queued beyond what the idle workers take at once: the
 * ones that really wait for a busy worker. Idle workers take queued items in
 * order, work on admitted connections included; an item queued with
 * POOL_NOWAKE still counts its sleeping worker as idle until pool_wake(). */
static unsigned fresh_waiting_locked(const struct pool *p)
{
	unsigned others = atomic_load_explicit(&p->waiting, memory_order_relaxed) - p->fresh;
	unsigned free_idle = p->idle > others ? p->idle - others : 0;

	return p->fresh > free_idle ? p->fresh - free_idle : 0;
}

/* Queues an item. A fresh connection (POOL_FRESH) is refused with -EBUSY
 * when queue_max fresh ones already wait for a busy worker (with N idle
 * workers, N more start at once); the caller applies the overload policy.
 * POOL_NOWAKE leaves waking a worker to pool_wake(), so a caller queuing
 * many items pays one wake-up for all of them. */
int pool_submit(struct pool *p, struct pool_item *item, unsigned flags)
{
	bool fresh = flags & POOL_FRESH, wake;

	pthread_mutex_lock(&p->lock);
	if (p->shutdown || (fresh && fresh_waiting_locked(p) >= p->queue_max)) {
		pthread_mutex_unlock(&p->lock);
		return -EBUSY;
	}
	item->next = NULL;
	item->fresh = fresh;
	if (p->tail)
		p->tail->next = item;
	else
		p->head = item;
	p->tail = item;
	atomic_fetch_add_explicit(&p->waiting, 1, memory_order_relaxed);
	p->fresh += fresh;
	/* Wake a sleeper only if there is one: a busy pool takes the item
	 * on its next loop without a futex call. */
	wake = p->idle && !(flags & POOL_NOWAKE);
	pthread_mutex_unlock(&p->lock);
	if (wake)
		pthread_cond_signal(&p->cond);
	return 0;
}

/* Wakes as many idle workers as there are items waiting. The signals go out
 * after the unlock: a worker woken while the lock is still held would only
 * block on it again (on one CPU, a switch there and back). Items are queued
 * under the lock and sleepers re-check the queue, so no wake-up is lost. */
void pool_wake(struct pool *p)
{
	unsigned n;

	pthread_mutex_lock(&p->lock);
	n = atomic_load_explicit(&p->waiting, memory_order_relaxed);
	if (n > p->idle)
		n = p->idle;
	pthread_mutex_unlock(&p->lock);
	while (n--)
		pthread_cond_signal(&p->cond);
}

/* Runs the one queued item in the calling thread when no worker runs one.
 * Handing it to a sleeping worker would cost a wake-up, a sleep and a
 * context switch each way: on a busy CPU more than the step itself. Only a
 * lone item with every worker idle, so steps still run at most `threads` at
 * once (the step cannot queue more: nothing else waits) and a batch of two
 * or more still spreads over the pool. Returns whether it ran one. */
bool pool_run_alone(struct pool *p, void **scratch)
{
	struct pool_item *it = NULL;

	pthread_mutex_lock(&p->lock);
	if (p->head && !p->head->next && p->busy == 0 && !p->shutdown)
		it = take_locked(p);
	pthread_mutex_unlock(&p->lock);
	if (!it)
		return false;

	p->fn(it, p->ctx, scratch);
	atomic_fetch_add_explicit(&p->done, 1, memory_order_relaxed);

	pthread_mutex_lock(&p->lock);
	p->busy--;
	pthread_mutex_unlock(&p->lock);
	return true;
}

/* Whether other work is queued: a hint (read without the lock) for a worker
 * deciding between requeuing a connection and parking it. */
bool pool_has_waiting(struct pool *p)
{
	return atomic_load_explicit(&p->waiting, memory_order_relaxed) > 0;
}

/* Grows or shrinks the pool; from the thread that owns the pool only.
 * Retiring workers finish the item they run; their queue is taken by the rest. */
int pool_resize(struct pool *p, unsigned threads, unsigned queue_max)
{
	pthread_attr_t attr;
	int r = 0;

	if (threads < 1 || threads > POOL_THREADS_MAX)
		return -ERANGE;
	pthread_mutex_lock(&p->lock);
	p->queue_max = queue_max;
	p->target = threads;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);

	while (p->nworkers > threads) {
		struct worker *w = &p->workers[--p->nworkers];

		pthread_join(w->thread, NULL);
	}
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 512 * 1024);
	while (p->nworkers < threads) {
		struct worker *w = &p->workers[p->nworkers];

		w->pool = p;
		w->index = p->nworkers;
		r = -pthread_create(&w->thread, &attr, worker_main, w);
		if (r < 0)
			break;
		p->nworkers++;
	}
	pthread_attr_destroy(&attr);
	if (r < 0) {
		pthread_mutex_lock(&p->lock);
		p->target = p->nworkers;
		pthread_mutex_unlock(&p->lock);
	}
	return r;
}

void pool_stats(struct pool *p, struct pool_stats *ret)
{
	pthread_mutex_lock(&p->lock);
	ret->threads = p->target;
	ret->busy = p->busy;
	ret->idle = p->idle;
	ret->waiting = atomic_load_explicit(&p->waiting, memory_order_relaxed);
	pthread_mutex_unlock(&p->lock);
	ret->done = atomic_load_explicit(&p->done, memory_order_relaxed);
}

/* Stops every worker after its current item and joins them. Items still
 * queued are not run: the caller owns them (the reactor finds its conns in
 * its registry and closes them). */
struct pool *pool_free(struct pool *p)
{
	if (!p)
		return NULL;
	pthread_mutex_lock(&p->lock);
	p->shutdown = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	while (p->nworkers > 0)
		pthread_join(p->workers[--p->nworkers].thread, NULL);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
	return NULL;
}
