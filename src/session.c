/* session.c - runs one step of a client's session in a worker thread: send
 * what is left of the payload, then read and log messages, until the socket
 * would block. It never waits on a client: it returns what it waits for and
 * the reactor parks the connection until then. The conn is owned by the
 * calling worker for the whole step, so nothing here takes a lock. */
#include "session.h"
#include "config.h"
#include "log.h"
#include "payload.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <sys/socket.h>

#define READS_PER_STEP 16 /* then requeue, so one chatty client cannot hog a worker */

uint64_t session_deadline(const struct conn *c)
{
	uint64_t idle = c->active_usec + c->cfg->idle_usec;
	uint64_t whole = c->start_usec + c->cfg->session_usec;

	return idle < whole ? idle : whole;
}

static int step_send(struct conn *c, uint64_t now)
{
	const struct bytes *p = &c->cfg->payload;

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

	if (!c->cfg->log_messages || !log_enabled(log, LOG_INFO))
		return;
	payload_escape(buf, n, preview, sizeof(preview));
	log_event(log, LOG_INFO, NULL,
		  &(struct log_conn){ .id = c->id, .remote = c->remote, .bytes = n, .data = buf, .data_len = n },
		  "Received message %u (%zu bytes) from %s: \"%s\"", c->messages, n, c->remote, preview);
}

static int step_read(struct conn *c, struct log *log, void **scratch, uint64_t now)
{
	const struct config *cfg = c->cfg;
	size_t size = cfg->message_size;
	char *buf;

	/* The worker's scratch buffer: a malloc'ed size_t header, then data. */
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

		if (c->messages >= cfg->max_messages) {
			c->reason = "all messages read";
			return SESSION_DONE;
		}
		n = recv(c->fd, buf, size, MSG_DONTWAIT);
		if (n > 0) {
			c->messages++;
			c->received += (uint64_t)n;
			c->active_usec = now;
			log_message(c, log, buf, (size_t)n);
			continue;
		}
		if (n == 0) {
			c->reason = "closed by client";
			return SESSION_DONE;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return SESSION_WANT_READ;
		c->reason = errno == ECONNRESET ? "connection reset by client" : "receive failed";
		return SESSION_DONE;
	}
	/* Still more to read: let the reactor requeue us behind the others. */
	return SESSION_WANT_READ;
}

/* Runs the session until it would block; returns SESSION_WANT_* to be parked
 * or SESSION_DONE (c->reason says why) to be closed. */
int session_step(struct conn *c, struct log *log, void **scratch)
{
	uint64_t now = now_usec();

	if (c->expired || now >= session_deadline(c)) {
		if (!c->reason) /* the reactor may have said why already */
			c->reason = now >= c->start_usec + c->cfg->session_usec ? "session timeout" : "idle timeout";
		return SESSION_DONE;
	}
	if (c->state == CONN_SENDING) {
		int r = step_send(c, now);

		if (r != SESSION_WANT_READ)
			return r;
		if (c->cfg->max_messages == 0) {
			c->reason = "payload sent";
			return SESSION_DONE;
		}
		/* A client answers only after it got the payload: a recv() now
		 * would almost always fail with EAGAIN. The worker looks again
		 * later or parks the conn in epoll (reactor_work()). */
		return SESSION_WANT_READ;
	}
	return step_read(c, log, scratch, now);
}

void session_log_end(const struct conn *c, struct log *log)
{
	uint64_t usec = now_usec() - c->start_usec;

	if (!log_enabled(log, LOG_INFO))
		return;
	log_event(log, LOG_INFO, NULL,
		  &(struct log_conn){ .id = c->id, .remote = c->remote, .bytes = c->sent, .duration_usec = usec },
		  "Closed connection %" PRIu64 " from %s after %" PRIu64 ".%03" PRIu64
		  " ms: sent %zu of %zu bytes, %u messages (%" PRIu64 " bytes) received, %s",
		  c->id, c->remote, usec / 1000, usec % 1000, c->sent, c->cfg->payload.len, c->messages, c->received,
		  c->reason ? c->reason : "closed");
}
