/* modules: pool util */
#include "pool.h"
#include "tests.h"
#include "util.h"

#include <pthread.h>
#include <stdatomic.h>

struct item {
	struct pool_item it;
	int value;
	pthread_t ran_on;
};

struct ctx {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool gate_open;  /* workers block on the gate until opened */
	bool gate_first; /* only item 0 blocks on it */
	int order[64];
	atomic_int n;
	atomic_int running;
	atomic_int max_running;
};

static void work(struct pool_item *it, void *p, void **scratch)
{
	struct ctx *c = p;
	int now = atomic_fetch_add(&c->running, 1) + 1, max = atomic_load(&c->max_running);

	while (now > max && !atomic_compare_exchange_weak(&c->max_running, &max, now))
		;
	pthread_mutex_lock(&c->lock);
	while (!c->gate_open && (!c->gate_first || ((struct item *)it)->value == 0))
		pthread_cond_wait(&c->cond, &c->lock);
	pthread_mutex_unlock(&c->lock);
	/* The scratch pointer persists per worker across items. */
	if (!*scratch)
		*scratch = malloc(8);
	((struct item *)it)->ran_on = pthread_self();
	c->order[atomic_fetch_add(&c->n, 1)] = ((struct item *)it)->value;
	atomic_fetch_sub(&c->running, 1);
}

static void open_gate(struct ctx *c)
{
	pthread_mutex_lock(&c->lock);
	c->gate_open = true;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

static void wait_done(struct pool *p, uint64_t n)
{
	struct pool_stats st;

	for (int i = 0; i < 5000; i++) {
		pool_stats(p, &st);
		if (st.done >= n)
			return;
		usleep(1000);
	}
}

/* Until n workers are inside work() (held at a closed gate). */
static void wait_running(struct ctx *c, int n)
{
	for (int i = 0; i < 5000 && atomic_load(&c->running) < n; i++)
		usleep(1000);
}

static struct ctx *ctx_new(bool open)
{
	struct ctx *c = calloc(1, sizeof(*c));

	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	c->gate_open = open;
	return c;
}

TEST(fifo_order_with_one_worker)
{
	struct ctx *c = ctx_new(true);
	struct item items[10];
	struct pool *p;

	ASSERT_EQ(pool_new(1, 100, work, c, &p), 0);
	for (int i = 0; i < 10; i++) {
		items[i].value = i;
		ASSERT_EQ(pool_submit(p, &items[i].it, POOL_FRESH), 0);
	}
	wait_done(p, 10);
	p = pool_free(p);
	ASSERT(p == NULL);
	ASSERT_EQ(atomic_load(&c->n), 10);
	for (int i = 0; i < 10; i++)
		ASSERT_EQ(c->order[i], i);
	free(c);
}

TEST(queue_max_refuses_fresh_items_only)
{
	struct ctx *c = ctx_new(false);
	struct item items[6];
	struct pool_stats st;
	struct pool *p;

	ASSERT_EQ(pool_new(1, 2, work, c, &p), 0);
	items[0].value = 0;
	ASSERT_EQ(pool_submit(p, &items[0].it, POOL_FRESH), 0);
	/* Wait until the worker holds item 0 at the gate. */
	wait_running(c, 1);
	ASSERT_EQ(atomic_load(&c->running), 1);
	for (int i = 1; i < 3; i++) {
		items[i].value = i;
		ASSERT_EQ(pool_submit(p, &items[i].it, POOL_FRESH), 0);
	}
	items[3].value = 3;
	ASSERT_EQ(pool_submit(p, &items[3].it, POOL_FRESH), -EBUSY);
	/* Work on admitted connections is never refused. */
	items[4].value = 4;
	ASSERT_EQ(pool_submit(p, &items[4].it, 0), 0);
	pool_stats(p, &st);
	ASSERT_EQ(st.threads, 1);
	ASSERT_EQ(st.busy, 1);
	ASSERT_EQ(st.waiting, 3);
	open_gate(c);
	wait_done(p, 4);
	pool_free(p);
	ASSERT_EQ(atomic_load(&c->n), 4);
	free(c);
}

/* With idle workers, a burst queued before any of them wakes (POOL_NOWAKE,
 * as the reactor's accept loop does) is not in the waiting room: only what
 * the idle workers cannot take counts against queue_max. */
TEST(queue_max_counts_only_clients_no_idle_worker_takes)
{
	struct ctx *c = ctx_new(false);
	struct item items[7];
	struct pool_stats st;
	struct pool *p;

	ASSERT_EQ(pool_new(4, 1, work, c, &p), 0);
	for (int i = 0; i < 5000; i++) {
		pool_stats(p, &st);
		if (st.idle == 4)
			break;
		usleep(1000);
	}
	ASSERT_EQ(st.idle, 4);
	for (int i = 0; i < 5; i++) {
		items[i].value = i;
		ASSERT_EQ(pool_submit(p, &items[i].it, POOL_FRESH | POOL_NOWAKE), 0);
	}
	items[5].value = 5;
	ASSERT_EQ(pool_submit(p, &items[5].it, POOL_FRESH | POOL_NOWAKE), -EBUSY);
	/* Work on an admitted connection takes an idle worker's place. */
	items[6].value = 6;
	ASSERT_EQ(pool_submit(p, &items[6].it, POOL_NOWAKE), 0);
	pool_wake(p);
	wait_running(c, 4);
	open_gate(c);
	wait_done(p, 6);
	pool_free(p);
	ASSERT_EQ(atomic_load(&c->n), 6);
	free(c);
}

TEST(resize_grows_and_shrinks)
{
	struct ctx *c = ctx_new(false);
	struct item items[8];
	struct pool_stats st;
	struct pool *p;

	ASSERT_EQ(pool_new(2, 100, work, c, &p), 0);
	ASSERT_EQ(pool_resize(p, 8, 100), 0);
	for (int i = 0; i < 8; i++) {
		items[i].value = i;
		ASSERT_EQ(pool_submit(p, &items[i].it, POOL_FRESH), 0);
	}
	wait_running(c, 8);
	ASSERT_EQ(atomic_load(&c->max_running), 8);
	open_gate(c);
	wait_done(p, 8);
	ASSERT_EQ(pool_resize(p, 1, 100), 0);
	pool_stats(p, &st);
	ASSERT_EQ(st.threads, 1);
	ASSERT_EQ(pool_resize(p, 0, 100), -ERANGE);
	ASSERT_EQ(pool_resize(p, 1025, 100), -ERANGE);
	/* Still works after shrinking. */
	items[0].value = 42;
	ASSERT_EQ(pool_submit(p, &items[0].it, POOL_FRESH), 0);
	wait_done(p, 9);
	pool_free(p);
	ASSERT_EQ(c->order[8], 42);
	free(c);
}

TEST(nowake_items_run_after_pool_wake)
{
	struct ctx *c = ctx_new(true);
	struct item items[4];
	struct pool_stats st;
	struct pool *p;

	ASSERT_EQ(pool_new(2, 100, work, c, &p), 0);
	/* Let both workers go to sleep first. */
	usleep(50000);
	for (int i = 0; i < 4; i++) {
		items[i].value = i;
		ASSERT_EQ(pool_submit(p, &items[i].it, POOL_FRESH | POOL_NOWAKE), 0);
	}
	usleep(50000);
	pool_stats(p, &st);
	ASSERT_EQ(st.done, 0);
	ASSERT_EQ(st.waiting, 4);
	pool_wake(p);
	wait_done(p, 4);
	pool_free(p);
	ASSERT_EQ(atomic_load(&c->n), 4);
	free(c);
}

TEST(has_waiting_tells_a_worker_whether_others_wait)
{
	struct ctx *c = ctx_new(false);
	struct item items[2];
	struct pool *p;

	ASSERT_EQ(pool_new(1, 100, work, c, &p), 0);
	ASSERT(!pool_has_waiting(p));
	items[0].value = 0;
	ASSERT_EQ(pool_submit(p, &items[0].it, POOL_FRESH), 0);
	wait_running(c, 1);
	/* The worker holds item 0: nothing else waits. */
	ASSERT(!pool_has_waiting(p));
	items[1].value = 1;
	ASSERT_EQ(pool_submit(p, &items[1].it, 0), 0);
	ASSERT(pool_has_waiting(p));
	open_gate(c);
	wait_done(p, 2);
	ASSERT(!pool_has_waiting(p));
	pool_free(p);
	ASSERT_EQ(atomic_load(&c->n), 2);
	free(c);
}

/* Until the pool's only worker is back asleep: busy drops to 0 under the
 * lock, which the worker then keeps until it waits on the condition. */
static void wait_idle(struct pool *p, uint64_t done)
{
	struct pool_stats st;

	wait_done(p, done);
	for (int i = 0; i < 5000; i++) {
		pool_stats(p, &st);
		if (st.busy == 0)
			return;
		usleep(1000);
	}
}

TEST(run_alone_runs_a_lone_item_in_the_caller_only_when_no_worker_is_busy)
{
	struct ctx *c = ctx_new(false);
	struct item items[5] = { { .value = 0 }, { .value = 1 }, { .value = 2 }, { .value = 3 }, { .value = 4 } };
	void *scratch = NULL;
	struct pool *p;

	c->gate_first = true; /* a wrong run_alone() fails the test, not hangs it */
	ASSERT_EQ(pool_new(1, 100, work, c, &p), 0);
	ASSERT(!pool_run_alone(p, &scratch)); /* nothing queued */

	/* The worker is busy with item 0: item 1 waits for it. */
	ASSERT_EQ(pool_submit(p, &items[0].it, POOL_FRESH), 0);
	wait_running(c, 1);
	ASSERT_EQ(pool_submit(p, &items[1].it, POOL_NOWAKE), 0);
	ASSERT(!pool_run_alone(p, &scratch));
	open_gate(c);
	wait_idle(p, 2);
	ASSERT(pthread_equal(items[1].ran_on, items[0].ran_on));

	/* The worker asleep and one item queued: the caller runs it. */
	ASSERT_EQ(pool_submit(p, &items[2].it, POOL_FRESH | POOL_NOWAKE), 0);
	ASSERT(pool_run_alone(p, &scratch));
	ASSERT(pthread_equal(items[2].ran_on, pthread_self()));
	ASSERT(!pool_has_waiting(p));
	ASSERT(scratch != NULL); /* the caller's own scratch */

	/* Two queued: they go to the pool. */
	ASSERT_EQ(pool_submit(p, &items[3].it, POOL_NOWAKE), 0);
	ASSERT_EQ(pool_submit(p, &items[4].it, POOL_NOWAKE), 0);
	ASSERT(!pool_run_alone(p, &scratch));
	pool_wake(p);
	wait_done(p, 5);
	ASSERT(!pthread_equal(items[3].ran_on, pthread_self()));
	ASSERT(!pthread_equal(items[4].ran_on, pthread_self()));
	pool_free(p);
	ASSERT_EQ(atomic_load(&c->n), 5);
	ASSERT_EQ(atomic_load(&c->max_running), 1);
	for (int i = 0; i < 5; i++)
		ASSERT_EQ(c->order[i], i);
	free(scratch);
	free(c);
}

TEST(free_null_is_safe)
{
	ASSERT(pool_free(NULL) == NULL);
}
