/* session.h - one client's session, the tutorial's protocol: the payload,
 * then up to max_messages reads of message_size bytes, each logged. */
#ifndef POOLD_SESSION_H
#define POOLD_SESSION_H

#include "pool.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct config;
struct log;

enum { CONN_SENDING, CONN_READING };
enum { SESSION_DONE, SESSION_WANT_READ, SESSION_WANT_WRITE };

struct conn {
	struct pool_item item;    /* first member: the pool hands it back */
	struct conn *prev, *next; /* the reactor's registry, under its lock */
	pthread_mutex_t lock;     /* guards parked and expired */
	bool parked;              /* armed in epoll, owned by the reactor */
	bool in_epoll;
	bool expired; /* the reactor saw a deadline pass */
	bool looked;  /* requeued once for another look since its last progress */
	int fd;
	int state; /* CONN_* */
	uint64_t id;
	struct config *cfg; /* the config it was accepted under */
	size_t sent;        /* payload bytes sent */
	unsigned messages;
	uint64_t received;                               /* bytes */
	uint64_t start_usec, active_usec, deadline_usec; /* monotonic */
	const char *reason;                              /* why the session ended */
	struct source *source;                           /* per-address count, reactor-owned */
	char remote[64];                                 /* "addr:port", IPv4 never as ::ffff: */
};

int session_step(struct conn *c, struct log *log, void **scratch);
uint64_t session_deadline(const struct conn *c);
void session_log_end(const struct conn *c, struct log *log);

#endif
