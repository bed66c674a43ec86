/* reactor.c - the main thread's event loop and the owner of every connection.
 *
 * DESIGN. One epoll set holds the listening sockets, a signalfd and the parked
 * connections. accept4() makes a conn, the registry counts it against
 * max_connections and per_source, and the pool runs it. A worker runs one
 * session step; when the client is not ready it parks the conn itself with an
 * EPOLLONESHOT re-arm (after one more look from the back of the queue when
 * other work is queued, see reactor_work()), so no worker ever waits on a
 * client, and idle clients cost a struct conn and an fd, not a thread. An
 * event hands the conn back to the pool. When a loop turn queued exactly one
 * conn and every worker sleeps, the reactor runs that step itself
 * (pool_run_alone()): waking a worker would cost more than the step. A
 * periodic sweep closes parked conns whose deadline passed.
 *
 * Threading. Ownership of a conn moves reactor -> pool -> worker (or the
 * reactor, for a lone step) -> epoll -> reactor; only its owner touches it.
 * conn->lock makes "parked" and the epoll re-arm one step, so the sweep never
 * claims a conn a worker still runs.
 * reg_lock guards the registry list, the counts and the per-source table; it
 * nests outside conn->lock and the pool's lock, never inside them.
 * Signals are blocked in every thread (main.c) and read here from a signalfd.
 */
#include "reactor.h"
#include "access.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "pool.h"
#include "session.h"
#include "util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>

#define ACCEPT_BATCH        64                    /* accepts per listener wake-up, for fairness */
#define ACCEPT_PAUSE_USEC   (100 * USEC_PER_MSEC) /* after EMFILE/ENOBUFS */
#define STATUS_USEC         USEC_PER_SEC
#define REFUSE_LOGS_PER_SEC 10
#define TAG_SIGNAL          UINT64_C(1) /* epoll data: odd values are not conns */
#define TAG_LISTENER(i)     ((uint64_t)(i) << 2 | 3)

static const struct {
	const char *name, *text;
} refusals[REFUSE_N] = {
	[REFUSE_DENY] = { "deny", "address denied (deny)" },
	[REFUSE_NOT_ALLOWED] = { "not allowed", "address not in the allow list (not allowed)" },
	[REFUSE_RATE] = { "rate", "too many new connections on this listener (rate)" },
	[REFUSE_PER_SOURCE_RATE] = { "per_source_rate", "too many new connections from this source (per_source_rate)" },
	[REFUSE_MAX_CONNECTIONS] = { "max_connections", "too many connections (max_connections)" },
	[REFUSE_PER_SOURCE] = { "per_source", "too many connections from this source (per_source)" },
	[REFUSE_QUEUE_MAX] = { "queue_max", "all workers busy and the queue is full (queue_max)" },
	[REFUSE_NO_FDS] = { "out of file descriptors", "out of file descriptors" },
	[REFUSE_NO_MEMORY] = { "out of memory", "out of memory" },
	[REFUSE_PROXY_UNTRUSTED] = { "proxy_from", "PROXY header sender not in proxy_from" },
	[REFUSE_PROXY_BAD] = { "proxy header", "bad PROXY header" },
	[REFUSE_PROXY_TIMEOUT] = { "proxy_timeout", "no complete PROXY header within proxy_timeout" },
};

/* Each listening fd: the settings it serves with (from the current config)
 * and its group, the listener whose counts and rate it shares (fds with the
 * same name are one listener). */
struct lstate {
	const struct service *svc;
	uint32_t group;
	int defer_sec;      /* the TCP_DEFER_ACCEPT poold set on it; 0: none */
	struct bucket rate; /* the group's `rate`, in its first fd's lstate */
	/* The group's counts (poold_connections_*_total), in its first fd's. */
	atomic_uint_fast64_t accepted;
	atomic_uint_fast64_t refused_by[REFUSE_N];
};

struct reactor {
	const char *config_path;
	struct config *cfg; /* current; reactor thread only */
	struct listeners *listeners;
	struct lstate *ls; /* per listening fd; reactor thread only */
	struct log *log;
	struct pool *pool;
	int epfd, sigfd, reserve_fd;

	/* reg_lock guards these. */
	pthread_mutex_t reg_lock;
	struct conn *conns; /* every open connection */
	unsigned nconns;
	struct sources *sources; /* per-source counts and rates */

	atomic_uint parked;
	atomic_uint_fast64_t served, refused;
	atomic_uint_fast64_t refused_by[REFUSE_N];
	atomic_bool aborting; /* shutdown deadline passed: close, don't park */
	uint64_t next_id;
	bool stopping, accepting;
	uint64_t accept_resume_usec, drain_deadline_usec;
	uint64_t next_sweep_usec, next_status_usec, next_watchdog_usec;
	uint64_t watchdog_usec, watchdog_done;
	pthread_mutex_t refuse_lock; /* guards the refusal log's rate limit */
	uint64_t refuse_window_usec;
	unsigned refuse_logged, refuse_suppressed;
	atomic_uint_fast64_t proxied, health_checks; /* PROXY headers taken: PROXY, LOCAL */
	/* Sessions that ended: what they moved and how long they took. */
	atomic_uint_fast64_t messages, bytes_in, bytes_out, duration_sum, duration_bucket[METRICS_DURATION_BUCKETS + 1];
	atomic_uint_fast64_t reloads_ok, reloads_failed, last_reload_usec;
	char status[1536];
	char reload_error[1024]; /* non-empty while the last reload failed */
	void *scratch;           /* the reactor's buffer for the steps it runs */
};

static void conn_close(struct reactor *r, struct conn *c);

/* Closes a client we will not serve, telling it so when overload = busy.
 * Called from the reactor (at accept) and from workers (after a PROXY
 * header); refuse_lock guards the log rate limit. */
static void refuse(struct reactor *r, int fd, uint32_t group, const struct service *svc, const struct peer *p,
		   enum refusal why, const char *detail, const char *via)
{
	uint64_t now = now_usec();
	bool log_it = false;
	unsigned suppressed = 0;

	/* A client that sent no valid PROXY header never reaches the
	 * protocol, so it gets no busy message either. */
	if (svc->overload == OVERLOAD_BUSY && why != REFUSE_PROXY_BAD && why != REFUSE_PROXY_TIMEOUT &&
	    why != REFUSE_PROXY_UNTRUSTED) {
		const struct bytes *b = &svc->busy_message;

		/* One non-blocking try: a refused client gets no buffering. */
		(void)!send(fd, b->data, b->len, MSG_NOSIGNAL | MSG_DONTWAIT);
	}
	close(fd);
	atomic_fetch_add_explicit(&r->refused, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&r->refused_by[why], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&r->ls[group].refused_by[why], 1, memory_order_relaxed);

	/* A flood of refusals must not become a flood of log entries. */
	pthread_mutex_lock(&r->refuse_lock);
	if (now >= r->refuse_window_usec + USEC_PER_SEC) {
		suppressed = r->refuse_suppressed;
		r->refuse_window_usec = now;
		r->refuse_logged = 0;
		r->refuse_suppressed = 0;
	}
	if (r->refuse_logged++ < REFUSE_LOGS_PER_SEC)
		log_it = true;
	else
		r->refuse_suppressed++;
	pthread_mutex_unlock(&r->refuse_lock);
	if (suppressed)
		log_event(r->log, LOG_NOTICE, MSGID_REFUSED, NULL,
			  "Suppressed %u more refusal messages in the last second", suppressed);
	if (log_it)
		log_event(r->log, LOG_NOTICE, MSGID_REFUSED,
			  &(struct log_conn){ .remote = p->remote,
					      .addr = p->addr,
					      .port = p->port,
					      .listener = svc->name,
					      .proxy = via },
			  "Refused connection from %s%s%s%s%s: %s%s%s%s", p->remote, via ? " via " : "", via ? via : "",
			  svc->name ? " on listener " : "", svc->name ? svc->name : "", refusals[why].text,
			  detail ? " (" : "", detail ? detail : "", detail ? ")" : "");
}

static void listeners_arm(struct reactor *r, bool on)
{
	if (r->accepting == on)
		return;
	for (size_t i = 0; i < r->listeners->n; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = TAG_LISTENER(i) };

		if (r->listeners->fds[i] < 0)
			continue;
		if (epoll_ctl(r->epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, r->listeners->fds[i], &ev) < 0)
			log_event(r->log, LOG_WARNING, NULL, NULL, "Failed to %s listening socket: %s, ignoring.",
				  on ? "watch" : "unwatch", strerror(errno));
	}
	r->accepting = on;
}

/* accept() failed for lack of fds or memory: drop the client at the head of
 * the backlog with the reserved fd (so it is not left hanging), and stop
 * accepting for a moment instead of spinning on a level-triggered socket. */
static void accept_overloaded(struct reactor *r, size_t idx, int err)
{
	int lfd = r->listeners->fds[idx];

	if ((err == EMFILE || err == ENFILE) && r->reserve_fd >= 0) {
		close(r->reserve_fd);
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			refuse(r, fd, r->ls[idx].group, r->ls[idx].svc, &(struct peer){ .remote = "unknown", .addr = "unknown" },
			       REFUSE_NO_FDS, NULL, NULL);
		r->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	if (log_enabled(r->log, LOG_WARNING) && r->accepting)
		log_event(r->log, LOG_WARNING, NULL, NULL,
			  "Failed to accept connection: %s, pausing accepts for %" PRIu64 " ms.", strerror(err),
			  ACCEPT_PAUSE_USEC / 1000);
	listeners_arm(r, false);
	r->accept_resume_usec = now_usec() + ACCEPT_PAUSE_USEC;
}

/* The per-client checks, at accept or once a PROXY header named the real
 * client. REFUSE_N: admitted. First the listener's access lists (the config
 * is immutable: no lock)... */
static enum refusal admit_acl(const struct conn *c)
{
	int a = acl_check(c->svc->acl, &c->peer.a);

	return a == ACL_ALLOWED ? REFUSE_N : a == ACL_DENIED ? REFUSE_DENY : REFUSE_NOT_ALLOWED;
}

/* ...then, with reg_lock held, its rate, per_source and per_source_rate
 * (the per-source table is only touched when one of those is on). */
static enum refusal admit_limits_locked(struct reactor *r, struct conn *c, uint64_t now)
{
	const struct service *svc = c->svc;
	struct source_key key;
	struct source *src;
	enum refusal why = REFUSE_N;

	if (svc->rate && !bucket_take(&r->ls[c->group].rate, svc->rate, now))
		return REFUSE_RATE;
	if (!svc->per_source && !svc->per_source_rate)
		return REFUSE_N;
	source_key_make(&c->peer.a, c->group, r->cfg->ipv6_prefix, &key);
	src = sources_get(r->sources, &key);
	if (!src)
		return REFUSE_NO_MEMORY;
	if (svc->per_source && src->count >= svc->per_source)
		why = REFUSE_PER_SOURCE;
	else if (!bucket_take(&src->rate, svc->per_source_rate, now))
		why = REFUSE_PER_SOURCE_RATE;
	if (why != REFUSE_N) {
		sources_release(r->sources, src, now);
		return why;
	}
	src->count++;
	c->source = src;
	return REFUSE_N;
}

/* Both, for a client a PROXY header named (from a worker). */
static enum refusal admit(struct reactor *r, struct conn *c, uint64_t now)
{
	enum refusal why = admit_acl(c);

	if (why != REFUSE_N || (!c->svc->rate && !c->svc->per_source && !c->svc->per_source_rate))
		return why;
	pthread_mutex_lock(&r->reg_lock);
	why = admit_limits_locked(r, c, now);
	pthread_mutex_unlock(&r->reg_lock);
	return why;
}

/* Refuses a client after it was accepted: closes it unlogged as a session
 * (it never was one) and logs the refusal. */
static void refuse_conn(struct reactor *r, struct conn *c, enum refusal why, const char *detail)
{
	int fd = c->fd;

	c->fd = -1;
	refuse(r, fd, c->group, c->svc, &c->peer, why, detail, c->proxy ? c->proxy->remote : NULL);
	conn_close(r, c);
}

/* Admits a client or refuses it: on a PROXY listener only the sender and
 * max_connections here (the header names whom the rest is about), else
 * admit() at once. */
static void accept_one(struct reactor *r, size_t idx, int fd, const struct sockaddr_storage *ss, socklen_t len)
{
	struct lstate *ls = &r->ls[idx];
	const struct service *svc = ls->svc;
	struct peer peer;
	struct conn *c;
	uint64_t now = now_usec();
	enum refusal why;

	peer_describe(fd, ss, len, &peer);
	if (svc->proxy && acl_check(svc->proxy_acl, &peer.a) != ACL_ALLOWED)
		return refuse(r, fd, ls->group, svc, &peer, REFUSE_PROXY_UNTRUSTED, NULL, NULL);
	c = calloc(1, sizeof(*c));
	if (!c)
		return refuse(r, fd, ls->group, svc, &peer, REFUSE_NO_MEMORY, NULL, NULL);
	pthread_mutex_init(&c->lock, NULL);
	c->fd = fd;
	c->svc = svc;
	c->peer = peer;
	c->group = ls->group;
	c->state = svc->proxy ? CONN_PROXY : CONN_SENDING;
	c->start_usec = c->active_usec = now;
	/* Access lists without the lock (the config is immutable), then one
	 * critical section: max_connections, the limits, the registry. */
	why = svc->proxy ? REFUSE_N : admit_acl(c);
	pthread_mutex_lock(&r->reg_lock);
	if (why == REFUSE_N && r->nconns >= r->cfg->max_connections)
		why = REFUSE_MAX_CONNECTIONS;
	if (why == REFUSE_N && !svc->proxy)
		why = admit_limits_locked(r, c, now);
	if (why == REFUSE_N) {
		c->id = ++r->next_id;
		c->cfg = config_ref(r->cfg);
		c->next = r->conns;
		if (r->conns)
			r->conns->prev = c;
		r->conns = c;
		r->nconns++;
	}
	pthread_mutex_unlock(&r->reg_lock);
	if (why != REFUSE_N) {
		pthread_mutex_destroy(&c->lock);
		free(c);
		return refuse(r, fd, ls->group, svc, &peer, why, NULL, NULL);
	}

	if (log_enabled(r->log, LOG_DEBUG))
		log_event(r->log, LOG_DEBUG, NULL,
			  &(struct log_conn){ .id = c->id,
					      .remote = peer.remote,
					      .addr = peer.addr,
					      .port = peer.port,
					      .listener = svc->name },
			  "Accepted connection %" PRIu64 " from %s%s%s", c->id, peer.remote,
			  svc->name ? " on listener " : "", svc->name ? svc->name : "");
	/* A cap on what the kernel holds for a client that does not read
	 * (send_buffer); the kernel doubles it and clamps it to
	 * net.core.wmem_max. */
	if (svc->send_buffer) {
		int sb = (int)svc->send_buffer;

		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sb, sizeof(sb));
	}
	if (pool_submit(r->pool, &c->item, POOL_FRESH | POOL_NOWAKE) < 0) {
		/* The waiting room is full: undo (unlogged, uncounted) and refuse. */
		c->fd = -1;
		conn_close(r, c);
		refuse(r, fd, ls->group, svc, &peer, REFUSE_QUEUE_MAX, NULL, NULL);
	} else if (!svc->proxy) {
		atomic_fetch_add_explicit(&ls->accepted, 1, memory_order_relaxed);
	}
}

static void on_listener(struct reactor *r, size_t idx)
{
	int lfd;

	/* A SIGTERM earlier in the same epoll batch closed the listeners
	 * (stop()): their events are stale. */
	if (!r->accepting || idx >= r->listeners->n)
		return;
	lfd = r->listeners->fds[idx];

	for (int i = 0; i < ACCEPT_BATCH && r->accepting; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			switch (errno) {
			case EINTR:
			case ECONNABORTED:
			case EPROTO:
			case EPERM:
				continue;
			case EAGAIN:
				return;
			default: /* EMFILE, ENFILE, ENOBUFS, ENOMEM and the rest */
				accept_overloaded(r, idx, errno);
				return;
			}
		}
		if (len == 0 || ss.ss_family == AF_UNSPEC)
			ss.ss_family = AF_UNIX;
		accept_one(r, idx, fd, &ss, len);
	}
}

/* Hands a parked conn whose client became ready back to the pool. */
static void on_conn(struct reactor *r, struct conn *c)
{
	pthread_mutex_lock(&c->lock);
	if (!c->parked) {
		pthread_mutex_unlock(&c->lock);
		return;
	}
	c->parked = false;
	atomic_fetch_sub_explicit(&r->parked, 1, memory_order_relaxed);
	pthread_mutex_unlock(&c->lock);
	pool_submit(r->pool, &c->item, POOL_NOWAKE);
}

/* Worker side: waits for the client without a thread. */
static int conn_park(struct reactor *r, struct conn *c, int want)
{
	struct epoll_event ev = {
		.events = (want == SESSION_WANT_WRITE ? EPOLLOUT : EPOLLIN) | EPOLLONESHOT,
		.data.ptr = c,
	};
	int ret = 0;

	pthread_mutex_lock(&c->lock);
	c->deadline_usec = session_deadline(c);
	c->parked = true;
	if (epoll_ctl(r->epfd, c->in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) < 0) {
		ret = -errno;
		c->parked = false;
	} else {
		c->in_epoll = true;
		atomic_fetch_add_explicit(&r->parked, 1, memory_order_relaxed);
	}
	pthread_mutex_unlock(&c->lock);
	return ret;
}

/* Ends a session: from the worker that owns the conn, or from the reactor. */
static void conn_close(struct reactor *r, struct conn *c)
{
	if (c->fd >= 0) {
		uint64_t d = now_usec() - c->start_usec;
		size_t b = 0;

		session_close(c, r->log);
		atomic_fetch_add_explicit(&r->served, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&r->messages, c->messages, memory_order_relaxed);
		atomic_fetch_add_explicit(&r->bytes_in, c->received + c->discarded, memory_order_relaxed);
		atomic_fetch_add_explicit(&r->bytes_out, c->sent, memory_order_relaxed);
		atomic_fetch_add_explicit(&r->duration_sum, d, memory_order_relaxed);
		while (b < METRICS_DURATION_BUCKETS && d > metrics_duration_bounds_usec[b])
			b++;
		atomic_fetch_add_explicit(&r->duration_bucket[b], 1, memory_order_relaxed);
	}
	pthread_mutex_lock(&r->reg_lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		r->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	r->nconns--;
	if (c->source) {
		c->source->count--;
		sources_release(r->sources, c->source, now_usec());
	}
	pthread_mutex_unlock(&r->reg_lock);
	config_unref(c->cfg);
	pthread_mutex_destroy(&c->lock);
	free(c->proxy);
	free(c->hdr);
	free(c);
}

/* The pool's work function, in a worker thread. A conn that waits for its
 * client goes to the back of the queue once before it is parked, when other
 * work is queued: by the time the worker comes back to it the client has
 * usually answered (or closed), which saves the epoll registration, the
 * event and the hand-off from the reactor. With nothing else queued it is
 * parked at once; a look that finds nothing costs one recv(). */
static void reactor_work(struct pool_item *item, void *ctx, void **scratch)
{
	struct reactor *r = ctx;
	struct conn *c = (struct conn *)item;
	size_t sent = c->sent;
	unsigned messages = c->messages;
	int want = session_step(c, r->log, scratch);

	if (want == SESSION_ADMIT) {
		/* The PROXY header named the client: admit it as at accept
		 * (the balancer's own LOCAL checks are trusted by proxy_from). */
		enum refusal why = c->health_check ? REFUSE_N : admit(r, c, now_usec());

		atomic_fetch_add_explicit(c->health_check ? &r->health_checks : &r->proxied, 1, memory_order_relaxed);
		if (why != REFUSE_N)
			return refuse_conn(r, c, why, NULL);
		atomic_fetch_add_explicit(&r->ls[c->group].accepted, 1, memory_order_relaxed);
		want = session_step(c, r->log, scratch);
	}
	if (want == SESSION_REFUSE)
		return refuse_conn(r, c, (enum refusal)c->refusal, c->refusal_detail);
	if (want != SESSION_DONE && atomic_load_explicit(&r->aborting, memory_order_relaxed)) {
		session_abort(c, "poold is stopping");
		want = SESSION_DONE;
	}
	if (want != SESSION_DONE) {
		if (c->sent != sent || c->messages != messages)
			c->looked = false;
		if (want == SESSION_WANT_READ && !c->looked && pool_has_waiting(r->pool)) {
			c->looked = true; /* before the queue hands it to another worker */
			if (pool_submit(r->pool, &c->item, POOL_NOWAKE) == 0)
				return; /* this worker takes the next item without a wake-up */
		}
		if (conn_park(r, c, want) == 0)
			return;
		session_abort(c, "failed to wait for the client");
	}
	conn_close(r, c);
}

/* Claims parked conns whose deadline passed (all of them when aborting) and
 * lets a worker close them, so every close is logged in one place. */
static void sweep(struct reactor *r, uint64_t now, bool all)
{
	pthread_mutex_lock(&r->reg_lock);
	for (struct conn *c = r->conns; c; c = c->next) {
		pthread_mutex_lock(&c->lock);
		if (c->parked && (all || now >= c->deadline_usec)) {
			c->parked = false;
			atomic_fetch_sub_explicit(&r->parked, 1, memory_order_relaxed);
			epoll_ctl(r->epfd, EPOLL_CTL_DEL, c->fd, NULL);
			c->in_epoll = false;
			c->expired = true;
			if (all)
				session_abort(c, "poold is stopping");
			pthread_mutex_unlock(&c->lock);
			pool_submit(r->pool, &c->item, POOL_NOWAKE);
			continue;
		}
		pthread_mutex_unlock(&c->lock);
	}
	/* Sources with no connection whose rate bucket is full again. */
	sources_sweep(r->sources, now);
	pthread_mutex_unlock(&r->reg_lock);
	pool_wake(r->pool);
}

static uint64_t sweep_interval(const struct config *cfg)
{
	uint64_t t = UINT64_MAX;

	for (size_t i = 0; i <= cfg->nlisteners; i++) {
		const struct service *c = i == 0 ? &cfg->def : cfg->listeners[i - 1];

		if (c->idle_usec < t)
			t = c->idle_usec;
		if (c->session_usec < t)
			t = c->session_usec;
		if (c->linger_idle_usec < t)
			t = c->linger_idle_usec;
		if (c->linger_usec && c->linger_usec < t)
			t = c->linger_usec;
	}
	t /= 8;
	if (t < 5 * USEC_PER_MSEC)
		t = 5 * USEC_PER_MSEC;
	if (t > 500 * USEC_PER_MSEC)
		t = 500 * USEC_PER_MSEC;
	return t;
}

static unsigned conn_count(struct reactor *r)
{
	unsigned n;

	pthread_mutex_lock(&r->reg_lock);
	n = r->nconns;
	pthread_mutex_unlock(&r->reg_lock);
	return n;
}

static void update_status(struct reactor *r, bool force)
{
	struct pool_stats st;
	char buf[sizeof(r->status)];
	unsigned long dropped = log_dropped(r->log);
	bool first = true;
	size_t n;

	pool_stats(r->pool, &st);
	if (r->stopping)
		snprintf(buf, sizeof(buf), "Stopping: %u connections left; %" PRIu64 " served, %" PRIu64 " refused",
			 conn_count(r), (uint64_t)atomic_load(&r->served), (uint64_t)atomic_load(&r->refused));
	else
		snprintf(buf, sizeof(buf),
			 "%s%s%u workers (%u busy), %u waiting, %u parked; %" PRIu64 " served, %" PRIu64 " refused",
			 r->reload_error[0] ? "Reload failed: " : "", r->reload_error, st.threads, st.busy, st.waiting,
			 atomic_load(&r->parked), (uint64_t)atomic_load(&r->served),
			 (uint64_t)atomic_load(&r->refused));
	n = strlen(buf);
	/* Refusals by reason: " (deny 3, rate 12)". */
	for (int i = 0; i < REFUSE_N; i++) {
		uint64_t k = atomic_load_explicit(&r->refused_by[i], memory_order_relaxed);

		if (!k)
			continue;
		snprintf(buf + n, sizeof(buf) - n, "%s%s %" PRIu64, first ? " (" : ", ", refusals[i].name, k);
		n = strlen(buf);
		first = false;
	}
	if (!first) {
		snprintf(buf + n, sizeof(buf) - n, ")");
		n = strlen(buf);
	}
	if (atomic_load_explicit(&r->proxied, memory_order_relaxed) ||
	    atomic_load_explicit(&r->health_checks, memory_order_relaxed)) {
		snprintf(buf + n, sizeof(buf) - n, "; PROXY headers %" PRIu64 ", health checks %" PRIu64,
			 (uint64_t)atomic_load(&r->proxied), (uint64_t)atomic_load(&r->health_checks));
		n = strlen(buf);
	}
	if (dropped && n < sizeof(buf))
		snprintf(buf + n, sizeof(buf) - n, "; %lu log entries dropped", dropped);
	if (force || strcmp(buf, r->status) != 0) {
		memcpy(r->status, buf, sizeof(buf));
		notify_status(r->status);
	}
}

/* WATCHDOG=1 only while the pool makes progress: work waiting and nothing
 * done since the last ping means every worker is stuck. */
static void watchdog(struct reactor *r, uint64_t now)
{
	struct pool_stats st;

	if (!r->watchdog_usec || now < r->next_watchdog_usec)
		return;
	r->next_watchdog_usec = now + r->watchdog_usec / 2;
	pool_stats(r->pool, &st);
	if (st.waiting > 0 && st.done == r->watchdog_done)
		return;
	r->watchdog_done = st.done;
	notify_watchdog();
}

/* Points each listening fd at the settings it serves with under cfg, and
 * warns about [listener] sections that no fd uses. */
static void map_listeners(struct reactor *r, const struct config *cfg)
{
	const struct listeners *l = r->listeners;

	for (size_t i = 0; i < l->n; i++) {
		struct lstate *ls = &r->ls[i];
		/* A balancer speaks first: with TCP_DEFER_ACCEPT the kernel hands
		 * poold a PROXY connection once its header has arrived, so the
		 * first step reads it instead of parking for it, and a silent
		 * connection costs poold nothing until the kernel hands it over
		 * anyway (1 s, then its SYN-ACK retransmits: 1-3 s), after which
		 * proxy_timeout rules. Cleared again (only if poold set it) when
		 * PROXY goes off, or clients that wait for the payload would. */
		int sec = 0;

		ls->svc = config_service(cfg, l->names[i]);
		if (ls->svc->proxy)
			sec = 1;
		if (sec != ls->defer_sec &&
		    setsockopt(l->fds[i], IPPROTO_TCP, TCP_DEFER_ACCEPT, &sec, sizeof(sec)) == 0)
			ls->defer_sec = sec;
	}
	for (size_t k = 0; k < cfg->nlisteners; k++) {
		const char *name = cfg->listeners[k]->name;
		bool used = false;

		for (size_t i = 0; i < l->n && !used; i++)
			used = l->names[i] && strcmp(l->names[i], name) == 0;
		if (used)
			continue;
		if (l->activated)
			log_event(
				r->log, LOG_WARNING, NULL, NULL,
				"[listener %s] is not used: systemd passed no socket named %s (FileDescriptorName=%s), "
				"ignoring.",
				name, name, name);
		else
			log_event(r->log, LOG_WARNING, NULL, NULL,
				  "[listener %s] is not used: poold listens on none of its addresses%s, ignoring.",
				  name,
				  cfg->listeners[k]->listen ? " (new addresses need a restart)"
							    : " (it has no address =)");
	}
}

/* "banner, blob": the [listener] sections' names. */
static const char *listener_names(const struct config *c, char *buf, size_t size)
{
	size_t n = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < c->nlisteners && n < size; i++) {
		snprintf(buf + n, size - n, "%s%s", i ? ", " : "", c->listeners[i]->name);
		n = strlen(buf);
	}
	return buf;
}

static bool same_strv(char **a, char **b)
{
	size_t i;

	for (i = 0; a && b && a[i] && b[i]; i++)
		if (strcmp(a[i], b[i]) != 0)
			return false;
	return (!a || !a[i]) && (!b || !b[i]);
}

/* Whether standalone poold would bind the same addresses under both. */
static bool same_addresses(const struct config *a, const struct config *b)
{
	if (!same_strv(a->def.listen, b->def.listen))
		return false;
	for (size_t i = 0; i < b->nlisteners; i++) {
		const struct service *o = config_service(a, b->listeners[i]->name);

		if (!same_strv(o == &a->def ? NULL : o->listen, b->listeners[i]->listen))
			return false;
	}
	for (size_t i = 0; i < a->nlisteners; i++)
		if (config_service(b, a->listeners[i]->name) == &b->def && a->listeners[i]->listen)
			return false;
	return true;
}

static void reload(struct reactor *r)
{
	char names[512];
	struct pool_stats st;
	struct config *c = NULL;
	char err[512];
	int k;

	notify_reloading();
	k = config_reload(r->config_path, r->cfg, &c, err, sizeof(err));
	if (k < 0) {
		log_event(r->log, LOG_ERR, MSGID_RELOAD_FAILED, NULL,
			  "Failed to reload configuration: %s, keeping the previous one.", err);
		snprintf(r->reload_error, sizeof(r->reload_error), "%s; serving the previous configuration. ", err);
		atomic_fetch_add(&r->reloads_failed, 1);
		update_status(r, true);
		notify_ready();
		return;
	}
	k = pool_resize(r->pool, c->threads, c->queue_max);
	pool_stats(r->pool, &st);
	if (k < 0)
		log_event(r->log, LOG_ERR, NULL, NULL, "Failed to start %u worker threads: %s, running %u, ignoring.",
			  c->threads, strerror(-k), st.threads);
	if (!r->listeners->activated && !same_addresses(r->cfg, c))
		log_event(r->log, LOG_WARNING, NULL, NULL,
			  "Listen addresses changed: restart poold to listen there, ignoring.");
	log_set_level(r->log, c->log_level);
	map_listeners(r, c);
	config_unref(r->cfg);
	r->cfg = c;
	r->reload_error[0] = '\0';
	atomic_fetch_add(&r->reloads_ok, 1);
	atomic_store(&r->last_reload_usec, realtime_usec());
	log_event(r->log, LOG_NOTICE, MSGID_RELOADED, NULL,
		  "Reloaded configuration: %u threads, payload of %zu bytes%s%s.", st.threads, c->def.payload.len,
		  c->nlisteners ? ", listeners: " : "", listener_names(c, names, sizeof(names)));
	update_status(r, true);
	notify_ready();
}

static void stop(struct reactor *r)
{
	if (r->stopping) {
		/* A second SIGTERM: do not wait for the deadline. */
		r->drain_deadline_usec = 0;
		return;
	}
	r->stopping = true;
	notify_stopping();
	log_event(r->log, LOG_NOTICE, NULL, NULL, "Stopping: no new connections, %u in progress.", conn_count(r));
	/* Unaccepted clients stay in systemd's socket for the next start. */
	listeners_arm(r, false);
	listen_close(r->listeners);
	r->drain_deadline_usec = now_usec() + r->cfg->shutdown_usec;
	update_status(r, true);
}

static void on_signal(struct reactor *r)
{
	struct signalfd_siginfo si;

	for (;;) {
		ssize_t n = read(r->sigfd, &si, sizeof(si));

		if (n != sizeof(si))
			return;
		if (si.ssi_signo == SIGHUP && !r->stopping)
			reload(r);
		else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
			stop(r);
	}
}

/* Runs timers; returns the epoll timeout until the next one, in ms. */
static int timers(struct reactor *r)
{
	uint64_t now = now_usec(), next;

	if (!r->accepting && !r->stopping && now >= r->accept_resume_usec)
		listeners_arm(r, true);
	if (r->stopping && !atomic_load(&r->aborting) && now >= r->drain_deadline_usec) {
		atomic_store(&r->aborting, true);
		log_event(r->log, LOG_NOTICE, NULL, NULL, "Shutdown deadline reached, closing %u connections.",
			  conn_count(r));
	}
	if (atomic_load(&r->aborting) || now >= r->next_sweep_usec) {
		sweep(r, now, atomic_load(&r->aborting));
		r->next_sweep_usec = now + sweep_interval(r->cfg);
	}
	if (now >= r->next_status_usec) {
		update_status(r, false);
		r->next_status_usec = now + STATUS_USEC;
	}
	watchdog(r, now);

	next = r->next_sweep_usec < r->next_status_usec ? r->next_sweep_usec : r->next_status_usec;
	if (r->watchdog_usec && r->next_watchdog_usec < next)
		next = r->next_watchdog_usec;
	if (!r->accepting && !r->stopping && r->accept_resume_usec < next)
		next = r->accept_resume_usec;
	if (r->stopping)
		next = now + 20 * USEC_PER_MSEC;
	return next <= now ? 0 : (int)((next - now + 999) / 1000);
}

int reactor_run(struct reactor *r)
{
	struct epoll_event ev[64];
	char names[512];

	log_event(r->log, LOG_NOTICE, MSGID_STARTED, NULL,
		  "Started: %zu %s socket%s, %u threads, payload of %zu bytes%s%s.", r->listeners->n,
		  r->listeners->activated ? "systemd" : "bound", r->listeners->n == 1 ? "" : "s", r->cfg->threads,
		  r->cfg->def.payload.len, r->cfg->nlisteners ? ", listeners: " : "",
		  listener_names(r->cfg, names, sizeof(names)));
	map_listeners(r, r->cfg);
	update_status(r, true);
	notify_ready();
	for (;;) {
		int timeout = timers(r), n;

		if (r->stopping && conn_count(r) == 0)
			break;
		n = epoll_wait(r->epfd, ev, (int)ARRAY_SIZE(ev), timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < n; i++) {
			uint64_t tag = ev[i].data.u64;

			if (tag == TAG_SIGNAL)
				on_signal(r);
			else if (tag & 1)
				on_listener(r, (size_t)(tag >> 2));
			else
				on_conn(r, ev[i].data.ptr);
		}
		/* One client ready and every worker idle: serve it here rather
		 * than wake a worker for it (pool_run_alone()). Else everything
		 * this batch queued: one wake-up per idle worker needed, not one
		 * per connection. */
		if (!pool_run_alone(r->pool, &r->scratch))
			pool_wake(r->pool);
	}
	log_event(r->log, LOG_NOTICE, MSGID_STOPPED, NULL, "Stopped: %" PRIu64 " served, %" PRIu64 " refused.",
		  (uint64_t)atomic_load(&r->served), (uint64_t)atomic_load(&r->refused));
	return 0;
}

/* On failure err says what failed. */
int reactor_new(const char *config_path, struct config *cfg, struct listeners *l, struct log *log, struct reactor **ret,
		char *err, size_t errlen)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = TAG_SIGNAL };
	struct reactor *r;
	uint64_t seed = 0;
	sigset_t mask;
	int k;

	r = calloc(1, sizeof(*r));
	if (!r) {
		snprintf(err, errlen, "Failed to start: out of memory");
		return -ENOMEM;
	}
	r->config_path = config_path;
	r->cfg = config_ref(cfg);
	r->listeners = l;
	r->log = log;
	r->sigfd = r->epfd = -1;
	pthread_mutex_init(&r->reg_lock, NULL);
	pthread_mutex_init(&r->refuse_lock, NULL);
	r->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	r->watchdog_usec = notify_watchdog_usec();
	atomic_store(&r->last_reload_usec, realtime_usec());

	r->ls = calloc(l->n ? l->n : 1, sizeof(*r->ls));
	if (!r->ls || getrandom(&seed, sizeof(seed), 0) != sizeof(seed) || sources_new(seed, &r->sources) < 0) {
		snprintf(err, errlen, "Failed to start: out of memory");
		reactor_free(r);
		return -ENOMEM;
	}
	/* fds with the same name are one listener: one group for its counts
	 * and its rate bucket (the first fd's). */
	for (size_t i = 0; i < l->n; i++) {
		size_t g = 0;

		while (g < i && !(l->names[g] == l->names[i] ||
				  (l->names[g] && l->names[i] && strcmp(l->names[g], l->names[i]) == 0)))
			g++;
		r->ls[i].group = (uint32_t)g;
		r->ls[i].svc = config_service(cfg, l->names[i]);
	}

	handled_signals(&mask);
	r->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	r->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (r->sigfd < 0 || r->epfd < 0 || epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->sigfd, &ev) < 0) {
		k = -errno;
		snprintf(err, errlen, "Failed to set up the event loop: %s", strerror(-k));
		reactor_free(r);
		return k;
	}
	listeners_arm(r, true);
	k = pool_new(cfg->threads, cfg->queue_max, reactor_work, r, &r->pool);
	if (k < 0) {
		snprintf(err, errlen, "Failed to start %u worker threads: %s", cfg->threads, strerror(-k));
		reactor_free(r);
		return k;
	}
	*ret = r;
	return 0;
}

struct reactor *reactor_free(struct reactor *r)
{
	if (!r)
		return NULL;
	/* An error exit may leave conns queued, parked or lingering. Once the
	 * workers are joined no step runs, and the registry holds every conn
	 * left: close them all here. */
	atomic_store(&r->aborting, true);
	r->pool = pool_free(r->pool);
	while (r->conns) {
		struct conn *c = r->conns;

		if (c->in_epoll)
			epoll_ctl(r->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		session_abort(c, "poold is exiting");
		conn_close(r, c);
	}
	if (r->epfd >= 0)
		close(r->epfd);
	if (r->sigfd >= 0)
		close(r->sigfd);
	if (r->reserve_fd >= 0)
		close(r->reserve_fd);
	pthread_mutex_destroy(&r->reg_lock);
	pthread_mutex_destroy(&r->refuse_lock);
	sources_free(r->sources);
	free(r->ls);
	config_unref(r->cfg);
	free(r->scratch);
	free(r);
	return NULL;
}

/* The counters for a scrape (metrics_collect_fn), from the metrics thread. */
void reactor_metrics(void *ctx, struct metrics_snapshot *s)
{
	struct reactor *r = ctx;
	struct pool_stats st;
	size_t n = 0;

	memset(s, 0, sizeof(*s));
	s->listeners = calloc(r->listeners->n ? r->listeners->n : 1, sizeof(*s->listeners));
	for (size_t i = 0; s->listeners && i < r->listeners->n; i++) {
		struct metrics_listener *m = &s->listeners[n];
		const struct lstate *ls = &r->ls[i];

		if (ls->group != i)
			continue; /* counted in its group's first fd */
		m->name = r->listeners->names[i] ? r->listeners->names[i] : "default";
		m->accepted = atomic_load_explicit(&ls->accepted, memory_order_relaxed);
		for (int k = 0; k < REFUSE_N; k++)
			m->refused[k] = atomic_load_explicit(&ls->refused_by[k], memory_order_relaxed);
		n++;
	}
	s->nlisteners = n;
	s->sessions_active = conn_count(r);
	s->parked = atomic_load_explicit(&r->parked, memory_order_relaxed);
	pool_stats(r->pool, &st);
	s->queue_waiting = st.waiting;
	s->threads_busy = st.busy;
	s->threads_idle = st.threads - st.busy;
	s->messages_received = atomic_load_explicit(&r->messages, memory_order_relaxed);
	s->bytes_received = atomic_load_explicit(&r->bytes_in, memory_order_relaxed);
	s->bytes_sent = atomic_load_explicit(&r->bytes_out, memory_order_relaxed);
	for (int b = 0; b <= METRICS_DURATION_BUCKETS; b++) {
		uint64_t k = atomic_load_explicit(&r->duration_bucket[b], memory_order_relaxed);

		if (b < METRICS_DURATION_BUCKETS)
			s->duration_bucket[b] = k;
		s->duration_count += k;
	}
	s->duration_sum_usec = atomic_load_explicit(&r->duration_sum, memory_order_relaxed);
	s->log_dropped = log_dropped(r->log);
	s->reloads_success = atomic_load(&r->reloads_ok);
	s->reloads_failure = atomic_load(&r->reloads_failed);
	s->last_reload_success_usec = atomic_load(&r->last_reload_usec);
	s->proxy_headers[PROXY_RESULT_PROXY] = atomic_load_explicit(&r->proxied, memory_order_relaxed);
	s->proxy_headers[PROXY_RESULT_LOCAL] = atomic_load_explicit(&r->health_checks, memory_order_relaxed);
	s->proxy_headers[PROXY_RESULT_BAD] = atomic_load_explicit(&r->refused_by[REFUSE_PROXY_BAD], memory_order_relaxed);
	s->proxy_headers[PROXY_RESULT_TIMEOUT] =
		atomic_load_explicit(&r->refused_by[REFUSE_PROXY_TIMEOUT], memory_order_relaxed);
}
