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
#include "config.h"
#include "log.h"
#include "notify.h"
#include "pool.h"
#include "session.h"
#include "util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>

#define ACCEPT_BATCH        64                    /* accepts per listener wake-up, for fairness */
#define ACCEPT_PAUSE_USEC   (100 * USEC_PER_MSEC) /* after EMFILE/ENOBUFS */
#define STATUS_USEC         USEC_PER_SEC
#define SOURCE_BUCKETS      1024
#define REFUSE_LOGS_PER_SEC 10
#define TAG_SIGNAL          UINT64_C(1) /* epoll data: odd values are not conns */
#define TAG_LISTENER(i)     ((uint64_t)(i) << 2 | 3)

/* Connections from one client address (IPv4 or IPv6, or "unix"). */
struct source {
	struct source *next;
	unsigned char key[17]; /* family byte + address */
	unsigned count;
};

struct reactor {
	const char *config_path;
	struct config *cfg; /* current; reactor thread only */
	struct listeners *listeners;
	struct log *log;
	struct pool *pool;
	int epfd, sigfd, reserve_fd;

	/* reg_lock guards these. */
	pthread_mutex_t reg_lock;
	struct conn *conns; /* every open connection */
	unsigned nconns;
	struct source *sources[SOURCE_BUCKETS];

	atomic_uint parked;
	atomic_uint_fast64_t served, refused;
	atomic_bool aborting; /* shutdown deadline passed: close, don't park */
	uint64_t next_id;
	bool stopping, accepting;
	uint64_t accept_resume_usec, drain_deadline_usec;
	uint64_t next_sweep_usec, next_status_usec, next_watchdog_usec;
	uint64_t watchdog_usec, watchdog_done;
	uint64_t refuse_window_usec;
	unsigned refuse_logged, refuse_suppressed;
	char status[1536];
	char reload_error[1024]; /* non-empty while the last reload failed */
	void *scratch;           /* the reactor's buffer for the steps it runs */
};

static void conn_close(struct reactor *r, struct conn *c);

static struct source **source_slot(struct reactor *r, const unsigned char key[17])
{
	uint32_t h = 2166136261u;
	struct source **s;

	for (int i = 0; i < 17; i++)
		h = (h ^ key[i]) * 16777619u;
	for (s = &r->sources[h % SOURCE_BUCKETS]; *s; s = &(*s)->next)
		if (memcmp((*s)->key, key, 17) == 0)
			break;
	return s;
}

/* Writes a.b.c.d:port without printf (this runs for every accept). */
static void format_ipv4(const unsigned char a[4], unsigned port, char *out, size_t len)
{
	char buf[24], *p = buf;
	unsigned v[5] = { a[0], a[1], a[2], a[3], port };
	size_t n;

	for (int i = 0; i < 5; i++) {
		char digits[6];
		int d = 0;

		do
			digits[d++] = (char)('0' + v[i] % 10);
		while (v[i] /= 10);
		while (d)
			*p++ = digits[--d];
		*p++ = i < 3 ? '.' : ':';
	}
	n = (size_t)(p - buf - 1); /* without the last separator */
	if (n >= len)
		n = len - 1;
	memcpy(out, buf, n);
	out[n] = '\0';
}

/* Says who the client is and makes its per-source key. IPv4 clients of a
 * dual-stack socket count as IPv4, not as ::ffff:a.b.c.d; unix-socket clients
 * count by the peer's uid (SO_PEERCRED), the one identity they have. */
static void describe_peer(int fd, const struct sockaddr_storage *ss, struct peer *p)
{
	memset(p->key, 0, sizeof(p->key));
	p->port = 0;
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

		p->port = ntohs(s6->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			p->key[0] = AF_INET;
			memcpy(p->key + 1, &s6->sin6_addr.s6_addr[12], 4);
		} else {
			p->key[0] = AF_INET6;
			memcpy(p->key + 1, &s6->sin6_addr, 16);
			inet_ntop(AF_INET6, &s6->sin6_addr, p->addr, sizeof(p->addr));
			snprintf(p->remote, sizeof(p->remote), "[%s]:%u", p->addr, p->port);
			return;
		}
	} else if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

		p->port = ntohs(s4->sin_port);
		p->key[0] = AF_INET;
		memcpy(p->key + 1, &s4->sin_addr, 4);
	} else {
		struct ucred cred;
		socklen_t len = sizeof(cred);

		p->key[0] = AF_UNIX;
		snprintf(p->addr, sizeof(p->addr), "unix");
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
			memcpy(p->key + 1, &cred.uid, sizeof(cred.uid));
			snprintf(p->remote, sizeof(p->remote), "unix uid %u", (unsigned)cred.uid);
		} else {
			snprintf(p->remote, sizeof(p->remote), "unix");
		}
		return;
	}
	format_ipv4(p->key + 1, p->port, p->remote, sizeof(p->remote));
	memcpy(p->addr, p->remote, strcspn(p->remote, ":"));
	p->addr[strcspn(p->remote, ":")] = '\0';
}

/* Closes a client we will not serve, telling it so when overload = busy. */
static void refuse(struct reactor *r, int fd, const struct peer *p, const char *why)
{
	uint64_t now = now_usec();

	if (r->cfg->overload == OVERLOAD_BUSY) {
		const struct bytes *b = &r->cfg->busy_message;

		/* One non-blocking try: a refused client gets no buffering. */
		(void)!send(fd, b->data, b->len, MSG_NOSIGNAL | MSG_DONTWAIT);
	}
	close(fd);
	atomic_fetch_add_explicit(&r->refused, 1, memory_order_relaxed);

	/* A flood of refusals must not become a flood of log entries. */
	if (now >= r->refuse_window_usec + USEC_PER_SEC) {
		if (r->refuse_suppressed)
			log_event(r->log, LOG_NOTICE, MSGID_REFUSED, NULL,
				  "Suppressed %u more refusal messages in the last second", r->refuse_suppressed);
		r->refuse_window_usec = now;
		r->refuse_logged = 0;
		r->refuse_suppressed = 0;
	}
	if (r->refuse_logged++ < REFUSE_LOGS_PER_SEC)
		log_event(r->log, LOG_NOTICE, MSGID_REFUSED,
			  &(struct log_conn){ .remote = p->remote, .addr = p->addr, .port = p->port },
			  "Refused connection from %s: %s", p->remote, why);
	else
		r->refuse_suppressed++;
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
static void accept_overloaded(struct reactor *r, int lfd, int err)
{
	if ((err == EMFILE || err == ENFILE) && r->reserve_fd >= 0) {
		close(r->reserve_fd);
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			refuse(r, fd, &(struct peer){ .remote = "unknown", .addr = "unknown" },
			       "out of file descriptors");
		r->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	if (log_enabled(r->log, LOG_WARNING) && r->accepting)
		log_event(r->log, LOG_WARNING, NULL, NULL,
			  "Failed to accept connection: %s, pausing accepts for %" PRIu64 " ms.", strerror(err),
			  ACCEPT_PAUSE_USEC / 1000);
	listeners_arm(r, false);
	r->accept_resume_usec = now_usec() + ACCEPT_PAUSE_USEC;
}

static void accept_one(struct reactor *r, int fd, const struct sockaddr_storage *ss)
{
	const struct config *cfg = r->cfg;
	struct peer peer;
	struct source **slot, *src;
	struct conn *c;
	uint64_t now;

	describe_peer(fd, ss, &peer);
	pthread_mutex_lock(&r->reg_lock);
	if (r->nconns >= cfg->max_connections) {
		pthread_mutex_unlock(&r->reg_lock);
		return refuse(r, fd, &peer, "too many connections (max_connections)");
	}
	slot = source_slot(r, peer.key);
	if (cfg->per_source && *slot && (*slot)->count >= cfg->per_source) {
		pthread_mutex_unlock(&r->reg_lock);
		return refuse(r, fd, &peer, "too many connections from this source (per_source)");
	}
	c = calloc(1, sizeof(*c));
	src = *slot ? *slot : calloc(1, sizeof(*src));
	if (!c || !src) {
		if (src && src != *slot)
			free(src);
		free(c);
		pthread_mutex_unlock(&r->reg_lock);
		return refuse(r, fd, &peer, "out of memory");
	}
	if (!*slot) {
		memcpy(src->key, peer.key, 17);
		*slot = src;
	}
	src->count++;
	now = now_usec();
	pthread_mutex_init(&c->lock, NULL);
	c->fd = fd;
	c->id = ++r->next_id;
	c->cfg = config_ref(r->cfg);
	c->start_usec = c->active_usec = now;
	c->source = src;
	c->peer = peer;
	c->next = r->conns;
	if (r->conns)
		r->conns->prev = c;
	r->conns = c;
	r->nconns++;
	pthread_mutex_unlock(&r->reg_lock);

	if (log_enabled(r->log, LOG_DEBUG))
		log_event(
			r->log, LOG_DEBUG, NULL,
			&(struct log_conn){ .id = c->id, .remote = peer.remote, .addr = peer.addr, .port = peer.port },
			"Accepted connection %" PRIu64 " from %s", c->id, peer.remote);
	/* A cap on what the kernel holds for a client that does not read
	 * ([limits] send_buffer); the kernel doubles it and clamps it to
	 * net.core.wmem_max. */
	if (cfg->send_buffer) {
		int sb = (int)cfg->send_buffer;

		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sb, sizeof(sb));
	}
	if (pool_submit(r->pool, &c->item, POOL_FRESH | POOL_NOWAKE) < 0) {
		/* The waiting room is full: undo (unlogged, uncounted) and refuse. */
		c->fd = -1;
		conn_close(r, c);
		refuse(r, fd, &peer, "all workers busy and the queue is full (queue_max)");
	}
}

static void on_listener(struct reactor *r, size_t idx)
{
	int lfd = r->listeners->fds[idx];

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
				accept_overloaded(r, lfd, errno);
				return;
			}
		}
		if (len == 0 || ss.ss_family == AF_UNSPEC)
			ss.ss_family = AF_UNIX;
		accept_one(r, fd, &ss);
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
		session_close(c, r->log);
		atomic_fetch_add_explicit(&r->served, 1, memory_order_relaxed);
	}
	pthread_mutex_lock(&r->reg_lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		r->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	r->nconns--;
	if (--c->source->count == 0) {
		struct source **s = source_slot(r, c->source->key);

		*s = c->source->next;
		free(c->source);
	}
	pthread_mutex_unlock(&r->reg_lock);
	config_unref(c->cfg);
	pthread_mutex_destroy(&c->lock);
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
	pthread_mutex_unlock(&r->reg_lock);
	pool_wake(r->pool);
}

static uint64_t sweep_interval(const struct config *c)
{
	uint64_t t = c->idle_usec < c->session_usec ? c->idle_usec : c->session_usec;

	if (c->linger_idle_usec < t)
		t = c->linger_idle_usec;
	if (c->linger_usec && c->linger_usec < t)
		t = c->linger_usec;
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
	if (dropped)
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

static void reload(struct reactor *r)
{
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
		update_status(r, true);
		notify_ready();
		return;
	}
	k = pool_resize(r->pool, c->threads, c->queue_max);
	pool_stats(r->pool, &st);
	if (k < 0)
		log_event(r->log, LOG_ERR, NULL, NULL, "Failed to start %u worker threads: %s, running %u, ignoring.",
			  c->threads, strerror(-k), st.threads);
	if (!r->listeners->activated) {
		bool same = true;
		size_t i;

		for (i = 0; c->listen[i] && r->cfg->listen[i]; i++)
			same = same && strcmp(c->listen[i], r->cfg->listen[i]) == 0;
		if (!same || c->listen[i] || r->cfg->listen[i])
			log_event(r->log, LOG_WARNING, NULL, NULL,
				  "[listen] address changed: restart poold to listen there, ignoring.");
	}
	log_set_level(r->log, c->log_level);
	config_unref(r->cfg);
	r->cfg = c;
	r->reload_error[0] = '\0';
	log_event(r->log, LOG_NOTICE, MSGID_RELOADED, NULL, "Reloaded configuration: %u threads, payload of %zu bytes.",
		  st.threads, c->payload.len);
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

	log_event(r->log, LOG_NOTICE, MSGID_STARTED, NULL,
		  "Started: %zu %s socket%s, %u threads, payload of %zu bytes.", r->listeners->n,
		  r->listeners->activated ? "systemd" : "bound", r->listeners->n == 1 ? "" : "s", r->cfg->threads,
		  r->cfg->payload.len);
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
	r->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	r->watchdog_usec = notify_watchdog_usec();

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
	config_unref(r->cfg);
	free(r->scratch);
	free(r);
	return NULL;
}
