/* session.h - one client's session, the tutorial's protocol: on a PROXY
 * listener the header first, then the payload, then up to max_messages reads
 * of message_size bytes, each logged, then a lingering close that lets the
 * client read the whole payload. */
#ifndef POOLD_SESSION_H
#define POOLD_SESSION_H

#include "access.h"
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct config;
struct service;
struct log;

enum { CONN_PROXY, CONN_SENDING, CONN_READING, CONN_LINGERING };

/* Why a client was refused: counted apart in STATUS=, named in the log. */
enum refusal {
	REFUSE_DENY,
	REFUSE_NOT_ALLOWED,
	REFUSE_RATE,
	REFUSE_PER_SOURCE_RATE,
	REFUSE_MAX_CONNECTIONS,
	REFUSE_PER_SOURCE,
	REFUSE_NO_FDS,
	REFUSE_NO_MEMORY,
	REFUSE_PROXY_UNTRUSTED,
	REFUSE_PROXY_BAD,
	REFUSE_PROXY_TIMEOUT,
	REFUSE_N,
};

/* Who the client is, as logged and as counted per source. */
struct peer {
	char remote[64]; /* "addr:port", "[v6]:port" or "unix uid N"; IPv4 never as ::ffff: */
	char addr[48];   /* the address alone (POOLD_REMOTE_ADDR), "unix" for unix clients */
	unsigned port;   /* 0 for unix clients */
	struct addr a;   /* the address (or uid) that access lists and per-source limits see */
};
/* What the PROXY header said beyond the client's address. */
struct proxy_info {
	char remote[64];      /* the balancer (POOLD_PROXY) */
	char authority[256];  /* POOLD_PROXY_AUTHORITY, "" if none */
	char tls_version[32]; /* POOLD_TLS_VERSION, "" if none */
	bool ssl;             /* the client came over TLS */
};

/* SESSION_ADMIT: the PROXY header named the real client, whom the reactor
 * admits (or refuses) before the payload; SESSION_REFUSE: refused, c->refusal
 * says why. */
enum { SESSION_DONE, SESSION_WANT_READ, SESSION_WANT_WRITE, SESSION_ADMIT, SESSION_REFUSE };

/* One client's session: what its protocol needs and nothing else. The event
 * loop that owns it keeps its own links, registration and accounting around
 * it (struct link in reactor.c). */
struct conn {
	int fd;
	int state; /* CONN_* */
	uint64_t id;
	const struct service *svc; /* its listener's settings (the loop holds the config) */
	size_t sent;               /* payload bytes sent */
	unsigned messages;
	uint64_t received;                /* bytes */
	uint64_t start_usec, active_usec; /* monotonic */
	uint64_t linger_start_usec;       /* when our side shut down */
	uint64_t discarded;               /* bytes drained while lingering */
	const char *reason;               /* why the session ended */
	const char *linger_end;           /* how the lingering close ended */
	bool clean;                       /* nothing of ours was left unacknowledged */
	struct peer peer;
	struct proxy_info *proxy; /* after a PROXY header; NULL otherwise */
	bool health_check;        /* a PROXY LOCAL header: the balancer's own check */
	char *hdr;                /* the part of a PROXY header received so far */
	size_t hdr_len;
	int refusal; /* REFUSE_*, with SESSION_REFUSE */
	const char *refusal_detail;
};

void peer_describe(int fd, const struct sockaddr_storage *ss, socklen_t len, struct peer *ret);
int session_step(struct conn *c, struct log *log, void **scratch);
uint64_t session_deadline(const struct conn *c);
void session_abort(struct conn *c, const char *why);
void session_close(struct conn *c, struct log *log);

#endif
