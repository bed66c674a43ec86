/* reactor.c - poold's event loops, and the owner of every connection.
 *
 * DESIGN: one event loop per thread, no thread in the middle. `threads`
 * loop threads each own an epoll set holding every listening socket
 * (EPOLLEXCLUSIVE: the kernel wakes one waiting loop per new client, not
 * all of them) and the connections that loop accepted. A connection lives
 * and dies in its loop: it is accepted there, its first step (the payload)
 * runs at once, and when the client is not ready it stays registered,
 * level-triggered, in that loop's epoll set until it is. Nothing is handed
 * between threads, so nothing is re-armed (no EPOLLONESHOT), no queue or
 * lock sits on a connection's path, and each loop sweeps its own deadlines.
 * A slow or idle client holds a registration and a struct link, never a
 * thread. This is the shape of nginx's workers, HAProxy's threads and
 * Envoy's workers; leader/followers (POSA2) was the other candidate, but it
 * still hands the one event set from thread to thread and re-arms every
 * connection for each event, the cost this design removes. The main thread
 * owns no connection: it reads signals (reload, stop), keeps STATUS= and the
 * watchdog, and starts and retires loops when `threads` changes.
 *
 * What stays exact across loops: max_connections is one atomic count taken
 * (fetch-add, then checked) before a client is admitted, so it is never
 * exceeded; per_source, per_source_rate and rate share one lock, taken only
 * when one of them is set. Counters are per loop, written only by their
 * loop and summed when read (STATUS=, metrics).
 *
 * The waiting room (queue_max) is now the listening sockets' backlog: the
 * clients that connected and wait for a loop to accept them. Nothing else
 * waits: an accepted client is served in the same turn.
 *
 * Threading. A loop touches only its own struct loop and links; it reads
 * the shared config under cfg_lock when the main thread published a new
 * one (epoch). The main thread writes the flags (epoch, stopping,
 * aborting, retire) and wakes loops through their eventfd. loops_lock
 * guards the list of loops for readers outside the main thread (metrics).
 * Signals are blocked in every thread (main.c) and read from a signalfd.
 */
#include "reactor.h"
#include "access.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "session.h"
#include "util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>

#define LOOPS_MAX           1024 /* [pool] threads' upper bound */
#define ACCEPT_BATCH        1    /* accepts per listener event, as nginx without multi_accept: see on_listener() */
#define ACCEPT_PAUSE_USEC   (100 * USEC_PER_MSEC) /* after EMFILE/ENOBUFS */
#define ROTATE_ACCEPTS      32                    /* then the loop goes to the back of the line, see rotate() */
#define STATUS_USEC         USEC_PER_SEC
#define REFUSE_LOGS_PER_SEC 10
#define TAG_WAKE            UINT64_C(1) /* epoll data: odd values are not links */
#define TAG_TIMER           UINT64_C(5)
#define TAG_LISTENER(i)     ((uint64_t)(i) << 2 | 3)

/* A counter with one writer (its loop) and any number of readers: a
 * relaxed load and store, no locked read-modify-write on the hot path. */
#define STAT_ADD(x, n)                                                                                                 \
	atomic_store_explicit(&(x), atomic_load_explicit(&(x), memory_order_relaxed) + (n), memory_order_relaxed)
#define STAT(x) atomic_load_explicit(&(x), memory_order_relaxed)

static const struct {
	const char *name, *text;
} refusals[REFUSE_N] = {
	[REFUSE_DENY] = { "deny", "address denied (deny)" },
	[REFUSE_NOT_ALLOWED] = { "not allowed", "address not in the allow list (not allowed)" },
	[REFUSE_RATE] = { "rate", "too many new connections on this listener (rate)" },
	[REFUSE_PER_SOURCE_RATE] = { "per_source_rate", "too many new connections from this source (per_source_rate)" },
	[REFUSE_MAX_CONNECTIONS] = { "max_connections", "too many connections (max_connections)" },
	[REFUSE_PER_SOURCE] = { "per_source", "too many connections from this source (per_source)" },
	[REFUSE_NO_FDS] = { "out of file descriptors", "out of file descriptors" },
	[REFUSE_NO_MEMORY] = { "out of memory", "out of memory" },
	[REFUSE_PROXY_UNTRUSTED] = { "proxy_from", "PROXY header sender not in proxy_from" },
	[REFUSE_PROXY_BAD] = { "proxy header", "bad PROXY header" },
	[REFUSE_PROXY_TIMEOUT] = { "proxy_timeout", "no complete PROXY header within proxy_timeout" },
};

/* Each listening fd: its name (a copy: the fds close at stop while metrics
 * still name them) and its group, the listener whose counts and rate it
 * shares (fds with the same name are one listener). */
struct lstate {
	int fd;
	char *name;
	uint32_t group;
	int defer_sec;      /* the TCP_DEFER_ACCEPT poold set on it; 0: none */
	struct bucket rate; /* the group's `rate`, in its first fd's lstate; under limits_lock */
};

/* A connection as its loop holds it: the session, and around it what only
 * the loop needs. */
struct link {
	struct conn conn; /* first member */
	struct link *prev, *next;
	struct config *cfg;    /* the config it was accepted under (a reference) */
	struct source *source; /* per-source entry (under limits_lock); NULL: untracked */
	uint32_t group;
	uint32_t events;        /* what it is registered for in the loop's epoll; 0: not yet */
	uint64_t deadline_usec; /* the step that runs once it passes (the loop's sweep) */
};

/* A loop's counters: written by the loop alone, summed by readers. */
struct loop_stats {
	atomic_uint_fast64_t served, refused, proxied, health_checks, turns;
	atomic_uint_fast64_t messages, bytes_in, bytes_out, duration_sum;
	atomic_uint_fast64_t refused_by[REFUSE_N];
	atomic_uint_fast64_t duration_bucket[METRICS_DURATION_BUCKETS + 1];
	atomic_uint conns, parked;
	atomic_bool busy; /* between epoll_wait() returning and the next one */
};

struct group_stats {
	atomic_uint_fast64_t accepted;
	atomic_uint_fast64_t refused[REFUSE_N];
};

struct loop {
	struct reactor *r;
	unsigned index;
	pthread_t thread;
	bool started, joined;
	int epfd, wakefd, timerfd;
	uint64_t timer_usec;         /* the timerfd's period */
	uint64_t sweep_usec;         /* sweep_interval() of cfg, taken with it */
	struct link *conns;          /* every connection it owns */
	struct config *cfg;          /* its reference to the current config */
	const struct service **svc;  /* per listening fd, under cfg */
	uint64_t epoch;              /* the reactor's epoch it last acted on */
	bool listening, unlistened;  /* listening fds in its set; removed for good */
	uint64_t accept_resume_usec; /* after an accept failure */
	unsigned accepts_since_rotate;
	uint64_t next_sweep_usec;
	void *scratch;      /* the sessions' read buffer */
	atomic_bool retire; /* reload shrank the pool: finish what it has, then exit */
	atomic_bool exited;
	uint64_t wd_turns; /* main thread: turns at the last watchdog look */
	struct loop *next_retired;
	struct group_stats *groups; /* per listening fd, used at its group's index */
	struct loop_stats st __attribute__((aligned(64)));
};

struct reactor {
	const char *config_path;
	struct listeners *listeners;
	struct lstate *ls;
	size_t nfds;
	struct log *log;
	int sigfd, wakefd;

	/* cfg is written by the main thread under cfg_lock; loops take a
	 * reference under it when the epoch changed. */
	pthread_mutex_t cfg_lock;
	struct config *cfg;
	atomic_uint_fast64_t epoch; /* bumped on every change a loop must see */
	atomic_bool stopping, aborting;
	atomic_int failed;      /* a loop's epoll_wait() failed: its errno */
	atomic_uint unlistened; /* loops that removed the listeners */
	bool listeners_closed;

	/* loops_lock guards these for readers outside the main thread. */
	pthread_mutex_t loops_lock;
	struct loop *loops[LOOPS_MAX];
	unsigned nloops, started;
	struct loop *retired;

	/* limits_lock guards the per-source table and the rate buckets. */
	pthread_mutex_t limits_lock;
	struct sources *sources;

	/* The two counts every accept touches, on a line of their own. */
	struct {
		atomic_uint nconns; /* open connections, against max_connections */
		atomic_uint_fast64_t next_id;
	} shared __attribute__((aligned(64)));

	pthread_mutex_t reserve_lock; /* the spare fd for EMFILE */
	int reserve_fd;
	pthread_mutex_t refuse_lock; /* guards the refusal log's rate limit */
	uint64_t refuse_window_usec;
	unsigned refuse_logged, refuse_suppressed;

	/* Main thread. */
	uint64_t drain_deadline_usec, next_sweep_usec, next_status_usec, next_watchdog_usec, watchdog_usec;
	atomic_uint_fast64_t reloads_ok, reloads_failed, last_reload_usec;
	char status[1536];
	char reload_error[1024]; /* non-empty while the last reload failed */
};

static void wake(int fd)
{
	uint64_t one = 1;

	(void)!write(fd, &one, sizeof(one));
}

static void wake_loops(struct reactor *r)
{
	atomic_fetch_add(&r->epoch, 1);
	for (unsigned i = 0; i < r->nloops; i++)
		wake(r->loops[i]->wakefd);
	for (struct loop *l = r->retired; l; l = l->next_retired)
		if (!l->joined)
			wake(l->wakefd);
}

/* Closes a client we will not serve, telling it so when overload = busy.
 * Called at accept and after a PROXY header, in the loop that holds it;
 * refuse_lock guards the log rate limit. */
static void refuse(struct loop *l, int fd, uint32_t group, const struct service *svc, const struct peer *p,
		   enum refusal why, const char *detail, const char *via)
{
	struct reactor *r = l->r;
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
	STAT_ADD(l->st.refused, 1);
	STAT_ADD(l->st.refused_by[why], 1);
	STAT_ADD(l->groups[group].refused[why], 1);

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

/* Adds listening fd idx to the loop's set (EPOLL_CTL_ADD), or removes it. */
static int listener_ctl(struct loop *l, size_t idx, int op)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE, .data.u64 = TAG_LISTENER(idx) };

	return epoll_ctl(l->epfd, op, l->r->ls[idx].fd, &ev);
}

/* Adds the listening fds to the loop's set, or removes them. */
static void loop_listen(struct loop *l, bool on)
{
	struct reactor *r = l->r;

	if (l->listening == on || (on && l->unlistened))
		return;
	for (size_t i = 0; i < r->nfds; i++) {
		if (r->ls[i].fd < 0)
			continue;
		if (listener_ctl(l, i, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL) < 0)
			log_event(r->log, LOG_WARNING, NULL, NULL, "Failed to %s listening socket: %s, ignoring.",
				  on ? "watch" : "unwatch", strerror(errno));
	}
	l->listening = on;
}

/* accept() failed for lack of fds or memory: drop the client at the head of
 * the backlog with the reserved fd (so it is not left hanging), and stop
 * accepting in this loop for a moment instead of spinning on a
 * level-triggered socket. */
static void accept_overloaded(struct loop *l, size_t idx, int err)
{
	struct reactor *r = l->r;

	if (err == EMFILE || err == ENFILE) {
		pthread_mutex_lock(&r->reserve_lock);
		if (r->reserve_fd >= 0) {
			close(r->reserve_fd);
			int fd = accept4(r->ls[idx].fd, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0)
				refuse(l, fd, r->ls[idx].group, l->svc[idx],
				       &(struct peer){ .remote = "unknown", .addr = "unknown" }, REFUSE_NO_FDS, NULL,
				       NULL);
			r->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		}
		pthread_mutex_unlock(&r->reserve_lock);
	}
	if (log_enabled(r->log, LOG_WARNING))
		log_event(r->log, LOG_WARNING, NULL, NULL,
			  "Failed to accept connection: %s, pausing accepts for %" PRIu64 " ms.", strerror(err),
			  ACCEPT_PAUSE_USEC / 1000);
	loop_listen(l, false);
	l->accept_resume_usec = now_usec() + ACCEPT_PAUSE_USEC;
}

/* The per-client checks, at accept or once a PROXY header named the real
 * client. REFUSE_N: admitted. First the listener's access lists (the config
 * is immutable: no lock)... */
static enum refusal admit_acl(const struct service *svc, const struct addr *a)
{
	int k = acl_check(svc->acl, a);

	return k == ACL_ALLOWED ? REFUSE_N : k == ACL_DENIED ? REFUSE_DENY : REFUSE_NOT_ALLOWED;
}

static bool has_limits(const struct service *svc)
{
	return svc->rate || svc->per_source || svc->per_source_rate;
}

/* ...then, with limits_lock held, its rate, per_source and per_source_rate
 * (the per-source table is only touched when one of those is on). */
static enum refusal admit_limits_locked(struct reactor *r, struct link *k, uint64_t now)
{
	const struct service *svc = k->conn.svc;
	struct source_key key;
	struct source *src;
	enum refusal why = REFUSE_N;

	if (svc->rate && !bucket_take(&r->ls[k->group].rate, svc->rate, now))
		return REFUSE_RATE;
	if (!svc->per_source && !svc->per_source_rate)
		return REFUSE_N;
	source_key_make(&k->conn.peer.a, k->group, k->cfg->ipv6_prefix, &key);
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
	k->source = src;
	return REFUSE_N;
}

/* Both, for a client a PROXY header named, or at accept. */
static enum refusal admit(struct reactor *r, struct link *k, uint64_t now)
{
	enum refusal why = admit_acl(k->conn.svc, &k->conn.peer.a);

	if (why != REFUSE_N || !has_limits(k->conn.svc))
		return why;
	pthread_mutex_lock(&r->limits_lock);
	why = admit_limits_locked(r, k, now);
	pthread_mutex_unlock(&r->limits_lock);
	return why;
}

/* Ends a session in its loop: logs the close record (a session that was
 * never admitted has fd -1 and none), counts it, and frees the link.
 * close() takes the socket out of the loop's epoll set: poold holds its
 * only reference. */
static void link_close(struct loop *l, struct link *k)
{
	struct reactor *r = l->r;
	struct conn *c = &k->conn;

	if (c->fd >= 0) {
		uint64_t d = now_usec() - c->start_usec;
		size_t b = 0;

		session_close(c, r->log);
		STAT_ADD(l->st.served, 1);
		STAT_ADD(l->st.messages, c->messages);
		STAT_ADD(l->st.bytes_in, c->received + c->discarded);
		STAT_ADD(l->st.bytes_out, c->sent);
		STAT_ADD(l->st.duration_sum, d);
		while (b < METRICS_DURATION_BUCKETS && d > metrics_duration_bounds_usec[b])
			b++;
		STAT_ADD(l->st.duration_bucket[b], 1);
	}
	if (k->prev)
		k->prev->next = k->next;
	else
		l->conns = k->next;
	if (k->next)
		k->next->prev = k->prev;
	STAT_ADD(l->st.conns, -1);
	if (k->events)
		STAT_ADD(l->st.parked, -1);
	atomic_fetch_sub_explicit(&r->shared.nconns, 1, memory_order_relaxed);
	if (k->source) {
		pthread_mutex_lock(&r->limits_lock);
		k->source->count--;
		sources_release(r->sources, k->source, now_usec());
		pthread_mutex_unlock(&r->limits_lock);
	}
	config_unref(k->cfg);
	free(c->proxy);
	free(c->hdr);
	free(k);
}

/* Refuses a client after it was accepted: closes it unlogged as a session
 * (it never was one) and logs the refusal. */
static void refuse_link(struct loop *l, struct link *k, enum refusal why, const char *detail)
{
	struct conn *c = &k->conn;
	int fd = c->fd;

	c->fd = -1;
	refuse(l, fd, k->group, c->svc, &c->peer, why, detail, c->proxy ? c->proxy->remote : NULL);
	link_close(l, k);
}

/* Runs one step of a session, then closes it or leaves it registered for
 * what it waits for: EPOLL_CTL_ADD after its first step, EPOLL_CTL_MOD
 * only when it turns from writing to reading, nothing otherwise. */
static void run_step(struct loop *l, struct link *k)
{
	struct reactor *r = l->r;
	struct conn *c = &k->conn;
	int want = session_step(c, r->log, &l->scratch);
	uint32_t events;

	if (want == SESSION_ADMIT) {
		/* The PROXY header named the client: admit it as at accept
		 * (the balancer's own LOCAL checks are trusted by proxy_from). */
		enum refusal why = c->health_check ? REFUSE_N : admit(r, k, now_usec());

		if (c->health_check)
			STAT_ADD(l->st.health_checks, 1);
		else
			STAT_ADD(l->st.proxied, 1);
		if (why != REFUSE_N)
			return refuse_link(l, k, why, NULL);
		STAT_ADD(l->groups[k->group].accepted, 1);
		want = session_step(c, r->log, &l->scratch);
	}
	if (want == SESSION_REFUSE)
		return refuse_link(l, k, (enum refusal)c->refusal, c->refusal_detail);
	if (want != SESSION_DONE && atomic_load_explicit(&r->aborting, memory_order_relaxed)) {
		session_abort(c, "poold is stopping");
		want = SESSION_DONE;
	}
	if (want == SESSION_DONE)
		return link_close(l, k);
	events = want == SESSION_WANT_WRITE ? EPOLLOUT : EPOLLIN;
	if (k->events != events) {
		struct epoll_event ev = { .events = events, .data.ptr = k };

		if (epoll_ctl(l->epfd, k->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) < 0) {
			session_abort(c, "failed to wait for the client");
			return link_close(l, k);
		}
		if (!k->events)
			STAT_ADD(l->st.parked, 1);
		k->events = events;
	}
	k->deadline_usec = session_deadline(c);
}

/* Admits a client or refuses it, then runs its first step: on a PROXY
 * listener only the sender and max_connections here (the header names
 * whom the rest is about), else the access lists and limits at once. */
static void accept_one(struct loop *l, size_t idx, int fd, const struct sockaddr_storage *ss, socklen_t len)
{
	struct reactor *r = l->r;
	const struct service *svc = l->svc[idx];
	uint32_t group = r->ls[idx].group;
	uint64_t now = now_usec();
	enum refusal why = REFUSE_N;
	struct peer peer;
	struct link *k;

	peer_describe(fd, ss, len, &peer);
	if (svc->proxy && acl_check(svc->proxy_acl, &peer.a) != ACL_ALLOWED)
		return refuse(l, fd, group, svc, &peer, REFUSE_PROXY_UNTRUSTED, NULL, NULL);
	if (!svc->proxy)
		why = admit_acl(svc, &peer.a);
	if (why != REFUSE_N)
		return refuse(l, fd, group, svc, &peer, why, NULL, NULL);
	/* Taken first and given back on refusal, so the count never passes
	 * max_connections however many loops accept at once. */
	if (atomic_fetch_add_explicit(&r->shared.nconns, 1, memory_order_relaxed) >= l->cfg->max_connections) {
		atomic_fetch_sub_explicit(&r->shared.nconns, 1, memory_order_relaxed);
		return refuse(l, fd, group, svc, &peer, REFUSE_MAX_CONNECTIONS, NULL, NULL);
	}
	k = calloc(1, sizeof(*k));
	if (!k) {
		atomic_fetch_sub_explicit(&r->shared.nconns, 1, memory_order_relaxed);
		return refuse(l, fd, group, svc, &peer, REFUSE_NO_MEMORY, NULL, NULL);
	}
	k->conn.fd = fd;
	k->conn.svc = svc;
	k->conn.peer = peer;
	k->conn.state = svc->proxy ? CONN_PROXY : CONN_SENDING;
	k->conn.start_usec = k->conn.active_usec = now;
	k->cfg = config_ref(l->cfg);
	k->group = group;
	k->next = l->conns;
	if (l->conns)
		l->conns->prev = k;
	l->conns = k;
	STAT_ADD(l->st.conns, 1);
	if (!svc->proxy && has_limits(svc)) {
		pthread_mutex_lock(&r->limits_lock);
		why = admit_limits_locked(r, k, now);
		pthread_mutex_unlock(&r->limits_lock);
		if (why != REFUSE_N)
			return refuse_link(l, k, why, NULL);
	}
	k->conn.id = atomic_fetch_add_explicit(&r->shared.next_id, 1, memory_order_relaxed) + 1;
	if (log_enabled(r->log, LOG_DEBUG))
		log_event(r->log, LOG_DEBUG, NULL,
			  &(struct log_conn){ .id = k->conn.id,
					      .remote = peer.remote,
					      .addr = peer.addr,
					      .port = peer.port,
					      .listener = svc->name },
			  "Accepted connection %" PRIu64 " from %s%s%s", k->conn.id, peer.remote,
			  svc->name ? " on listener " : "", svc->name ? svc->name : "");
	/* A cap on what the kernel holds for a client that does not read
	 * (send_buffer); the kernel doubles it and clamps it to
	 * net.core.wmem_max. */
	if (svc->send_buffer) {
		int sb = (int)svc->send_buffer;

		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sb, sizeof(sb));
	}
	if (!svc->proxy)
		STAT_ADD(l->groups[group].accepted, 1);
	run_step(l, k);
}

/* EPOLLEXCLUSIVE wakes the first loop in the listening socket's wait queue
 * that is waiting, and the queue keeps the order the loops registered in:
 * left alone, the first loop takes nearly every client whenever it is idle
 * (on one core, always), and serves all of them. So every ROTATE_ACCEPTS
 * clients a loop moves itself to the back of that queue (EPOLL_CTL_DEL and
 * _ADD of the listening fd): the next idle loop in line takes the next
 * clients, and accepting goes round the loops. Two epoll_ctl() calls per
 * ROTATE_ACCEPTS accepts. */
static void rotate(struct loop *l, size_t idx)
{
	l->accepts_since_rotate = 0;
	if (listener_ctl(l, idx, EPOLL_CTL_DEL) < 0 || listener_ctl(l, idx, EPOLL_CTL_ADD) < 0)
		log_event(l->r->log, LOG_WARNING, NULL, NULL, "Failed to re-add a listening socket: %s, ignoring.",
			  strerror(errno));
}

/* One accept per event: the socket is level-triggered, so a backlog that
 * still holds clients is reported again in the next epoll_wait(), which
 * returns it with the loop's other events. Accepting until EAGAIN instead
 * costs an accept4() that fails on almost every wake-up (measured: W1
 * max_messages=0 at 1.10x nginx's CPU per connection with a batch of 16,
 * 1.05x with one), and one at a time spreads a burst over the loops. */
static void on_listener(struct loop *l, size_t idx)
{
	/* The loop removed the listeners earlier in this turn (stop, retire
	 * or an accept failure): their events are stale. */
	if (!l->listening || idx >= l->r->nfds)
		return;

	for (int i = 0; i < ACCEPT_BATCH && l->listening; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd = accept4(l->r->ls[idx].fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

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
				accept_overloaded(l, idx, errno);
				return;
			}
		}
		if (len == 0 || ss.ss_family == AF_UNSPEC)
			ss.ss_family = AF_UNIX;
		accept_one(l, idx, fd, &ss, len);
		if (++l->accepts_since_rotate >= ROTATE_ACCEPTS && l->listening) {
			rotate(l, idx);
			return;
		}
	}
}

/* Runs the step of every connection whose deadline passed: the session
 * sees the time and closes, or starts lingering. */
static void sweep(struct loop *l, uint64_t now)
{
	struct link *k = l->conns;

	while (k) {
		struct link *next = k->next;

		if (now >= k->deadline_usec)
			run_step(l, k);
		k = next;
	}
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

/* Takes the current config: the loop's reference and its listeners'
 * settings. Connections keep the config they were accepted under. */
static void loop_take_config(struct loop *l)
{
	struct reactor *r = l->r;
	struct config *c;

	pthread_mutex_lock(&r->cfg_lock);
	c = config_ref(r->cfg);
	pthread_mutex_unlock(&r->cfg_lock);
	if (c == l->cfg) {
		config_unref(c);
		return;
	}
	config_unref(l->cfg);
	l->cfg = c;
	l->sweep_usec = sweep_interval(c);
	for (size_t i = 0; i < r->nfds; i++)
		l->svc[i] = config_service(c, r->ls[i].name);
}

/* Removes the listening fds from the loop's set for good (stop, retire, or
 * the loop's exit) and tells the main thread, which closes them once every
 * loop has. */
static void loop_unlisten(struct loop *l)
{
	loop_listen(l, false);
	l->unlistened = true;
	atomic_fetch_add(&l->r->unlistened, 1);
	wake(l->r->wakefd);
}

/* Acts on what the main thread changed since the loop last looked: a new
 * config, stop or retire (the listeners go). One load per turn when
 * nothing changed. An abort is not acted on here but in loop_abort(). */
static void loop_refresh(struct loop *l)
{
	struct reactor *r = l->r;
	uint64_t epoch = atomic_load_explicit(&r->epoch, memory_order_acquire);

	if (epoch == l->epoch)
		return;
	l->epoch = epoch;
	loop_take_config(l);
	if (!l->unlistened && (atomic_load(&r->stopping) || atomic_load(&l->retire)))
		loop_unlisten(l);
}

/* The shutdown deadline passed (or poold exits on an error): every
 * connection closes now. Called between turns only, never while a turn's
 * events are pending: they point at links this frees. Within a turn,
 * run_step() aborts each session it runs. */
static void loop_abort(struct loop *l)
{
	while (l->conns) {
		session_abort(&l->conns->conn, "poold is stopping");
		link_close(l, l->conns);
	}
}

/* Runs the loop's timers; returns the epoll timeout in ms: -1, since a
 * periodic timerfd in the set wakes the loop for its sweep. epoll_wait()
 * with a timeout arms and cancels a kernel timer each time it sleeps, that
 * is for nearly every message of a client that sends them apart; the
 * timerfd is armed once per sweep interval. Only an accept pause (after
 * EMFILE) takes a finite timeout. */
static int loop_timers(struct loop *l)
{
	uint64_t now = now_usec(), interval = l->sweep_usec;

	if (!l->listening && !l->unlistened && now >= l->accept_resume_usec)
		loop_listen(l, true);
	if (now >= l->next_sweep_usec) {
		sweep(l, now);
		l->next_sweep_usec = now + interval;
	}
	if (interval != l->timer_usec) {
		struct itimerspec its = {
			.it_interval = { .tv_sec = (time_t)(interval / USEC_PER_SEC),
					 .tv_nsec = (long)(interval % USEC_PER_SEC) * 1000 },
		};

		its.it_value = its.it_interval;
		if (timerfd_settime(l->timerfd, 0, &its, NULL) == 0)
			l->timer_usec = interval;
	}
	if (!l->listening && !l->unlistened)
		return l->accept_resume_usec <= now ? 0 : (int)((l->accept_resume_usec - now + 999) / 1000);
	/* A timerfd that failed to arm: fall back to a timeout. */
	if (l->timer_usec != interval)
		return l->next_sweep_usec <= now ? 0 : (int)((l->next_sweep_usec - now + 999) / 1000);
	return -1;
}

static void *loop_main(void *arg)
{
	struct loop *l = arg;
	struct reactor *r = l->r;
	struct epoll_event ev[64];

	loop_refresh(l);
	loop_listen(l, true);
	for (;;) {
		int timeout, n;

		if (atomic_load_explicit(&r->aborting, memory_order_relaxed))
			loop_abort(l);
		if (l->unlistened && !l->conns)
			break; /* stopping or retired, and done */
		timeout = loop_timers(l);
		atomic_store_explicit(&l->st.busy, false, memory_order_relaxed);
		n = epoll_wait(l->epfd, ev, (int)ARRAY_SIZE(ev), timeout);
		atomic_store_explicit(&l->st.busy, true, memory_order_relaxed);
		STAT_ADD(l->st.turns, 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			/* The main thread exits with this error; reactor_free()
			 * closes what this loop still holds. */
			int expected = 0;

			atomic_compare_exchange_strong(&r->failed, &expected, errno);
			break;
		}
		/* Before the events: a client that woke an idle loop is served
		 * under the config of its time. */
		loop_refresh(l);
		for (int i = 0; i < n; i++) {
			uint64_t tag = ev[i].data.u64;

			if (tag == TAG_WAKE || tag == TAG_TIMER) {
				uint64_t v;

				(void)!read(tag == TAG_WAKE ? l->wakefd : l->timerfd, &v, sizeof(v));
			} else if (tag & 1) {
				on_listener(l, (size_t)(tag >> 2));
			} else {
				run_step(l, ev[i].data.ptr);
			}
		}
	}
	if (!l->unlistened)
		loop_unlisten(l);
	atomic_store_explicit(&l->st.busy, false, memory_order_relaxed);
	atomic_store(&l->exited, true);
	wake(r->wakefd);
	return NULL;
}

/* Frees a loop whose thread is joined (or never ran), closing what it
 * still holds (after an error exit). */
static void loop_free(struct loop *l)
{
	while (l->conns) {
		session_abort(&l->conns->conn, "poold is exiting");
		link_close(l, l->conns);
	}
	if (l->epfd >= 0)
		close(l->epfd);
	if (l->wakefd >= 0)
		close(l->wakefd);
	if (l->timerfd >= 0)
		close(l->timerfd);
	config_unref(l->cfg);
	free(l->svc);
	free(l->groups);
	free(l->scratch);
	free(l);
}

static void loop_join(struct loop *l)
{
	if (l->started && !l->joined)
		pthread_join(l->thread, NULL);
	l->joined = true;
}

static int loop_start(struct reactor *r, unsigned index, struct loop **ret)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = TAG_WAKE };
	struct epoll_event tev = { .events = EPOLLIN, .data.u64 = TAG_TIMER };
	pthread_attr_t attr;
	struct loop *l;
	int k;

	if (posix_memalign((void **)&l, 64, sizeof(*l)) != 0)
		return -ENOMEM;
	memset(l, 0, sizeof(*l));
	l->r = r;
	l->index = index;
	l->epoch = UINT64_MAX; /* the first loop_refresh() takes the config */
	l->svc = calloc(r->nfds ? r->nfds : 1, sizeof(*l->svc));
	l->groups = calloc(r->nfds ? r->nfds : 1, sizeof(*l->groups));
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	l->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (!l->svc || !l->groups) {
		loop_free(l);
		return -ENOMEM;
	}
	if (l->epfd < 0 || l->wakefd < 0 || l->timerfd < 0 || epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wakefd, &ev) < 0 ||
	    epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->timerfd, &tev) < 0) {
		k = -errno;
		loop_free(l);
		return k;
	}
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 512 * 1024);
	k = -pthread_create(&l->thread, &attr, loop_main, l);
	pthread_attr_destroy(&attr);
	if (k < 0) {
		loop_free(l);
		return k;
	}
	l->started = true;
	*ret = l;
	return 0;
}

/* Grows or shrinks the set of loops to `threads`; main thread only. A
 * retired loop stops accepting, finishes the connections it holds and
 * exits; the main thread joins it later (join_retired()). Its counters
 * stay summed. */
static int loops_resize(struct reactor *r, unsigned threads)
{
	int k = 0;

	while (r->nloops > threads) {
		struct loop *l;

		pthread_mutex_lock(&r->loops_lock);
		l = r->loops[--r->nloops];
		l->next_retired = r->retired;
		r->retired = l;
		pthread_mutex_unlock(&r->loops_lock);
		atomic_store(&l->retire, true);
		atomic_fetch_add(&r->epoch, 1);
		wake(l->wakefd);
	}
	while (r->nloops < threads) {
		struct loop *l = NULL;

		k = loop_start(r, r->started, &l);
		if (k < 0)
			break;
		pthread_mutex_lock(&r->loops_lock);
		r->loops[r->nloops++] = l;
		r->started++;
		pthread_mutex_unlock(&r->loops_lock);
	}
	return k;
}

/* Joins retired loops that have finished. */
static void join_retired(struct reactor *r)
{
	for (struct loop *l = r->retired; l; l = l->next_retired)
		if (!l->joined && atomic_load(&l->exited))
			loop_join(l);
}

/* The loops' counters, summed (active and retired loops). */
struct totals {
	unsigned loops, busy, conns, parked;
	uint64_t served, refused, proxied, health_checks, messages, bytes_in, bytes_out, duration_sum;
	uint64_t refused_by[REFUSE_N];
	uint64_t duration_bucket[METRICS_DURATION_BUCKETS + 1];
};

static void add_loop(struct totals *t, struct loop *l)
{
	t->busy += STAT(l->st.busy);
	t->conns += STAT(l->st.conns);
	t->parked += STAT(l->st.parked);
	t->served += STAT(l->st.served);
	t->refused += STAT(l->st.refused);
	t->proxied += STAT(l->st.proxied);
	t->health_checks += STAT(l->st.health_checks);
	t->messages += STAT(l->st.messages);
	t->bytes_in += STAT(l->st.bytes_in);
	t->bytes_out += STAT(l->st.bytes_out);
	t->duration_sum += STAT(l->st.duration_sum);
	for (int i = 0; i < REFUSE_N; i++)
		t->refused_by[i] += STAT(l->st.refused_by[i]);
	for (int i = 0; i <= METRICS_DURATION_BUCKETS; i++)
		t->duration_bucket[i] += STAT(l->st.duration_bucket[i]);
}

static void add_group(struct metrics_listener *m, struct group_stats *g)
{
	m->accepted += STAT(g->accepted);
	for (int i = 0; i < REFUSE_N; i++)
		m->refused[i] += STAT(g->refused[i]);
}

/* With loops_lock held, or from the main thread. */
static void totals(struct reactor *r, struct totals *t)
{
	memset(t, 0, sizeof(*t));
	t->loops = r->nloops;
	for (unsigned i = 0; i < r->nloops; i++)
		add_loop(t, r->loops[i]);
	for (struct loop *l = r->retired; l; l = l->next_retired)
		add_loop(t, l);
}

static unsigned conn_count(struct reactor *r)
{
	return atomic_load_explicit(&r->shared.nconns, memory_order_relaxed);
}

/* Clients that connected and wait in the listening sockets' backlogs for a
 * loop to accept them: the waiting room. From the main thread, or with
 * loops_lock held. TCP only (for a listening socket
 * tcpi_unacked is its accept queue's length). */
static unsigned backlog_waiting(struct reactor *r)
{
	unsigned n = 0;

	if (r->listeners_closed)
		return 0;
	for (size_t i = 0; i < r->nfds; i++) {
		struct tcp_info ti;
		socklen_t len = sizeof(ti);

		if (r->ls[i].fd >= 0 && getsockopt(r->ls[i].fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
		    ti.tcpi_state == TCP_LISTEN)
			n += ti.tcpi_unacked;
	}
	return n;
}

static void update_status(struct reactor *r, bool force)
{
	struct totals t;
	char buf[sizeof(r->status)];
	unsigned long dropped = log_dropped(r->log);
	bool first = true;
	size_t n;

	totals(r, &t);
	if (atomic_load(&r->stopping))
		snprintf(buf, sizeof(buf), "Stopping: %u connections left; %" PRIu64 " served, %" PRIu64 " refused",
			 conn_count(r), t.served, t.refused);
	else
		snprintf(buf, sizeof(buf),
			 "%s%s%u workers (%u busy), %u waiting, %u parked; %" PRIu64 " served, %" PRIu64 " refused",
			 r->reload_error[0] ? "Reload failed: " : "", r->reload_error, t.loops, t.busy,
			 backlog_waiting(r), t.parked, t.served, t.refused);
	n = strlen(buf);
	/* Refusals by reason: " (deny 3, rate 12)". */
	for (int i = 0; i < REFUSE_N; i++) {
		if (!t.refused_by[i])
			continue;
		snprintf(buf + n, sizeof(buf) - n, "%s%s %" PRIu64, first ? " (" : ", ", refusals[i].name,
			 t.refused_by[i]);
		n = strlen(buf);
		first = false;
	}
	if (!first) {
		snprintf(buf + n, sizeof(buf) - n, ")");
		n = strlen(buf);
	}
	if (t.proxied || t.health_checks) {
		snprintf(buf + n, sizeof(buf) - n, "; PROXY headers %" PRIu64 ", health checks %" PRIu64, t.proxied,
			 t.health_checks);
		n = strlen(buf);
	}
	if (dropped && n < sizeof(buf))
		snprintf(buf + n, sizeof(buf) - n, "; %lu log entries dropped", dropped);
	if (force || strcmp(buf, r->status) != 0) {
		memcpy(r->status, buf, sizeof(buf));
		notify_status(r->status);
	}
}

/* WATCHDOG=1 only while every loop makes progress: a loop that is in the
 * middle of a turn (busy) and has not finished one since the last look is
 * stuck. An idle loop waits in epoll_wait() and is fine. */
static void watchdog(struct reactor *r, uint64_t now)
{
	bool stuck = false;

	if (!r->watchdog_usec || now < r->next_watchdog_usec)
		return;
	r->next_watchdog_usec = now + r->watchdog_usec / 2;
	for (unsigned i = 0; i < r->nloops; i++) {
		struct loop *l = r->loops[i];
		uint64_t turns = STAT(l->st.turns);

		if (STAT(l->st.busy) && turns == l->wd_turns)
			stuck = true;
		l->wd_turns = turns;
	}
	if (!stuck)
		notify_watchdog();
}

static void map_listeners(struct reactor *r, const struct config *cfg)
{
	const struct listeners *l = r->listeners;

	for (size_t i = 0; i < r->nfds; i++) {
		struct lstate *ls = &r->ls[i];
		/* A balancer speaks first: with TCP_DEFER_ACCEPT the kernel hands
		 * poold a PROXY connection once its header has arrived, so the
		 * first step reads it instead of parking for it, and a silent
		 * connection costs poold nothing until the kernel hands it over
		 * anyway (1 s, then its SYN-ACK retransmits: 1-3 s), after which
		 * proxy_timeout rules. Cleared again (only if poold set it) when
		 * PROXY goes off, or clients that wait for the payload would. */
		int sec = 0;

		if (config_service(cfg, ls->name)->proxy)
			sec = 1;
		if (sec != ls->defer_sec && setsockopt(ls->fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &sec, sizeof(sec)) == 0)
			ls->defer_sec = sec;
	}
	for (size_t k = 0; k < cfg->nlisteners; k++) {
		const char *name = cfg->listeners[k]->name;
		bool used = false;

		for (size_t i = 0; i < r->nfds && !used; i++)
			used = r->ls[i].name && strcmp(r->ls[i].name, name) == 0;
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

/* Standalone, the waiting room is the backlog of the sockets poold bound:
 * queue_max, set again (listen() on a listening socket changes it) at
 * start and on reload. systemd's sockets keep their unit's Backlog=. */
static void apply_queue_max(struct reactor *r, const struct config *c)
{
	if (r->listeners->activated) {
		if (c->queue_max != CONFIG_QUEUE_MAX_DEFAULT)
			log_event(r->log, LOG_NOTICE, NULL, NULL,
				  "queue_max = %u does not apply to the sockets systemd passes: their backlog is "
				  "the socket unit's Backlog=, ignoring.",
				  c->queue_max);
		return;
	}
	for (size_t i = 0; i < r->nfds; i++)
		if (r->ls[i].fd >= 0 && listen(r->ls[i].fd, (int)c->queue_max) < 0)
			log_event(r->log, LOG_WARNING, NULL, NULL, "Failed to set the backlog to %u: %s, ignoring.",
				  c->queue_max, strerror(errno));
}

static void reload(struct reactor *r)
{
	char names[512];
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
	if (!r->listeners->activated && !same_addresses(r->cfg, c))
		log_event(r->log, LOG_WARNING, NULL, NULL,
			  "Listen addresses changed: restart poold to listen there, ignoring.");
	pthread_mutex_lock(&r->cfg_lock);
	config_unref(r->cfg);
	r->cfg = c;
	pthread_mutex_unlock(&r->cfg_lock);
	atomic_fetch_add(&r->epoch, 1); /* the loops take it on their next turn */
	k = loops_resize(r, c->threads);
	if (k < 0)
		log_event(r->log, LOG_ERR, NULL, NULL, "Failed to start %u worker threads: %s, running %u, ignoring.",
			  c->threads, strerror(-k), r->nloops);
	log_set_level(r->log, c->log_level);
	map_listeners(r, c);
	apply_queue_max(r, c);
	r->reload_error[0] = '\0';
	atomic_fetch_add(&r->reloads_ok, 1);
	atomic_store(&r->last_reload_usec, realtime_usec());
	log_event(r->log, LOG_NOTICE, MSGID_RELOADED, NULL,
		  "Reloaded configuration: %u threads, payload of %zu bytes%s%s.", r->nloops, c->def.payload.len,
		  c->nlisteners ? ", listeners: " : "", listener_names(c, names, sizeof(names)));
	update_status(r, true);
	notify_ready();
}

static void stop(struct reactor *r)
{
	if (atomic_load(&r->stopping)) {
		/* A second SIGTERM: do not wait for the deadline. */
		r->drain_deadline_usec = 0;
		return;
	}
	atomic_store(&r->stopping, true);
	notify_stopping();
	log_event(r->log, LOG_NOTICE, NULL, NULL, "Stopping: no new connections, %u in progress.", conn_count(r));
	/* Each loop takes the listeners out of its set; then timers() closes
	 * them. Unaccepted clients stay in systemd's socket for the next
	 * start. */
	wake_loops(r);
	r->drain_deadline_usec = now_usec() + r->cfg->shutdown_usec;
	update_status(r, true);
}

/* Once every loop stopped watching them: standalone, new clients are
 * refused by the kernel instead of waiting in a backlog nobody accepts. */
static void close_listeners(struct reactor *r)
{
	/* Under loops_lock: a scrape reads their backlogs (reactor_metrics()). */
	pthread_mutex_lock(&r->loops_lock);
	for (size_t i = 0; i < r->nfds; i++) {
		if (r->ls[i].fd < 0)
			continue;
		close(r->ls[i].fd);
		r->ls[i].fd = -1;
		r->listeners->fds[i] = -1;
	}
	r->listeners_closed = true;
	pthread_mutex_unlock(&r->loops_lock);
}

static void on_signal(struct reactor *r)
{
	struct signalfd_siginfo si;

	for (;;) {
		ssize_t n = read(r->sigfd, &si, sizeof(si));

		if (n != sizeof(si))
			return;
		if (si.ssi_signo == SIGHUP && !atomic_load(&r->stopping))
			reload(r);
		else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
			stop(r);
	}
}

/* Runs the main thread's timers; returns the poll timeout until the next
 * one, in ms. */
static int timers(struct reactor *r)
{
	uint64_t now = now_usec(), next;
	bool stopping = atomic_load(&r->stopping);

	if (stopping && !r->listeners_closed && atomic_load(&r->unlistened) >= r->started)
		close_listeners(r);
	if (stopping && !atomic_load(&r->aborting) && now >= r->drain_deadline_usec) {
		atomic_store(&r->aborting, true);
		log_event(r->log, LOG_NOTICE, NULL, NULL, "Shutdown deadline reached, closing %u connections.",
			  conn_count(r));
		wake_loops(r);
	}
	join_retired(r);
	/* Another loop's accept4() may have taken the spare fd between the
	 * close and the open in accept_overloaded(): take one again. */
	pthread_mutex_lock(&r->reserve_lock);
	if (r->reserve_fd < 0)
		r->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	pthread_mutex_unlock(&r->reserve_lock);
	if (now >= r->next_sweep_usec) {
		/* Sources with no connection whose rate bucket is full again. */
		pthread_mutex_lock(&r->limits_lock);
		sources_sweep(r->sources, now);
		pthread_mutex_unlock(&r->limits_lock);
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
	if (stopping)
		next = now + 20 * USEC_PER_MSEC;
	return next <= now ? 0 : (int)((next - now + 999) / 1000);
}

static void join_all(struct reactor *r)
{
	wake_loops(r);
	for (unsigned i = 0; i < r->nloops; i++)
		loop_join(r->loops[i]);
	for (struct loop *l = r->retired; l; l = l->next_retired)
		loop_join(l);
}

int reactor_run(struct reactor *r)
{
	char names[512];
	struct totals t;
	int k;

	map_listeners(r, r->cfg);
	apply_queue_max(r, r->cfg);
	k = loops_resize(r, r->cfg->threads);
	if (k < 0) {
		log_event(r->log, LOG_ERR, NULL, NULL, "Failed to start %u worker threads: %s", r->cfg->threads,
			  strerror(-k));
		return k;
	}
	/* Logged once every loop runs, so that "Started:" means the process is
	 * complete: its threads and their descriptors exist. */
	log_event(r->log, LOG_NOTICE, MSGID_STARTED, NULL,
		  "Started: %zu %s socket%s, %u threads, payload of %zu bytes%s%s.", r->nfds,
		  r->listeners->activated ? "systemd" : "bound", r->nfds == 1 ? "" : "s", r->cfg->threads,
		  r->cfg->def.payload.len, r->cfg->nlisteners ? ", listeners: " : "",
		  listener_names(r->cfg, names, sizeof(names)));
	update_status(r, true);
	notify_ready();
	for (;;) {
		struct pollfd pfd[2] = { { .fd = r->sigfd, .events = POLLIN }, { .fd = r->wakefd, .events = POLLIN } };
		int timeout = timers(r), failed = atomic_load(&r->failed), n;

		if (failed)
			return -failed;
		if (atomic_load(&r->stopping) && r->listeners_closed && conn_count(r) == 0)
			break;
		n = poll(pfd, 2, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (pfd[1].revents & POLLIN) {
			uint64_t v;

			(void)!read(r->wakefd, &v, sizeof(v));
		}
		if (pfd[0].revents & POLLIN)
			on_signal(r);
	}
	join_all(r);
	totals(r, &t);
	log_event(r->log, LOG_NOTICE, MSGID_STOPPED, NULL, "Stopped: %" PRIu64 " served, %" PRIu64 " refused.",
		  t.served, t.refused);
	return 0;
}

/* On failure err says what failed. */
int reactor_new(const char *config_path, struct config *cfg, struct listeners *l, struct log *log, struct reactor **ret,
		char *err, size_t errlen)
{
	struct reactor *r;
	uint64_t seed = 0;
	sigset_t mask;
	int k;

	if (posix_memalign((void **)&r, 64, sizeof(*r)) != 0) {
		snprintf(err, errlen, "Failed to start: out of memory");
		return -ENOMEM;
	}
	memset(r, 0, sizeof(*r));
	r->config_path = config_path;
	r->cfg = config_ref(cfg);
	r->listeners = l;
	r->nfds = l->n;
	r->log = log;
	r->sigfd = r->wakefd = -1;
	pthread_mutex_init(&r->cfg_lock, NULL);
	pthread_mutex_init(&r->loops_lock, NULL);
	pthread_mutex_init(&r->limits_lock, NULL);
	pthread_mutex_init(&r->reserve_lock, NULL);
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
		r->ls[i].fd = l->fds[i];
		if (l->names[i] && !(r->ls[i].name = strdup(l->names[i]))) {
			snprintf(err, errlen, "Failed to start: out of memory");
			reactor_free(r);
			return -ENOMEM;
		}
	}

	handled_signals(&mask);
	r->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	r->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (r->sigfd < 0 || r->wakefd < 0) {
		k = -errno;
		snprintf(err, errlen, "Failed to set up the event loop: %s", strerror(-k));
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
	/* An error exit may leave connections open in any loop: each loop
	 * closes its own (abort), a loop whose epoll failed leaves them to
	 * loop_free(). */
	atomic_store(&r->stopping, true);
	atomic_store(&r->aborting, true);
	join_all(r);
	for (unsigned i = 0; i < r->nloops; i++)
		loop_free(r->loops[i]);
	while (r->retired) {
		struct loop *l = r->retired;

		r->retired = l->next_retired;
		loop_free(l);
	}
	if (r->sigfd >= 0)
		close(r->sigfd);
	if (r->wakefd >= 0)
		close(r->wakefd);
	if (r->reserve_fd >= 0)
		close(r->reserve_fd);
	pthread_mutex_destroy(&r->cfg_lock);
	pthread_mutex_destroy(&r->loops_lock);
	pthread_mutex_destroy(&r->limits_lock);
	pthread_mutex_destroy(&r->reserve_lock);
	pthread_mutex_destroy(&r->refuse_lock);
	sources_free(r->sources);
	for (size_t i = 0; r->ls && i < r->nfds; i++)
		free(r->ls[i].name);
	free(r->ls);
	config_unref(r->cfg);
	free(r);
	return NULL;
}

/* The counters for a scrape (metrics_collect_fn), from the metrics thread. */
void reactor_metrics(void *ctx, struct metrics_snapshot *s)
{
	struct reactor *r = ctx;
	struct totals t;
	size_t n = 0;

	memset(s, 0, sizeof(*s));
	s->listeners = calloc(r->nfds ? r->nfds : 1, sizeof(*s->listeners));
	pthread_mutex_lock(&r->loops_lock);
	totals(r, &t);
	for (size_t i = 0; s->listeners && i < r->nfds; i++) {
		struct metrics_listener *m = &s->listeners[n];

		if (r->ls[i].group != i)
			continue; /* counted in its group's first fd */
		m->name = r->ls[i].name ? r->ls[i].name : "default";
		for (unsigned j = 0; j < r->nloops; j++)
			add_group(m, &r->loops[j]->groups[i]);
		for (struct loop *l = r->retired; l; l = l->next_retired)
			add_group(m, &l->groups[i]);
		n++;
	}
	s->queue_waiting = backlog_waiting(r);
	pthread_mutex_unlock(&r->loops_lock);
	s->nlisteners = n;
	s->sessions_active = conn_count(r);
	s->parked = t.parked;
	s->threads_busy = t.busy;
	s->threads_idle = t.loops > t.busy ? t.loops - t.busy : 0;
	s->messages_received = t.messages;
	s->bytes_received = t.bytes_in;
	s->bytes_sent = t.bytes_out;
	for (int b = 0; b <= METRICS_DURATION_BUCKETS; b++) {
		if (b < METRICS_DURATION_BUCKETS)
			s->duration_bucket[b] = t.duration_bucket[b];
		s->duration_count += t.duration_bucket[b];
	}
	s->duration_sum_usec = t.duration_sum;
	s->log_dropped = log_dropped(r->log);
	s->reloads_success = atomic_load(&r->reloads_ok);
	s->reloads_failure = atomic_load(&r->reloads_failed);
	s->last_reload_success_usec = atomic_load(&r->last_reload_usec);
	s->proxy_headers[PROXY_RESULT_PROXY] = t.proxied;
	s->proxy_headers[PROXY_RESULT_LOCAL] = t.health_checks;
	s->proxy_headers[PROXY_RESULT_BAD] = t.refused_by[REFUSE_PROXY_BAD];
	s->proxy_headers[PROXY_RESULT_TIMEOUT] = t.refused_by[REFUSE_PROXY_TIMEOUT];
}
