/* session.c - runs one step of a client's session in its event loop: send
 * what is left of the payload, then read and log messages, until the socket
 * would block. It never waits on a client: it returns what it waits for and
 * the loop watches the socket until then. A conn lives and dies in the one
 * loop thread that accepted it, so nothing here takes a lock.
 *
 * Lingering close (nginx's lingering_close, Apache's lingering close). When
 * poold ends a session while the client's bytes sit unread in the socket, or
 * while sent bytes are still unacknowledged, a plain close() makes the kernel
 * answer with a reset and throw away the part of the payload not yet
 * delivered. So poold shuts its side down (the client reads the rest and a
 * clean EOF), then reads and discards whatever the client still sends until
 * the client closes, bounded by lingering_time, lingering_timeout and
 * lingering_bytes. A lingering conn is parked like any waiting client. With
 * nothing pending either way (the common case: the client sent nothing more
 * and acknowledged everything) it closes at once, at the cost of two ioctls. */
#include "session.h"
#include "config.h"
#include "log.h"
#include "payload.h"
#include "proxy.h"
#include "util.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#define READS_PER_STEP 16    /* then back to the loop, so one chatty client cannot hog it */
#define DRAIN_BYTES    16384 /* per read while lingering */

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

/* Says who the client is. IPv4 clients of a dual-stack socket are IPv4, not
 * ::ffff:a.b.c.d; unix-socket clients are their peer's uid (SO_PEERCRED),
 * the one identity they have, and count per uid. */
void peer_describe(int fd, const struct sockaddr_storage *ss, socklen_t len, struct peer *p)
{
	p->port = 0;
	if (addr_from_sockaddr((const struct sockaddr *)ss, len, &p->a) == 0) {
		p->port = ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
							  : ((const struct sockaddr_in *)ss)->sin_port);
		if (p->a.family == AF_INET) {
			size_t n;

			format_ipv4(p->a.bytes, p->port, p->remote, sizeof(p->remote));
			n = strcspn(p->remote, ":");
			memcpy(p->addr, p->remote, n);
			p->addr[n] = '\0';
		} else {
			inet_ntop(AF_INET6, p->a.bytes, p->addr, sizeof(p->addr));
			snprintf(p->remote, sizeof(p->remote), "[%s]:%u", p->addr, p->port);
		}
		return;
	}
	snprintf(p->addr, sizeof(p->addr), "unix");
	{
		struct ucred cred;
		socklen_t clen = sizeof(cred);

		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0) {
			addr_unix((uint32_t)cred.uid, &p->a);
			snprintf(p->remote, sizeof(p->remote), "unix uid %u", (unsigned)cred.uid);
		} else {
			addr_unix(UINT32_MAX, &p->a);
			snprintf(p->remote, sizeof(p->remote), "unix");
		}
	}
}

uint64_t session_deadline(const struct conn *c)
{
	const struct service *svc = c->svc;
	uint64_t idle, whole;

	if (c->state == CONN_PROXY)
		return c->start_usec + svc->proxy_usec;
	if (c->state == CONN_LINGERING) {
		idle = c->active_usec + svc->linger_idle_usec;
		whole = c->linger_start_usec + svc->linger_usec;
	} else {
		idle = c->active_usec + svc->idle_usec;
		whole = c->start_usec + svc->session_usec;
	}
	return idle < whole ? idle : whole;
}

static int proxy_refuse(struct conn *c, int why, const char *detail)
{
	c->refusal = why;
	c->refusal_detail = detail;
	return SESSION_REFUSE;
}

/* Takes in what the header says: the real client, or, for LOCAL, UNKNOWN and
 * UNSPEC (and unix paths, no identity to count), the connection's own. */
static int proxy_apply(struct conn *c, const struct proxy_hdr *h)
{
	struct proxy_info *info = calloc(1, sizeof(*info));

	if (!info)
		return proxy_refuse(c, REFUSE_NO_MEMORY, NULL);
	memcpy(info->remote, c->peer.remote, sizeof(info->remote));
	snprintf(info->authority, sizeof(info->authority), "%s", h->authority);
	snprintf(info->tls_version, sizeof(info->tls_version), "%s", h->tls_version);
	info->ssl = h->ssl;
	c->proxy = info;
	if (h->local || (h->family != AF_INET && h->family != AF_INET6)) {
		c->health_check = h->health_check;
		return SESSION_ADMIT;
	}
	peer_describe(c->fd, &h->src, sizeof(h->src), &c->peer);
	return SESSION_ADMIT;
}

/* Reads the PROXY header with one recv() of what has arrived, up to
 * PROXY_HEADER_MAX bytes. A header not yet complete is all header (the
 * parser never asks for more once it holds one), so it is kept and each
 * wake-up consumes what it saw: a header that trickles in never spins the
 * loop. Bytes the client sent right after the header (up to a kilobyte) are
 * kept in c->hdr and read as its first message, before the socket. */
static int step_proxy(struct conn *c, uint64_t now)
{
	char buf[PROXY_HEADER_MAX];
	const char *why = NULL;
	struct proxy_hdr h;
	size_t have = c->hdr_len, got;
	ssize_t n;
	int r;

	if (have)
		memcpy(buf, c->hdr, have);
	do
		n = recv(c->fd, buf + have, sizeof(buf) - have, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return SESSION_WANT_READ;
	if (n < 0)
		return proxy_refuse(c, REFUSE_PROXY_BAD,
				    errno == ECONNRESET ? "connection reset before the header ended"
							: "receive failed");
	if (n == 0)
		return proxy_refuse(c, REFUSE_PROXY_BAD,
				    have ? "connection closed within the header" : "connection closed before a header");
	c->active_usec = now;
	got = have + (size_t)n;
	r = proxy_parse(buf, got, c->svc->proxy, &h, &why);
	if (r < 0)
		return proxy_refuse(c, REFUSE_PROXY_BAD, why);
	if (r == 0) {
		if (!c->hdr && !(c->hdr = malloc(PROXY_HEADER_MAX)))
			return proxy_refuse(c, REFUSE_NO_MEMORY, NULL);
		memcpy(c->hdr, buf, got);
		c->hdr_len = got;
		return SESSION_WANT_READ;
	}
	/* What follows the header is the client's: its first message. */
	c->hdr_len = got - (size_t)r;
	if (c->hdr_len) {
		if (!c->hdr && !(c->hdr = malloc(PROXY_HEADER_MAX)))
			return proxy_refuse(c, REFUSE_NO_MEMORY, NULL);
		memcpy(c->hdr, buf + r, c->hdr_len);
	}
	c->state = CONN_SENDING;
	return proxy_apply(c, &h);
}

/* Takes up to size bytes the client sent with its PROXY header, if any. */
static size_t take_pending(struct conn *c, char *buf, size_t size)
{
	size_t n = c->hdr_len < size ? c->hdr_len : size;

	memcpy(buf, c->hdr, n);
	memmove(c->hdr, c->hdr + n, c->hdr_len - n);
	c->hdr_len -= n;
	return n;
}

static int step_send(struct conn *c, uint64_t now)
{
	const struct bytes *p = &c->svc->payload;

	while (c->sent < p->len) {
		ssize_t n = send(c->fd, p->data + c->sent, p->len - c->sent, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			c->sent += (size_t)n;
			c->active_usec = now;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return SESSION_WANT_WRITE;
		c->reason = errno == EPIPE        ? "client closed before the payload was sent"
			    : errno == ECONNRESET ? "connection reset during the payload"
						  : "send failed";
		return SESSION_DONE;
	}
	c->state = CONN_READING;
	return SESSION_WANT_READ;
}

static void log_message(struct conn *c, struct log *log, const char *buf, size_t n)
{
	char preview[256];

	if (!c->svc->log_messages || !log_enabled(log, LOG_INFO))
		return;
	payload_escape(buf, n, preview, sizeof(preview));
	log_event(log, LOG_INFO, NULL,
		  &(struct log_conn){ .id = c->id,
				      .remote = c->peer.remote,
				      .addr = c->peer.addr,
				      .port = c->peer.port,
				      .listener = c->svc->name,
				      .proxy = c->proxy ? c->proxy->remote : NULL,
				      .bytes = n,
				      .data = buf,
				      .data_len = n },
		  "Received message %u (%zu bytes) from %s: \"%s\"", c->messages, n, c->peer.remote, preview);
}

/* One read of the client's bytes: those that came with a PROXY header
 * first, then the socket's. recv()'s result, EINTR retried. */
static ssize_t client_read(struct conn *c, char *buf, size_t size)
{
	ssize_t n;

	if (c->hdr_len)
		return (ssize_t)take_pending(c, buf, size);
	do
		n = recv(c->fd, buf, size, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	return n;
}

/* What a client_read() that returned n <= 0 means: the client is not ready
 * (SESSION_WANT_READ), or the session is over and *why says how (eof for a
 * clean end of file). */
static int read_ended(struct conn *c, ssize_t n, const char *eof, const char **why)
{
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return SESSION_WANT_READ;
	c->clean = n == 0;
	*why = n == 0 ? eof : errno == ECONNRESET ? "connection reset by client" : "receive failed";
	return SESSION_DONE;
}

/* Reads and discards what the client still sends after our side shut down,
 * until it closes or a bound is reached. */
static int step_linger(struct conn *c, uint64_t now)
{
	char buf[DRAIN_BYTES];

	for (int i = 0; i < READS_PER_STEP; i++) {
		ssize_t n = client_read(c, buf, sizeof(buf));

		if (n <= 0)
			return read_ended(c, n, "client closed", &c->linger_end);
		c->discarded += (uint64_t)n;
		c->active_usec = now;
		if (c->discarded > c->svc->linger_bytes) {
			c->linger_end = "closed at lingering_bytes";
			return SESSION_DONE;
		}
	}
	return SESSION_WANT_READ;
}

/* poold ends the session (c->reason says why) once the whole payload is
 * queued: close at once when nothing is pending either way, else shut our
 * side down and linger (see the top of this file). */
static int session_finish(struct conn *c, uint64_t now)
{
	int unread = 0, outq = 0;

	if (ioctl(c->fd, FIONREAD, &unread) == 0 && unread == 0 && ioctl(c->fd, SIOCOUTQ, &outq) == 0 && outq == 0) {
		/* The FIN goes out now: a client byte that lands between the
		 * check and the close() makes the kernel answer with a reset,
		 * and the client, which has every payload byte already, must
		 * see the FIN (a clean EOF) before it. */
		shutdown(c->fd, SHUT_WR);
		c->clean = true;
		return SESSION_DONE;
	}
	if (c->svc->linger_usec == 0 || shutdown(c->fd, SHUT_WR) < 0)
		return SESSION_DONE;
	c->state = CONN_LINGERING;
	c->linger_start_usec = c->active_usec = now;
	return step_linger(c, now);
}

static int step_read(struct conn *c, struct log *log, void **scratch, uint64_t now)
{
	const struct service *svc = c->svc;
	size_t size = svc->message_size;
	char *buf;

	/* The loop's scratch buffer: a malloc'ed size_t header, then data. */
	if (!*scratch || *(size_t *)*scratch < size) {
		size_t *nb = realloc(*scratch, sizeof(size_t) + size);

		if (!nb) {
			c->reason = "out of memory";
			return SESSION_DONE;
		}
		*nb = size;
		*scratch = nb;
	}
	buf = (char *)((size_t *)*scratch + 1);

	for (int i = 0; i < READS_PER_STEP; i++) {
		ssize_t n;

		if (c->messages >= svc->max_messages) {
			c->reason = "all messages read";
			return session_finish(c, now);
		}
		bool pending = c->hdr_len > 0;

		n = client_read(c, buf, size);
		if (n <= 0)
			return read_ended(c, n, "closed by client", &c->reason);
		c->messages++;
		c->received += (uint64_t)n;
		c->active_usec = now;
		log_message(c, log, buf, (size_t)n);
		/* A short read from the socket took all it had: the next recv()
		 * would find EAGAIN. The event loop watches the socket level-
		 * triggered and comes back when more arrives (or the client
		 * closes), so that recv() is saved: one call per message. */
		if (!pending && (size_t)n < size && c->messages < svc->max_messages)
			return SESSION_WANT_READ;
	}
	/* Still more to read: back to the event loop, behind the others. */
	return SESSION_WANT_READ;
}

/* Runs the session until it would block; returns SESSION_WANT_* to be parked
 * or SESSION_DONE (c->reason says why) to be closed. */
int session_step(struct conn *c, struct log *log, void **scratch)
{
	uint64_t now = now_usec();

	if (now >= session_deadline(c)) {
		if (c->state == CONN_PROXY) /* unless poold is stopping (the loop said so) */
			return c->reason ? SESSION_DONE : proxy_refuse(c, REFUSE_PROXY_TIMEOUT, NULL);
		if (c->state == CONN_LINGERING) {
			if (!c->linger_end)
				c->linger_end = now >= c->linger_start_usec + c->svc->linger_usec
							? "closed at lingering_time"
							: "closed at lingering_timeout";
			return SESSION_DONE;
		}
		if (c->reason) /* the loop said why already */
			return SESSION_DONE;
		if (now >= c->start_usec + c->svc->session_usec) {
			/* A hard cap: no lingering past it. */
			c->reason = "session timeout";
			return SESSION_DONE;
		}
		/* A silent client that has the whole payload queued still gets it. */
		c->reason = "idle timeout";
		return c->state == CONN_READING ? session_finish(c, now) : SESSION_DONE;
	}
	switch (c->state) {
	case CONN_PROXY:
		return step_proxy(c, now);
	case CONN_SENDING: {
		int r = step_send(c, now);

		if (r != SESSION_WANT_READ)
			return r;
		if (c->svc->max_messages == 0) {
			c->reason = "payload sent";
			return session_finish(c, now);
		}
		/* A client answers only after it got the payload: a recv() now
		 * would almost always fail with EAGAIN. The loop watches the
		 * socket and comes back when the client speaks. Bytes that
		 * came with a PROXY header are already here: read them now. */
		if (c->hdr_len)
			return step_read(c, log, scratch, now);
		return SESSION_WANT_READ;
	}
	case CONN_READING:
		return step_read(c, log, scratch, now);
	default:
		return step_linger(c, now);
	}
}

/* Ends the session now, whatever it was doing (poold is stopping). */
void session_abort(struct conn *c, const char *why)
{
	if (c->state == CONN_LINGERING)
		c->linger_end = why;
	else
		c->reason = why;
}

/* Logs the close record and closes the socket. Unless the session ended
 * cleanly (the client closed, or everything was acknowledged), the record
 * says how many bytes the kernel still held unacknowledged (SIOCOUTQ): with
 * unread bytes at close() the kernel resets the connection and drops them. */
void session_close(struct conn *c, struct log *log)
{
	uint64_t usec = now_usec() - c->start_usec;
	char linger[160] = "", unsent[96] = "", via[400] = "";
	int outq = 0;

	/* The balancer's health checks (PROXY LOCAL) are logged at debug. */
	int level = c->health_check ? LOG_DEBUG : LOG_INFO;

	if (log_enabled(log, level)) {
		if (!c->clean && ioctl(c->fd, SIOCOUTQ, &outq) == 0 && outq > 0) {
			/* After shutdown() the FIN counts as one byte. */
			if (c->state == CONN_LINGERING)
				outq--;
			if (outq > 0)
				snprintf(unsent, sizeof(unsent),
					 "; %d bytes not yet received by the client at the close", outq);
		}
		if (c->proxy && !c->health_check)
			snprintf(via, sizeof(via), " (via %s%s%s%s%s)", c->proxy->remote,
				 c->proxy->tls_version[0] ? ", "
				 : c->proxy->ssl          ? ", TLS"
							  : "",
				 c->proxy->tls_version, c->proxy->authority[0] ? ", authority " : "",
				 c->proxy->authority);
		if (c->state == CONN_LINGERING) {
			uint64_t l = now_usec() - c->linger_start_usec;

			snprintf(linger, sizeof(linger),
				 "; lingered %" PRIu64 ".%03" PRIu64 " ms, discarded %" PRIu64 " bytes, %s", l / 1000,
				 l % 1000, c->discarded, c->linger_end ? c->linger_end : "closed");
		}
		log_event(log, level, NULL,
			  &(struct log_conn){
				  .id = c->id,
				  .remote = c->peer.remote,
				  .addr = c->peer.addr,
				  .port = c->peer.port,
				  .listener = c->svc->name,
				  .proxy = c->proxy ? c->proxy->remote : NULL,
				  .authority = c->proxy && c->proxy->authority[0] ? c->proxy->authority : NULL,
				  .tls_version = c->proxy && c->proxy->tls_version[0] ? c->proxy->tls_version : NULL,
				  .bytes = c->sent,
				  .duration_usec = usec },
			  "Closed connection %" PRIu64 " from %s%s%s%s%s after %" PRIu64 ".%03" PRIu64
			  " ms: sent %zu of %zu bytes, %u message%s (%" PRIu64 " bytes) received, %s%s%s",
			  c->id, c->peer.remote, via, c->svc->name ? " on listener " : "",
			  c->svc->name ? c->svc->name : "", c->health_check ? " (PROXY health check)" : "", usec / 1000,
			  usec % 1000, c->sent, c->svc->payload.len, c->messages, c->messages == 1 ? "" : "s",
			  c->received, c->reason ? c->reason : "closed", linger, unsent);
	}
	close(c->fd);
	c->fd = -1;
}
