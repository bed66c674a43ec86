/*
 * loadgen: an epoll load generator for poold and its peers.
 *
 * Each client session: connect, receive exactly the expected payload (its
 * length, and optionally its bytes, are checked), then either close at once
 * (-C, workload W1) or send -m messages of -s bytes -i ms apart, shut down its
 * write side and wait for the server to close (the tutorial protocol, W2).
 * -k idle clients connect before the measured phase and are held open, never
 * sending, until the end (slow clients, W3). With --proxy v1|v2 every client,
 * idle ones too, first sends the PROXY protocol header a balancer would send
 * for its connection (our end as the client, the target as the server), once
 * the connect completes and before the payload is read.
 *
 * Every session has a deadline (-t) and the whole run is bounded in time
 * (-d, or --max-time for -n) and in count. Each worker thread (-j) owns one
 * epoll instance and its own statistics; they are merged at the end. Output is
 * a human summary and one "RESULT {json}" line for the bench harness.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define MAX_CONCURRENCY 100000
#define MAX_IDLE 100000
#define MAX_THREADS 64
#define MAX_COUNT 50000000ULL
#define MAX_DURATION_S 3600.0
#define MAX_PAYLOAD (16u * 1024 * 1024)
#define MAX_MESSAGES 1000000
#define MAX_MESSAGE_SIZE (1024u * 1024)
#define SCRATCH_SIZE 65536

/* Error kinds; keep in step with err_names[]. */
enum err_kind {
	ERR_CONNECT_REFUSED,
	ERR_CONNECT_ADDRNOTAVAIL,
	ERR_CONNECT_OTHER,
	ERR_TIMEOUT_CONNECT,
	ERR_TIMEOUT_PAYLOAD,
	ERR_TIMEOUT_SESSION,
	ERR_SHORT_PAYLOAD,
	ERR_LONG_PAYLOAD,
	ERR_BAD_PAYLOAD,
	ERR_CLOSED_EARLY,
	ERR_RESET,
	ERR_OTHER,
	ERR_MAX
};

static const char *const err_names[ERR_MAX] = {
	"connect_refused", "connect_addrnotavail", "connect_other",
	"timeout_connect", "timeout_payload", "timeout_session",
	"short_payload", "long_payload", "bad_payload",
	"closed_early", "reset", "other",
};

enum sess_state {
	SESS_FREE,
	SESS_PAYLOAD,  /* connecting or waiting for the payload */
	SESS_SENDING,  /* payload received, sending messages */
	SESS_DRAIN,    /* all sent, write side shut, waiting for the server's EOF */
	SESS_IDLE,     /* idle client: reads and discards, never sends */
};

struct sess {
	int fd;
	enum sess_state state;
	bool want_out;          /* EPOLLOUT currently registered */
	bool proxy_pending;     /* --proxy: the header is sent once connected */
	uint64_t t0;            /* ns, connect() start */
	uint64_t deadline;      /* ns */
	uint64_t next_send;     /* ns, when the next message is due */
	size_t got;             /* payload bytes received */
	unsigned msgs_sent;
	size_t msg_off;         /* bytes of the current message already sent */
	uint32_t gen;           /* bumped per session: tells a reused slot apart */
};

struct samples {
	uint64_t *v;            /* ns */
	size_t n, cap;
};

struct worker {
	int id;
	int epfd;
	unsigned conc;
	struct sess *s;         /* conc sessions, then the idle clients */
	unsigned nidle;
	unsigned active;        /* measured sessions in flight */
	unsigned src_next;
	uint64_t ok, started, unfinished;
	uint64_t errs[ERR_MAX];
	uint64_t t_last;        /* ns, last measured session end */
	uint64_t idle_connected, idle_payload, idle_closed;
	struct samples ttp, session;
	unsigned char scratch[SCRATCH_SIZE];
};

/* Options (read-only once threads run). */
static struct {
	const char *target;
	unsigned conc;
	double duration;        /* s, 0 = count mode */
	uint64_t count;         /* 0 = duration mode */
	double max_time;        /* s, bound for count mode */
	size_t plen;
	unsigned char *expect;  /* NULL = length check only */
	unsigned msgs;
	size_t msg_size;
	double interval_ms;
	unsigned idle;
	double idle_wait;
	bool close_after_payload;
	double timeout;
	unsigned threads;
	unsigned sources;
	int proxy;              /* 0, or the PROXY protocol version to send */
	bool quiet;
} opt = {
	.conc = 1, .plen = 26, .msg_size = 16, .idle_wait = 5.0, .timeout = 5.0,
	.threads = 1, .sources = 1, .max_time = 60.0,
};

static struct sockaddr_storage target_addr;
static socklen_t target_len;
static bool target_tcp, target_v4_loopback;
static unsigned char *msgbuf;
static atomic_int_fast64_t remaining;   /* count mode: sessions left to start */
static uint64_t t_start, t_stop_starting, t_hard_end;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

__attribute__((format(printf, 1, 2), noreturn))
static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "loadgen: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static void samples_add(struct samples *sm, uint64_t v)
{
	if (sm->n == sm->cap) {
		size_t ncap = sm->cap ? sm->cap * 2 : 4096;
		uint64_t *nv = realloc(sm->v, ncap * sizeof(*nv));

		if (!nv)
			return; /* drop the sample rather than the run */
		sm->v = nv;
		sm->cap = ncap;
	}
	sm->v[sm->n++] = v;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array, in microseconds. */
static double pct_us(const struct samples *sm, double p)
{
	size_t rank;

	if (sm->n == 0)
		return 0.0;
	rank = (size_t)(p / 100.0 * (double)sm->n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > sm->n)
		rank = sm->n;
	return (double)sm->v[rank - 1] / 1000.0;
}

static int parse_u64(const char *s, uint64_t max, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

static int parse_double(const char *s, double max, double *ret)
{
	char *end;
	double v;

	if (!s || !*s)
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || !(v >= 0.0) || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

static unsigned opt_uint(const char *s, uint64_t max, const char *what)
{
	uint64_t v;

	if (parse_u64(s, max, &v) < 0)
		die("bad value for %s", what);
	return (unsigned)v;
}

static double opt_double(const char *s, double max, const char *what)
{
	double v;

	if (parse_double(s, max, &v) < 0)
		die("bad value for %s", what);
	return v;
}

/* C escapes \n \t \r \\ \xNN, like poold's payload text. */
static unsigned char *unescape(const char *s, size_t *ret_len)
{
	size_t n = strlen(s), o = 0;
	unsigned char *out = malloc(n + 1);

	if (!out)
		die("%s", "out of memory");
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '\\' || i + 1 == n) {
			out[o++] = (unsigned char)s[i];
			continue;
		}
		i++;
		switch (s[i]) {
		case 'n': out[o++] = '\n'; break;
		case 't': out[o++] = '\t'; break;
		case 'r': out[o++] = '\r'; break;
		case '\\': out[o++] = '\\'; break;
		case 'x': {
			char hex[3] = { 0 };
			char *end;

			if (i + 2 >= n)
				die("bad \\x escape in %s", s);
			hex[0] = s[i + 1];
			hex[1] = s[i + 2];
			out[o++] = (unsigned char)strtoul(hex, &end, 16);
			if (*end)
				die("bad \\x escape in %s", s);
			i += 2;
			break;
		}
		default:
			die("unknown escape in %s", s);
		}
	}
	*ret_len = o;
	return out;
}

static void target_resolve(const char *t)
{
	memset(&target_addr, 0, sizeof(target_addr));
	if (t[0] == '/' || t[0] == '@') {
		struct sockaddr_un *un = (struct sockaddr_un *)&target_addr;
		size_t len = strlen(t);

		if (len >= sizeof(un->sun_path))
			die("unix path too long: %s", t);
		un->sun_family = AF_UNIX;
		memcpy(un->sun_path, t, len);
		if (t[0] == '@')
			un->sun_path[0] = '\0';
		target_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (t[0] == '/'));
		target_tcp = false;
		return;
	}

	char host[256];
	const char *colon = strrchr(t, ':');
	const char *h = t;
	size_t hlen;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res = NULL;

	if (!colon || !colon[1])
		die("target must be host:port or a unix path: %s", t);
	hlen = (size_t)(colon - t);
	if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
		h++;
		hlen -= 2;
	}
	if (hlen == 0 || hlen >= sizeof(host))
		die("bad host in %s", t);
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || !res)
		die("cannot resolve %s", t);
	memcpy(&target_addr, res->ai_addr, res->ai_addrlen);
	target_len = res->ai_addrlen;
	freeaddrinfo(res);
	target_tcp = true;
	if (target_addr.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&target_addr;

		target_v4_loopback = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
}

static void ep_ctl(struct worker *w, int op, struct sess *s, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = s };

	if (epoll_ctl(w->epfd, op, s->fd, &ev) < 0 && op != EPOLL_CTL_DEL) {
		perror("loadgen: epoll_ctl");
		exit(2);
	}
}

static void sess_close(struct sess *s)
{
	if (s->fd >= 0)
		close(s->fd); /* close() also drops it from the epoll set */
	s->fd = -1;
	s->state = SESS_FREE;
	s->want_out = false;
}

static enum err_kind errno_kind(int e, bool connecting)
{
	switch (e) {
	case ECONNREFUSED:
		return ERR_CONNECT_REFUSED;
	case ECONNRESET:
	case EPIPE:
		return ERR_RESET;
	case ETIMEDOUT:
		return connecting ? ERR_TIMEOUT_CONNECT : ERR_TIMEOUT_SESSION;
	default:
		return connecting ? ERR_CONNECT_OTHER : ERR_OTHER;
	}
}

static bool sess_connecting(const struct sess *s)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	if (!target_tcp)
		return false;
	if (getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return false;
	return ti.tcpi_state == TCP_SYN_SENT;
}

static void sess_start(struct worker *w, struct sess *s);

/* A measured session ended; start the next one in its slot if allowed. */
static void sess_end(struct worker *w, struct sess *s, int err, uint64_t now)
{
	if (err < 0) {
		w->ok++;
		samples_add(&w->session, now - s->t0);
	} else {
		w->errs[err]++;
	}
	sess_close(s);
	w->active--;
	w->t_last = now;
	sess_start(w, s);
}

static void sess_fail(struct worker *w, struct sess *s, enum err_kind k)
{
	sess_end(w, s, (int)k, now_ns());
}

/* The PROXY header for this connection, as a balancer in front of the target
 * would send it: v1 "PROXY TCP4|TCP6 src dst sport dport\r\n" or the v2
 * binary PROXY command (28 bytes for TCP4, 52 for TCP6), with our end
 * (getsockname) as the client and the target (getpeername) as the server.
 * Sent whole or not at all: the socket buffer is empty on a new connection.
 * Returns 0 or -errno. */
static int proxy_send(const struct sess *s)
{
	static const unsigned char sig[12] = {
		0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
	};
	struct sockaddr_storage me, peer;
	socklen_t mlen = sizeof(me), plen = sizeof(peer);
	const void *ma, *pa;
	uint16_t mport, pport;
	unsigned char b[128];
	size_t n, alen;
	ssize_t r;
	bool v6;

	if (getsockname(s->fd, (struct sockaddr *)&me, &mlen) < 0 ||
	    getpeername(s->fd, (struct sockaddr *)&peer, &plen) < 0)
		return -errno;
	if (me.ss_family != peer.ss_family || (me.ss_family != AF_INET && me.ss_family != AF_INET6))
		return -EAFNOSUPPORT;
	v6 = me.ss_family == AF_INET6;
	if (v6) {
		const struct sockaddr_in6 *m = (const void *)&me, *p = (const void *)&peer;

		ma = &m->sin6_addr;
		pa = &p->sin6_addr;
		mport = m->sin6_port;
		pport = p->sin6_port;
		alen = 16;
	} else {
		const struct sockaddr_in *m = (const void *)&me, *p = (const void *)&peer;

		ma = &m->sin_addr;
		pa = &p->sin_addr;
		mport = m->sin_port;
		pport = p->sin_port;
		alen = 4;
	}
	if (opt.proxy == 1) {
		char src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN];

		inet_ntop(me.ss_family, ma, src, sizeof(src));
		inet_ntop(me.ss_family, pa, dst, sizeof(dst));
		n = (size_t)snprintf((char *)b, sizeof(b), "PROXY TCP%c %s %s %u %u\r\n", v6 ? '6' : '4',
				     src, dst, ntohs(mport), ntohs(pport));
	} else {
		memcpy(b, sig, sizeof(sig));
		b[12] = 0x21;                   /* version 2, PROXY */
		b[13] = v6 ? 0x21 : 0x11;       /* TCP over IPv6 or IPv4 */
		b[14] = 0;
		b[15] = (unsigned char)(2 * alen + 4);
		memcpy(b + 16, ma, alen);
		memcpy(b + 16 + alen, pa, alen);
		memcpy(b + 16 + 2 * alen, &mport, 2);
		memcpy(b + 18 + 2 * alen, &pport, 2);
		n = 16 + 2 * alen + 4;
	}
	do
		r = send(s->fd, b, n, MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	return (size_t)r == n ? 0 : -EIO;
}

/* --proxy: the connect is done (EPOLLOUT without EPOLLERR; errors are left to
 * the read path, which classifies them): send the header, then stop asking
 * for EPOLLOUT. Returns 0 or -errno. */
static int proxy_step(struct worker *w, struct sess *s, uint32_t events)
{
	int r;

	if (!s->proxy_pending || !(events & EPOLLOUT) || (events & EPOLLERR))
		return 0;
	r = proxy_send(s);
	if (r < 0)
		return r;
	s->proxy_pending = false;
	ep_ctl(w, EPOLL_CTL_MOD, s, EPOLLIN | EPOLLRDHUP);
	s->want_out = false;
	return 0;
}

/* Open a socket and start connecting; returns 0, or an err_kind + 1. */
static int sock_open(struct worker *w, struct sess *s)
{
	int fd = socket(target_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		perror("loadgen: socket");
		return ERR_OTHER + 1;
	}
	s->fd = fd;
	if (target_tcp) {
		int one = 1;

		/* Messages are small and back to back: never wait for Nagle. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (opt.sources > 1 && target_v4_loopback) {
			struct sockaddr_in src = { .sin_family = AF_INET };

			setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
			src.sin_addr.s_addr = htonl(0x7f000001u + (w->src_next++ % opt.sources));
			if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
				close(fd);
				s->fd = -1;
				return ERR_CONNECT_OTHER + 1;
			}
		}
	}
	s->gen++;
	s->t0 = now_ns();
	s->deadline = s->t0 + (uint64_t)(opt.timeout * 1e9) +
		      (uint64_t)(opt.interval_ms * 1e6) * opt.msgs;
	s->got = 0;
	s->msgs_sent = 0;
	s->msg_off = 0;
	s->want_out = false;
	if (connect(fd, (struct sockaddr *)&target_addr, target_len) < 0 && errno != EINPROGRESS) {
		int e = errno;

		close(fd);
		s->fd = -1;
		if (e == EADDRNOTAVAIL)
			return ERR_CONNECT_ADDRNOTAVAIL + 1;
		if (e == ECONNREFUSED)
			return ERR_CONNECT_REFUSED + 1;
		return ERR_CONNECT_OTHER + 1; /* EAGAIN: unix backlog full */
	}
	/* EPOLLIN alone: a refused connect shows as EPOLLERR, and the payload
	 * arriving proves the connect; a timeout tells the two apart. --proxy
	 * also waits for EPOLLOUT, the connect's end, to send its header. */
	s->proxy_pending = opt.proxy != 0;
	s->want_out = s->proxy_pending;
	ep_ctl(w, EPOLL_CTL_ADD, s, EPOLLIN | EPOLLRDHUP | (s->proxy_pending ? EPOLLOUT : 0));
	return 0;
}

static void sess_start(struct worker *w, struct sess *s)
{
	for (int tries = 0; tries < 1000; tries++) {
		uint64_t now = now_ns();
		int r;

		if (now >= t_stop_starting)
			return;
		if (opt.count) {
			if (atomic_fetch_sub(&remaining, 1) <= 0)
				return;
		}
		w->started++;
		r = sock_open(w, s);
		if (r == 0) {
			s->state = SESS_PAYLOAD;
			w->active++;
			return;
		}
		/* Failed at once (refused, no address): count it, try again. */
		w->errs[r - 1]++;
		w->t_last = now;
	}
}

static void sess_send(struct worker *w, struct sess *s, uint64_t now)
{
	while (s->msgs_sent < opt.msgs) {
		if (s->msg_off == 0 && s->msgs_sent > 0 && now < s->next_send)
			break;
		ssize_t n = send(s->fd, msgbuf + s->msg_off, opt.msg_size - s->msg_off, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				if (!s->want_out) {
					ep_ctl(w, EPOLL_CTL_MOD, s, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
					s->want_out = true;
				}
				return;
			}
			sess_fail(w, s, errno == EPIPE || errno == ECONNRESET ? ERR_RESET : ERR_OTHER);
			return;
		}
		s->msg_off += (size_t)n;
		if (s->msg_off < opt.msg_size)
			continue;
		s->msg_off = 0;
		s->msgs_sent++;
		s->next_send = now + (uint64_t)(opt.interval_ms * 1e6);
	}
	if (s->want_out) {
		ep_ctl(w, EPOLL_CTL_MOD, s, EPOLLIN | EPOLLRDHUP);
		s->want_out = false;
	}
	if (s->msgs_sent == opt.msgs) {
		shutdown(s->fd, SHUT_WR);
		s->state = SESS_DRAIN;
	}
}

static void payload_done(struct worker *w, struct sess *s, uint64_t now)
{
	samples_add(&w->ttp, now - s->t0);
	if (opt.close_after_payload) {
		sess_end(w, s, -1, now);
		return;
	}
	s->state = SESS_SENDING;
	sess_send(w, s, now);
}

static void idle_event(struct worker *w, struct sess *s, uint32_t events)
{
	if (proxy_step(w, s, events) < 0)
		goto closed;
	for (int i = 0; i < 16; i++) {
		ssize_t n = recv(s->fd, w->scratch, sizeof(w->scratch), 0);

		if (n > 0) {
			if (s->got < opt.plen && s->got + (size_t)n >= opt.plen)
				w->idle_payload++;
			s->got += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			if (events & (EPOLLERR | EPOLLHUP))
				break;
			return;
		}
		break;
	}
	/* EOF or error: the server dropped an idle client. */
closed:
	w->idle_closed++;
	close(s->fd);
	s->fd = -1;
	s->state = SESS_FREE;
}

static void sess_event(struct worker *w, struct sess *s, uint32_t events)
{
	uint64_t now;
	uint32_t gen = s->gen;

	if (s->state == SESS_IDLE) {
		idle_event(w, s, events);
		return;
	}
	if (s->state == SESS_PAYLOAD) {
		int r = proxy_step(w, s, events);

		if (r < 0) {
			sess_end(w, s, (int)errno_kind(-r, false), now_ns());
			return;
		}
	}
	if ((events & EPOLLOUT) && s->state == SESS_SENDING) {
		sess_send(w, s, now_ns());
		if (s->state == SESS_FREE || s->gen != gen || (events & ~(uint32_t)EPOLLOUT) == 0)
			return;
	}
	for (int i = 0; i < 64; i++) {
		size_t want = sizeof(w->scratch);
		ssize_t n;

		if (s->state == SESS_PAYLOAD && opt.plen - s->got + 1 < want)
			want = opt.plen - s->got + 1; /* one more than expected shows a long payload */
		n = recv(s->fd, w->scratch, want, 0);
		now = now_ns();
		if (n > 0) {
			if (s->state != SESS_PAYLOAD || s->got + (size_t)n > opt.plen) {
				sess_end(w, s, ERR_LONG_PAYLOAD, now);
				return;
			}
			if (opt.expect && memcmp(w->scratch, opt.expect + s->got, (size_t)n) != 0) {
				sess_end(w, s, ERR_BAD_PAYLOAD, now);
				return;
			}
			s->got += (size_t)n;
			if (s->got == opt.plen) {
				payload_done(w, s, now);
				if (s->state == SESS_FREE || s->gen != gen)
					return; /* closed, or the slot already holds a new session */
			}
			continue;
		}
		if (n == 0) {
			if (s->state == SESS_PAYLOAD)
				sess_end(w, s, ERR_SHORT_PAYLOAD, now);
			else if (s->state == SESS_SENDING)
				sess_end(w, s, ERR_CLOSED_EARLY, now);
			else
				sess_end(w, s, -1, now);
			return;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			if (events & EPOLLERR)
				break;
			return;
		}
		{
			int e = errno;
			bool connecting = s->state == SESS_PAYLOAD && s->got == 0 && e == ECONNREFUSED;

			if (s->state == SESS_PAYLOAD && s->got > 0 && e != ECONNRESET)
				sess_end(w, s, ERR_SHORT_PAYLOAD, now);
			else
				sess_end(w, s, (int)errno_kind(e, connecting), now);
			return;
		}
	}
	if (events & EPOLLERR) {
		int e = 0;
		socklen_t len = sizeof(e);

		getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &e, &len);
		sess_end(w, s, (int)errno_kind(e ? e : EIO, s->got == 0), now_ns());
	}
}

/* Deadlines and delayed sends; O(concurrency), run every few ms. */
static void worker_scan(struct worker *w, uint64_t now)
{
	for (unsigned i = 0; i < w->conc; i++) {
		struct sess *s = &w->s[i];

		if (s->state == SESS_FREE)
			continue;
		if (now >= s->deadline) {
			enum err_kind k;

			if (s->state == SESS_PAYLOAD)
				k = s->got > 0 ? ERR_SHORT_PAYLOAD :
				    sess_connecting(s) ? ERR_TIMEOUT_CONNECT : ERR_TIMEOUT_PAYLOAD;
			else
				k = ERR_TIMEOUT_SESSION;
			sess_end(w, s, (int)k, now);
			continue;
		}
		if (s->state == SESS_SENDING && !s->want_out && s->msgs_sent < opt.msgs &&
		    now >= s->next_send)
			sess_send(w, s, now);
	}
}

static void worker_idle_setup(struct worker *w)
{
	struct epoll_event evs[256];
	uint64_t end;

	for (unsigned i = 0; i < w->nidle; i++) {
		struct sess *s = &w->s[w->conc + i];
		int r = sock_open(w, s);

		if (r != 0) {
			s->fd = -1;
			s->state = SESS_FREE;
			continue;
		}
		s->state = SESS_IDLE;
		s->got = 0;
	}
	/* Wait until every idle client has its payload, or idle_wait passes. */
	end = now_ns() + (uint64_t)(opt.idle_wait * 1e9);
	for (int loops = 0; loops < 1000000 && now_ns() < end; loops++) {
		int n = epoll_wait(w->epfd, evs, 256, 10);

		for (int i = 0; i < n; i++)
			sess_event(w, evs[i].data.ptr, evs[i].events);
		if (w->idle_payload + w->idle_closed >= w->nidle)
			break;
	}
	for (unsigned i = 0; i < w->nidle; i++) {
		struct sess *s = &w->s[w->conc + i];

		if (s->state == SESS_IDLE && (s->got > 0 || !sess_connecting(s)))
			w->idle_connected++;
	}
}

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[512];
	uint64_t next_scan = 0;
	int scan_ms = opt.interval_ms > 0 && opt.msgs > 1 ? 1 : 10;

	for (unsigned i = 0; i < w->conc; i++)
		sess_start(w, &w->s[i]);
	for (uint64_t loops = 0; loops < 1000000000ull; loops++) {
		int n = epoll_wait(w->epfd, evs, 512, scan_ms);
		uint64_t now;

		for (int i = 0; i < n; i++)
			sess_event(w, evs[i].data.ptr, evs[i].events);
		now = now_ns();
		if (now >= next_scan) {
			worker_scan(w, now);
			next_scan = now + (uint64_t)scan_ms * 1000000ull;
		}
		if (w->active == 0 && (now >= t_stop_starting ||
				       (opt.count && atomic_load(&remaining) <= 0)))
			break;
		if (now >= t_hard_end)
			break;
	}
	for (unsigned i = 0; i < w->conc; i++) {
		if (w->s[i].state != SESS_FREE) {
			w->unfinished++;
			sess_close(&w->s[i]);
		}
	}
	return NULL;
}

static void samples_merge(struct samples *dst, const struct samples *src)
{
	for (size_t i = 0; i < src->n; i++)
		samples_add(dst, src->v[i]);
}

static void usage(void)
{
	printf("usage: loadgen [options] HOST:PORT|/unix/path\n"
	       "  -c, --concurrency N     sessions in flight (default 1)\n"
	       "  -d, --duration SECS     start sessions for this long\n"
	       "  -n, --count N           start this many sessions (bounded by --max-time)\n"
	       "      --max-time SECS     bound for -n runs (default 60)\n"
	       "  -l, --payload-len N     expected payload length (default 26)\n"
	       "  -e, --expect TEXT       expected payload bytes, C escapes (sets -l)\n"
	       "  -m, --messages N        messages to send after the payload (default 0)\n"
	       "  -s, --message-size N    bytes per message (default 16)\n"
	       "  -i, --interval MS       delay between messages (default 0)\n"
	       "  -k, --idle K            idle clients held open for the whole run\n"
	       "      --idle-wait SECS    wait for idle clients' payloads (default 5)\n"
	       "  -C, --close-after-payload  close as soon as the payload is in (W1)\n"
	       "  -t, --timeout SECS      per-session deadline (default 5)\n"
	       "  -j, --threads N         worker threads, one epoll each (default 1)\n"
	       "  -S, --sources N         spread TCP clients over 127.0.0.1..N\n"
	       "      --proxy v1|v2       send a PROXY protocol header first (TCP targets)\n"
	       "  -q, --quiet             print only the RESULT line\n");
}

static void json_samples(const char *name, struct samples *sm)
{
	printf("\"%s\":{\"n\":%zu,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"max\":%.1f}",
	       name, sm->n, pct_us(sm, 50), pct_us(sm, 90), pct_us(sm, 99), pct_us(sm, 100));
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "concurrency", required_argument, NULL, 'c' },
		{ "duration", required_argument, NULL, 'd' },
		{ "count", required_argument, NULL, 'n' },
		{ "max-time", required_argument, NULL, 'M' },
		{ "payload-len", required_argument, NULL, 'l' },
		{ "expect", required_argument, NULL, 'e' },
		{ "messages", required_argument, NULL, 'm' },
		{ "message-size", required_argument, NULL, 's' },
		{ "interval", required_argument, NULL, 'i' },
		{ "idle", required_argument, NULL, 'k' },
		{ "idle-wait", required_argument, NULL, 'W' },
		{ "close-after-payload", no_argument, NULL, 'C' },
		{ "timeout", required_argument, NULL, 't' },
		{ "threads", required_argument, NULL, 'j' },
		{ "sources", required_argument, NULL, 'S' },
		{ "proxy", required_argument, NULL, 'P' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct worker **ws;
	pthread_t tids[MAX_THREADS];
	struct samples ttp = { 0 }, session = { 0 };
	uint64_t ok = 0, started = 0, unfinished = 0, errs[ERR_MAX] = { 0 }, err_total = 0;
	uint64_t t_end = 0, idle_connected = 0, idle_payload = 0, idle_closed = 0;
	double elapsed;
	int c;

	while ((c = getopt_long(argc, argv, "c:d:n:l:e:m:s:i:k:Ct:j:S:qh", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': opt.conc = opt_uint(optarg, MAX_CONCURRENCY, "--concurrency"); break;
		case 'd': opt.duration = opt_double(optarg, MAX_DURATION_S, "--duration"); break;
		case 'n': {
			uint64_t v;

			if (parse_u64(optarg, MAX_COUNT, &v) < 0)
				die("bad value for %s", "--count");
			opt.count = v;
			break;
		}
		case 'M': opt.max_time = opt_double(optarg, MAX_DURATION_S, "--max-time"); break;
		case 'l': opt.plen = opt_uint(optarg, MAX_PAYLOAD, "--payload-len"); break;
		case 'e': free(opt.expect); opt.expect = unescape(optarg, &opt.plen); break;
		case 'm': opt.msgs = opt_uint(optarg, MAX_MESSAGES, "--messages"); break;
		case 's': opt.msg_size = opt_uint(optarg, MAX_MESSAGE_SIZE, "--message-size"); break;
		case 'i': opt.interval_ms = opt_double(optarg, 60000.0, "--interval"); break;
		case 'k': opt.idle = opt_uint(optarg, MAX_IDLE, "--idle"); break;
		case 'W': opt.idle_wait = opt_double(optarg, 600.0, "--idle-wait"); break;
		case 'C': opt.close_after_payload = true; break;
		case 't': opt.timeout = opt_double(optarg, 600.0, "--timeout"); break;
		case 'j': opt.threads = opt_uint(optarg, MAX_THREADS, "--threads"); break;
		case 'S': opt.sources = opt_uint(optarg, 250, "--sources"); break;
		case 'P':
			if (strcmp(optarg, "v1") != 0 && strcmp(optarg, "v2") != 0)
				die("bad value for %s (v1 or v2)", "--proxy");
			opt.proxy = optarg[1] - '0';
			break;
		case 'q': opt.quiet = true; break;
		case 'h': usage(); return 0;
		default: usage(); return 2;
		}
	}
	if (optind != argc - 1) {
		usage();
		return 2;
	}
	opt.target = argv[optind];
	if (opt.conc == 0 || opt.threads == 0 || opt.msg_size == 0 || opt.plen == 0)
		die("%s", "concurrency, threads, message size and payload length must be > 0");
	if (opt.threads > opt.conc)
		opt.threads = opt.conc;
	if (opt.timeout <= 0.0)
		die("%s", "--timeout must be > 0");
	if (opt.duration == 0.0 && opt.count == 0)
		opt.duration = 5.0; /* always bounded */
	if (opt.sources == 0)
		opt.sources = 1;
	target_resolve(opt.target);
	if (opt.proxy && !target_tcp)
		die("%s", "--proxy needs a TCP target");
	signal(SIGPIPE, SIG_IGN);
	{
		struct rlimit rl;

		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	msgbuf = malloc(opt.msg_size);
	if (!msgbuf)
		die("%s", "out of memory");
	for (size_t i = 0; i < opt.msg_size; i++)
		msgbuf[i] = (unsigned char)('a' + i % 26);
	if (opt.msg_size > 1)
		msgbuf[opt.msg_size - 1] = '\n';

	ws = calloc(opt.threads, sizeof(*ws));
	if (!ws)
		die("%s", "out of memory");
	for (unsigned i = 0; i < opt.threads; i++) {
		struct worker *w = calloc(1, sizeof(*w));

		if (!w)
			die("%s", "out of memory");
		w->id = (int)i;
		w->conc = opt.conc / opt.threads + (i < opt.conc % opt.threads);
		w->nidle = i == 0 ? opt.idle : 0;
		w->s = calloc(w->conc + w->nidle, sizeof(*w->s));
		w->epfd = epoll_create1(EPOLL_CLOEXEC);
		if (!w->s || w->epfd < 0)
			die("%s", "cannot set up a worker");
		for (unsigned j = 0; j < w->conc + w->nidle; j++)
			w->s[j].fd = -1;
		ws[i] = w;
	}

	/* Idle clients first, so the measured phase runs beside all of them. */
	t_stop_starting = UINT64_MAX;
	if (opt.idle)
		worker_idle_setup(ws[0]);

	atomic_store(&remaining, (int_fast64_t)opt.count);
	t_start = now_ns();
	if (opt.duration > 0.0)
		t_stop_starting = t_start + (uint64_t)(opt.duration * 1e9);
	else
		t_stop_starting = t_start + (uint64_t)(opt.max_time * 1e9);
	t_hard_end = t_stop_starting + (uint64_t)((opt.timeout + 1.0) * 1e9) +
		     (uint64_t)(opt.interval_ms * 1e6) * opt.msgs;
	for (unsigned i = 1; i < opt.threads; i++)
		if (pthread_create(&tids[i], NULL, worker_run, ws[i]) != 0)
			die("%s", "cannot create a thread");
	worker_run(ws[0]);
	for (unsigned i = 1; i < opt.threads; i++)
		pthread_join(tids[i], NULL);

	/* Idle clients were held for the whole run; count what survived. */
	for (unsigned i = 0; i < opt.threads; i++) {
		struct worker *w = ws[i];

		for (unsigned j = w->conc; j < w->conc + w->nidle; j++)
			if (w->s[j].fd >= 0)
				close(w->s[j].fd);
		ok += w->ok;
		started += w->started;
		unfinished += w->unfinished;
		for (int k = 0; k < ERR_MAX; k++)
			errs[k] += w->errs[k];
		if (w->t_last > t_end)
			t_end = w->t_last;
		idle_connected += w->idle_connected;
		idle_payload += w->idle_payload;
		idle_closed += w->idle_closed;
		samples_merge(&ttp, &w->ttp);
		samples_merge(&session, &w->session);
	}
	for (int k = 0; k < ERR_MAX; k++)
		err_total += errs[k];
	if (t_end <= t_start)
		t_end = now_ns();
	elapsed = (double)(t_end - t_start) / 1e9;
	qsort(ttp.v, ttp.n, sizeof(*ttp.v), cmp_u64);
	qsort(session.v, session.n, sizeof(*session.v), cmp_u64);

	if (!opt.quiet) {
		printf("target %s: concurrency %u, threads %u, %s%s%s, %u messages of %zu bytes\n",
		       opt.target, opt.conc, opt.threads,
		       opt.count ? "count mode" : "duration mode",
		       opt.close_after_payload ? ", close after payload" : "",
		       opt.proxy == 1 ? ", PROXY v1 header" : opt.proxy == 2 ? ", PROXY v2 header" : "",
		       opt.msgs, opt.msg_size);
		printf("sessions: %" PRIu64 " started, %" PRIu64 " ok, %" PRIu64 " errors, %" PRIu64
		       " unfinished in %.3f s: %.1f connections/s\n",
		       started, ok, err_total, unfinished, elapsed, elapsed > 0 ? (double)ok / elapsed : 0.0);
		printf("errors:");
		for (int k = 0; k < ERR_MAX; k++)
			if (errs[k])
				printf(" %s=%" PRIu64, err_names[k], errs[k]);
		printf("%s\n", err_total ? "" : " none");
		if (opt.idle)
			printf("idle clients: %u requested, %" PRIu64 " connected, %" PRIu64
			       " got the payload, %" PRIu64 " closed by the server\n",
			       opt.idle, idle_connected, idle_payload, idle_closed);
		printf("time to payload (us): p50 %.1f  p90 %.1f  p99 %.1f  max %.1f  (n=%zu)\n",
		       pct_us(&ttp, 50), pct_us(&ttp, 90), pct_us(&ttp, 99), pct_us(&ttp, 100), ttp.n);
		printf("whole session   (us): p50 %.1f  p90 %.1f  p99 %.1f  max %.1f  (n=%zu)\n",
		       pct_us(&session, 50), pct_us(&session, 90), pct_us(&session, 99),
		       pct_us(&session, 100), session.n);
	}
	printf("RESULT {\"target\":\"%s\",\"proxy\":%d,\"concurrency\":%u,\"threads\":%u,\"messages\":%u,"
	       "\"message_size\":%zu,\"close_after_payload\":%s,\"started\":%" PRIu64
	       ",\"ok\":%" PRIu64 ",\"errors_total\":%" PRIu64 ",\"unfinished\":%" PRIu64
	       ",\"elapsed_s\":%.6f,\"cps\":%.1f,\"errors\":{",
	       opt.target, opt.proxy, opt.conc, opt.threads, opt.msgs, opt.msg_size,
	       opt.close_after_payload ? "true" : "false", started, ok, err_total, unfinished,
	       elapsed, elapsed > 0 ? (double)ok / elapsed : 0.0);
	for (int k = 0; k < ERR_MAX; k++)
		printf("%s\"%s\":%" PRIu64, k ? "," : "", err_names[k], errs[k]);
	printf("},\"idle\":{\"requested\":%u,\"connected\":%" PRIu64 ",\"payload\":%" PRIu64
	       ",\"closed_by_server\":%" PRIu64 "},",
	       opt.idle, idle_connected, idle_payload, idle_closed);
	json_samples("ttp_us", &ttp);
	putchar(',');
	json_samples("session_us", &session);
	printf("}\n");
	return 0;
}
