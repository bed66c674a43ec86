/* metrics.c - the Prometheus scrape endpoint: GET /metrics in text format
 * 0.0.4, on each fd named `metrics` that systemd passes or on the sockets
 * listen.c bound for [metrics] address (see metrics.h).
 *
 * Threading. HTTP is libmicrohttpd's, each listening fd served by its own
 * internal epoll thread (MHD_USE_INTERNAL_POLLING_THREAD), not by poold's
 * event loops: a scraper, slow or hostile (one that connects and never
 * sends), then only ever holds one of MHD's few connection slots until
 * MHD's timeout, and never an event loop, a worker or a lock that clients
 * need. Driving MHD from the reactor would put its timers and its parser's
 * work in the client path. The thread only calls the collect function
 * (reactor_metrics(), thread-safe) and this file's renderer; it starts after
 * main.c blocked the signals the reactor reads, so it inherits that mask.
 * MHD_USE_ITC: without it, stopping MHD would shutdown() the listening
 * socket, and a socket systemd passed is systemd's too: poold-metrics.socket
 * would stop listening after the first restart. The fds stay listen.c's. */
#include "metrics.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#define METRICS_CONNECTIONS  16          /* concurrent scrape connections per fd */
#define METRICS_PER_IP       4           /* of which from one address */
#define METRICS_TIMEOUT_SEC  10          /* an idle or silent scrape connection is closed after this */
#define METRICS_MEMORY_LIMIT (16 * 1024) /* bytes of request headers per connection */
#define METRICS_PATH         "/metrics"
#define METRICS_DAEMONS_MAX  64

/* From a banner (a millisecond) to a session that runs into session_timeout
 * (60 s by default) or lingers (30 s more). */
const uint64_t metrics_duration_bounds_usec[METRICS_DURATION_BUCKETS] = {
	1000, 5000, 10000, 50000, 100000, 500000, 1000000, 5000000, 10000000, 30000000, 60000000, 300000000,
};

/* The reason label of poold_connections_refused_total, by enum refusal. */
static const char *const refusal_names[] = {
	[REFUSE_DENY] = "deny",
	[REFUSE_NOT_ALLOWED] = "not_allowed",
	[REFUSE_RATE] = "rate",
	[REFUSE_PER_SOURCE_RATE] = "per_source_rate",
	[REFUSE_MAX_CONNECTIONS] = "max_connections",
	[REFUSE_PER_SOURCE] = "per_source",
	[REFUSE_NO_FDS] = "no_fds",
	[REFUSE_NO_MEMORY] = "no_memory",
	[REFUSE_PROXY_UNTRUSTED] = "proxy_untrusted",
	[REFUSE_PROXY_BAD] = "proxy_bad",
	[REFUSE_PROXY_TIMEOUT] = "proxy_timeout",
};
_Static_assert(ARRAY_SIZE(refusal_names) == REFUSE_N, "a reason label for every enum refusal");

static const char *const proxy_results[PROXY_RESULT_N] = {
	[PROXY_RESULT_PROXY] = "proxy",
	[PROXY_RESULT_LOCAL] = "local",
	[PROXY_RESULT_BAD] = "bad",
	[PROXY_RESULT_TIMEOUT] = "timeout",
};

struct metrics {
	metrics_collect_fn collect;
	void *ctx;
	struct log *log;
	struct MHD_Daemon *daemons[METRICS_DAEMONS_MAX];
	size_t n;
	pthread_mutex_t lock;  /* guards the two below: MHD threads already running log too */
	bool starting;         /* MHD_start_daemon() runs: keep its messages */
	char start_error[256]; /* the last of them */
};

void metrics_snapshot_free(struct metrics_snapshot *s)
{
	free(s->listeners);
	s->listeners = NULL;
	s->nlisteners = 0;
}

const char *metrics_refusal_name(int refusal)
{
	return refusal >= 0 && refusal < REFUSE_N ? refusal_names[refusal] : NULL;
}

/* A label value as the text format wants it: backslash, double quote and
 * newline escaped. */
static void put_label_value(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\')
			fputs("\\\\", f);
		else if (*s == '"')
			fputs("\\\"", f);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

/* Microseconds as seconds, exactly, without trailing zeros: 5000 -> 0.005. */
static void put_seconds(FILE *f, uint64_t usec)
{
	char frac[8];
	int n;

	n = snprintf(frac, sizeof(frac), "%06" PRIu64, usec % USEC_PER_SEC);
	while (n > 0 && frac[n - 1] == '0')
		frac[--n] = '\0';
	fprintf(f, "%" PRIu64 "%s%s", usec / USEC_PER_SEC, n ? "." : "", frac);
}

static void put_family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_simple(FILE *f, const char *name, const char *type, const char *help, uint64_t v)
{
	put_family(f, name, type, help);
	fprintf(f, "%s %" PRIu64 "\n", name, v);
}

int metrics_render(const struct metrics_snapshot *s, const char *version, char **ret, size_t *ret_len)
{
	char *buf = NULL;
	size_t len = 0;
	uint64_t cum = 0;
	FILE *f;
	int r;

	f = open_memstream(&buf, &len);
	if (!f)
		return -ENOMEM;

	put_family(f, "poold_build_info", "gauge", "Always 1; the version label is poold's version.");
	fputs("poold_build_info{version=\"", f);
	put_label_value(f, version);
	fputs("\"} 1\n", f);

	put_family(f, "poold_connections_accepted_total", "counter",
		   "Client connections admitted (accepted and not refused), by listener.");
	for (size_t i = 0; i < s->nlisteners; i++) {
		fputs("poold_connections_accepted_total{listener=\"", f);
		put_label_value(f, s->listeners[i].name);
		fprintf(f, "\"} %" PRIu64 "\n", s->listeners[i].accepted);
	}
	put_family(f, "poold_connections_refused_total", "counter",
		   "Client connections refused, by listener and the limit or rule that refused them.");
	for (size_t i = 0; i < s->nlisteners; i++)
		for (int k = 0; k < REFUSE_N; k++) {
			fputs("poold_connections_refused_total{listener=\"", f);
			put_label_value(f, s->listeners[i].name);
			fprintf(f, "\",reason=\"%s\"} %" PRIu64 "\n", refusal_names[k], s->listeners[i].refused[k]);
		}

	put_simple(f, "poold_sessions_active", "gauge", "Client connections open now (admitted, not yet closed).",
		   s->sessions_active);
	put_simple(f, "poold_connections_parked", "gauge",
		   "Open client connections waiting for their client, held by an event loop, not a thread.", s->parked);
	put_simple(f, "poold_queue_waiting", "gauge",
		   "Clients connected and waiting in the listening sockets' backlogs to be accepted.",
		   s->queue_waiting);
	put_family(f, "poold_threads", "gauge", "Worker threads, busy with a client or idle.");
	fprintf(f, "poold_threads{state=\"busy\"} %u\npoold_threads{state=\"idle\"} %u\n", s->threads_busy,
		s->threads_idle);

	put_simple(f, "poold_messages_received_total", "counter", "Messages read from clients (one read each).",
		   s->messages_received);
	put_simple(f, "poold_bytes_received_total", "counter", "Bytes read from clients.", s->bytes_received);
	put_simple(f, "poold_bytes_sent_total", "counter", "Bytes sent to clients.", s->bytes_sent);

	put_family(f, "poold_session_duration_seconds", "histogram",
		   "Client sessions by duration, from accept to close.");
	for (int b = 0; b < METRICS_DURATION_BUCKETS; b++) {
		cum += s->duration_bucket[b];
		fputs("poold_session_duration_seconds_bucket{le=\"", f);
		put_seconds(f, metrics_duration_bounds_usec[b]);
		fprintf(f, "\"} %" PRIu64 "\n", cum);
	}
	fprintf(f, "poold_session_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
		s->duration_count > cum ? s->duration_count : cum);
	fputs("poold_session_duration_seconds_sum ", f);
	put_seconds(f, s->duration_sum_usec);
	fprintf(f, "\npoold_session_duration_seconds_count %" PRIu64 "\n",
		s->duration_count > cum ? s->duration_count : cum);

	put_simple(f, "poold_log_entries_dropped_total", "counter",
		   "Log entries dropped because the log queue was full.", s->log_dropped);

	put_family(f, "poold_reloads_total", "counter", "Configuration reloads (SIGHUP), by result.");
	fprintf(f,
		"poold_reloads_total{result=\"success\"} %" PRIu64 "\npoold_reloads_total{result=\"failure\"} %" PRIu64
		"\n",
		s->reloads_success, s->reloads_failure);
	put_family(f, "poold_config_last_reload_success_timestamp_seconds", "gauge",
		   "When the configuration in use was loaded (the start, or the last successful reload), in "
		   "seconds since the epoch.");
	fputs("poold_config_last_reload_success_timestamp_seconds ", f);
	put_seconds(f, s->last_reload_success_usec);
	fputc('\n', f);

	put_family(f, "poold_proxy_headers_total", "counter",
		   "PROXY protocol headers, by result: proxy (a client's address), local (the balancer's own "
		   "check), bad, timeout.");
	for (int i = 0; i < PROXY_RESULT_N; i++)
		fprintf(f, "poold_proxy_headers_total{result=\"%s\"} %" PRIu64 "\n", proxy_results[i],
			s->proxy_headers[i]);

	r = ferror(f) ? -ENOMEM : 0;
	if (fclose(f) != 0)
		r = -ENOMEM;
	if (r < 0) {
		free(buf);
		return r;
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *text, bool allow)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
	if (allow)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* MHD's request handler, on its thread. A method other than GET or HEAD is
 * answered at the first call (the headers): MHD then closes the connection
 * without reading a body. A GET is answered at the second call, once the
 * request is complete, which lets MHD keep the connection alive for the next
 * scrape (an answer at the first call makes it close). */
static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
			      const char *http_version, const char *upload_data, size_t *upload_data_size, void **req)
{
	struct metrics *m = cls;
	struct metrics_snapshot s;
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char *body = NULL;
	size_t len = 0;
	int r;

	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "Method not allowed: GET /metrics.\n", true);
	if (!*req) {
		*req = conn; /* any non-NULL: the headers were seen */
		return MHD_YES;
	}
	if (*upload_data_size != 0)
		return reply(conn, MHD_HTTP_BAD_REQUEST, "A GET takes no body.\n", false);
	if (strcmp(url, METRICS_PATH) != 0)
		return reply(conn, MHD_HTTP_NOT_FOUND, "Not found: poold serves GET /metrics.\n", false);

	m->collect(m->ctx, &s);
	r = metrics_render(&s, POOLD_VERSION, &body, &len);
	metrics_snapshot_free(&s);
	if (r < 0)
		return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "Out of memory.\n", false);
	resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, METRICS_CONTENT_TYPE);
	ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* MHD's own messages (a failed accept, a connection over the limit) go to
 * the log at debug: a scraper that floods the endpoint must not flood the
 * journal too. While starting, the last one is kept for the caller's error. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct metrics *m = cls;
	char msg[512];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n && msg[n - 1] == '\n')
		msg[--n] = '\0';
	pthread_mutex_lock(&m->lock);
	if (m->starting)
		snprintf(m->start_error, sizeof(m->start_error), "%s", msg);
	pthread_mutex_unlock(&m->lock);
	if (log_enabled(m->log, LOG_DEBUG))
		log_event(m->log, LOG_DEBUG, NULL, NULL, "Metrics endpoint: %s", msg);
}

/* "127.0.0.1:9727", "[::1]:9727" or a unix path, for the log. */
static void describe(int fd, char *buf, size_t size)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN];

	snprintf(buf, size, "fd %d", fd);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
		return;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(buf, size, "%s:%u", host, ntohs(in->sin_port));
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(buf, size, "[%s]:%u", host, ntohs(in6->sin6_port));
	} else if (ss.ss_family == AF_UNIX) {
		const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;

		snprintf(buf, size, "%.*s", (int)(sl - offsetof(struct sockaddr_un, sun_path)), un->sun_path);
	}
}

int metrics_start(const int *fds, size_t nfds, metrics_collect_fn collect, void *ctx, struct log *log,
		  struct metrics **ret, char *err, size_t errlen)
{
	struct metrics *m;

	if (nfds > METRICS_DAEMONS_MAX) {
		snprintf(err, errlen, "more than %d metrics sockets", METRICS_DAEMONS_MAX);
		return -E2BIG;
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	m->collect = collect;
	m->ctx = ctx;
	m->log = log;
	pthread_mutex_init(&m->lock, NULL);
	for (size_t i = 0; i < nfds; i++) {
		char where[128];

		describe(fds[i], where, sizeof(where));
		pthread_mutex_lock(&m->lock);
		m->starting = true;
		snprintf(m->start_error, sizeof(m->start_error), "no reason given");
		pthread_mutex_unlock(&m->lock);

		/* Port 0 and no address: MHD binds nothing of its own. */
		m->daemons[i] = MHD_start_daemon(
			MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC | MHD_USE_ERROR_LOG, 0, NULL,
			NULL, answer, m, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fds[i], MHD_OPTION_CONNECTION_LIMIT,
			(unsigned)METRICS_CONNECTIONS, MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)METRICS_PER_IP,
			MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_TIMEOUT_SEC,
			MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)METRICS_MEMORY_LIMIT, MHD_OPTION_EXTERNAL_LOGGER,
			mhd_log, m, MHD_OPTION_END);
		pthread_mutex_lock(&m->lock);
		m->starting = false;
		if (!m->daemons[i])
			snprintf(err, errlen, "libmicrohttpd did not start on %s: %s", where, m->start_error);
		pthread_mutex_unlock(&m->lock);
		if (!m->daemons[i]) {
			metrics_stop(m);
			return -EIO;
		}
		m->n++;
		log_event(log, LOG_INFO, NULL, NULL, "Serving metrics on %s (GET %s).", where, METRICS_PATH);
	}
	*ret = m;
	return 0;
}

/* Stops the HTTP threads (a scrape in progress is cut) and hands the
 * listening fds back: MHD_quiesce_daemon() takes them out of MHD's hands, so
 * MHD_stop_daemon() neither shuts them down nor closes them. */
struct metrics *metrics_stop(struct metrics *m)
{
	if (!m)
		return NULL;
	for (size_t i = 0; i < m->n; i++) {
		MHD_quiesce_daemon(m->daemons[i]);
		MHD_stop_daemon(m->daemons[i]);
	}
	pthread_mutex_destroy(&m->lock);
	free(m);
	return NULL;
}
