/* log.c - owns where events go. Under journald (JOURNAL_STREAM names our
 * stderr, as systemd sets it) each event is one sd_journal_sendv() entry with
 * MESSAGE, PRIORITY, MESSAGE_ID and the POOLD_* fields, the client's bytes
 * binary-safe in POOLD_MESSAGE. Otherwise each event is one write() of one
 * line to stderr, so lines from different threads never interleave.
 *
 * Threading: log_event() is called from every thread but never blocks on the
 * journal: once log_start() has run, it formats the event into one record
 * and queues it for the log thread, which does the writing. A journald that
 * is slow, stopped or gone fills the bounded queue; further events are
 * dropped and counted (log_dropped(), shown in STATUS=), never waited for.
 * Before log_start() (start-up, before sd_listen_fds()) events are written
 * synchronously; once log_free() begins, new events are dropped and counted.
 *
 * Every event, the "Dropped N log entries" warning included, goes to the
 * journal only while its socket exists, else to stderr; each carries its
 * caller's CODE_FILE/CODE_LINE/CODE_FUNC, and its message has its control
 * characters escaped (log_escape()), so one event is always one line. */
#include "log.h"
#include "util.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>

/* We pass the caller's location ourselves (sd_journal_sendv_with_location());
 * the plain macros would add log.c's. */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#define QUEUE_MAX_RECORDS 8192
#define QUEUE_MAX_BYTES   ((size_t)16 << 20)
#define BATCH_RECORDS     64                  /* wake the log thread at once past this */
#define BATCH_USEC        (2 * USEC_PER_MSEC) /* else gather events for this long */
#define EXIT_FLUSH_SEC    2                   /* seconds the log thread gets to flush at exit */
#define JOURNAL_SOCKET    "/run/systemd/journal/socket"
#define STDERR_BUF        65536 /* bytes of lines per write() */

/* One event, as the writers see it. */
struct event {
	int level;
	const char *msgid;       /* static string or NULL */
	const char *file, *func; /* the caller's __FILE__ and __func__: static */
	int line;
	const char *msg; /* control characters already escaped */
	struct log_conn conn;
};

/* One queued event: the message, the addresses and the client's bytes live
 * in buf[]. */
struct record {
	struct record *next;
	struct event ev; /* msg, conn.remote, conn.addr and conn.data point into buf[] */
	char buf[];      /* message NUL, then each string of the event NUL, then data */
};

struct log {
	atomic_int level;
	bool journal;
	atomic_ulong dropped;   /* events queued for nobody, or failed */
	unsigned long reported; /* dropped events already reported; log thread */

	/* lock guards the queue and the flags below it. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct record *head, *tail;
	size_t records, bytes;
	bool running, stop;
	pthread_t thread;
};

/* systemd's own test for "stderr is connected to the journal". */
static bool stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return st.st_dev == (dev_t)dev && st.st_ino == (ino_t)ino;
}

struct log *log_new(void)
{
	struct log *l = calloc(1, sizeof(*l));
	const char *force = getenv("POOLD_LOG_TARGET");

	if (!l)
		return NULL;
	atomic_init(&l->level, LOG_INFO);
	pthread_mutex_init(&l->lock, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&l->cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	if (force && strcmp(force, "journal") == 0)
		l->journal = true;
	else if (force && strcmp(force, "stderr") == 0)
		l->journal = false;
	else
		l->journal = stderr_is_journal();
	return l;
}

/* Stops the log thread after it wrote everything queued. */
struct log *log_free(struct log *l)
{
	if (!l)
		return NULL;
	pthread_mutex_lock(&l->lock);
	l->stop = true;
	pthread_cond_signal(&l->cond);
	pthread_mutex_unlock(&l->lock);
	if (l->running) {
		struct timespec ts;

		/* A journald that does not read keeps the log thread in
		 * sendmsg(): give it a moment to write what is queued, then
		 * leave without it rather than hang the exit. */
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += EXIT_FLUSH_SEC;
		if (pthread_timedjoin_np(l->thread, NULL, &ts) != 0)
			return NULL;
	}
	pthread_cond_destroy(&l->cond);
	pthread_mutex_destroy(&l->lock);
	free(l);
	return NULL;
}

unsigned long log_dropped(struct log *l)
{
	return atomic_load_explicit(&l->dropped, memory_order_relaxed);
}

void log_set_level(struct log *l, int level)
{
	atomic_store_explicit(&l->level, level, memory_order_relaxed);
}

bool log_enabled(const struct log *l, int level)
{
	return level <= atomic_load_explicit(&l->level, memory_order_relaxed);
}

/* Formats "level: message\n" into buf (at most size bytes, cut lines keep
 * their newline); returns the length. */
static size_t format_line(char *buf, size_t size, int level, const char *msg)
{
	const char *name = log_level_name(level & 7);
	size_t nl = strlen(name), ml = strlen(msg);

	/* Plain copies: this runs once per event. */
	if (nl + 2 + ml + 1 > size)
		ml = size - nl - 3;
	memcpy(buf, name, nl);
	memcpy(buf + nl, ": ", 2);
	memcpy(buf + nl + 2, msg, ml);
	buf[nl + 2 + ml] = '\n';
	return nl + 2 + ml + 1;
}

/* Writes whole lines to stderr; a failure drops them, counted by lines. */
static void write_stderr(struct log *l, const char *buf, size_t len, unsigned lines)
{
	for (size_t off = 0; off < len;) {
		ssize_t w = write(STDERR_FILENO, buf + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			atomic_fetch_add_explicit(&l->dropped, lines, memory_order_relaxed);
			return;
		}
		off += (size_t)w;
	}
}

static void log_stderr(struct log *l, int level, const char *msg)
{
	char line[2048];

	write_stderr(l, line, format_line(line, sizeof(line), level, msg), 1);
}

/* snprintf()'s result clamped to what it actually wrote. */
static size_t fitted(int n, size_t size)
{
	return n < 0 ? 0 : (size_t)n >= size ? size - 1 : (size_t)n;
}

/* Sends one event to journald, with the caller's location. */
static void send_journal(struct log *l, const struct event *e)
{
	const struct log_conn *c = &e->conn;
	char full[1100], prio[16], conn[40], bytes[40], dur[48], id[48];
	char remote[80], addr[80], port[32], file[256], line[32], lis[96], proxy[96], auth[300], tls[64];
	_cleanup_free_ char *field = NULL;
	struct iovec iov[16];
	size_t n = 0;

#define ADD(s, len)    (iov[n].iov_base = (void *)(s), iov[n].iov_len = (len), n++)
#define ADDF(buf, ...) ADD(buf, fitted(snprintf(buf, sizeof(buf), __VA_ARGS__), sizeof(buf)))
	ADDF(full, "MESSAGE=%s", e->msg);
	ADDF(prio, "PRIORITY=%d", e->level);
	if (e->msgid)
		ADDF(id, "MESSAGE_ID=%s", e->msgid);
	if (c->id)
		ADDF(conn, "POOLD_CONN=%" PRIu64, c->id);
	/* POOLD_REMOTE as messages show it; the address and port alone too,
	 * since journal matches are exact: journalctl POOLD_REMOTE_ADDR=::1. */
	if (c->remote)
		ADDF(remote, "POOLD_REMOTE=%s", c->remote);
	if (c->addr)
		ADDF(addr, "POOLD_REMOTE_ADDR=%s", c->addr);
	if (c->port)
		ADDF(port, "POOLD_REMOTE_PORT=%u", c->port);
	if (c->listener)
		ADDF(lis, "POOLD_LISTENER=%s", c->listener);
	if (c->proxy)
		ADDF(proxy, "POOLD_PROXY=%s", c->proxy);
	if (c->authority)
		ADDF(auth, "POOLD_PROXY_AUTHORITY=%s", c->authority);
	if (c->tls_version)
		ADDF(tls, "POOLD_TLS_VERSION=%s", c->tls_version);
	if (c->bytes)
		ADDF(bytes, "POOLD_BYTES=%" PRIu64, c->bytes);
	if (c->duration_usec)
		ADDF(dur, "POOLD_DURATION_USEC=%" PRIu64, c->duration_usec);
	if (c->data) {
		/* One iovec per field: the key and the client's bytes must be
		 * one buffer. */
		static const char key[] = "POOLD_MESSAGE=";

		field = malloc(sizeof(key) - 1 + c->data_len);
		if (!field) {
			atomic_fetch_add_explicit(&l->dropped, 1, memory_order_relaxed);
			return;
		}
		memcpy(field, key, sizeof(key) - 1);
		memcpy(field + sizeof(key) - 1, c->data, c->data_len);
		ADD(field, sizeof(key) - 1 + c->data_len);
	}
	snprintf(file, sizeof(file), "CODE_FILE=%s", e->file);
	snprintf(line, sizeof(line), "CODE_LINE=%d", e->line);
	if (sd_journal_sendv_with_location(file, line, e->func, iov, (int)n) < 0)
		atomic_fetch_add_explicit(&l->dropped, 1, memory_order_relaxed);
#undef ADD
#undef ADDF
}

/* sd_journal_sendv() silently succeeds when journald's socket is gone: look
 * for it ourselves (once a batch on the log thread) and fall back to stderr. */
static bool journal_up(const struct log *l)
{
	return l->journal && access(JOURNAL_SOCKET, F_OK) == 0;
}

/* Writes one event now, to the journal or to stderr. */
static void write_event(struct log *l, bool journal, const struct event *e)
{
	if (journal)
		send_journal(l, e);
	else
		log_stderr(l, e->level, e->msg);
}

/* Writes a batch: stderr lines are gathered into few write()s, journal
 * entries go one send_journal() each. */
static void write_batch(struct log *l, struct record *batch, char *buf)
{
	size_t len = 0;
	unsigned lines = 0;
	bool journal = journal_up(l);

	while (batch) {
		struct record *next = batch->next;

		if (journal) {
			send_journal(l, &batch->ev);
		} else {
			if (len + 2048 > STDERR_BUF) {
				write_stderr(l, buf, len, lines);
				len = 0;
				lines = 0;
			}
			len += format_line(buf + len, 2048, batch->ev.level, batch->ev.msg);
			lines++;
		}
		free(batch);
		batch = next;
	}
	if (len)
		write_stderr(l, buf, len, lines);
}

static void *log_thread(void *arg)
{
	struct log *l = arg;
	char buf[STDERR_BUF]; /* a default thread stack is 2 MiB or more */

	pthread_mutex_lock(&l->lock);
	for (;;) {
		struct record *batch;
		unsigned long dropped;

		while (!l->head && !l->stop)
			pthread_cond_wait(&l->cond, &l->lock);
		if (!l->head)
			break;
		/* Gather: one wake-up and one write for many events. */
		if (!l->stop && l->records < BATCH_RECORDS) {
			struct timespec ts;
			uint64_t until = now_usec() + BATCH_USEC;

			ts.tv_sec = (time_t)(until / USEC_PER_SEC);
			ts.tv_nsec = (long)(until % USEC_PER_SEC) * 1000;
			while (!l->stop && l->records < BATCH_RECORDS &&
			       pthread_cond_timedwait(&l->cond, &l->lock, &ts) == 0)
				;
		}
		batch = l->head;
		l->head = l->tail = NULL;
		l->records = 0;
		l->bytes = 0;
		pthread_mutex_unlock(&l->lock);

		write_batch(l, batch, buf);
		dropped = log_dropped(l);
		if (dropped != l->reported && log_enabled(l, LOG_WARNING)) {
			char msg[128];
			struct event e = {
				.level = LOG_WARNING, .file = __FILE__, .line = __LINE__, .func = __func__, .msg = msg
			};

			snprintf(msg, sizeof(msg), "Dropped %lu log entries: the journal did not keep up.",
				 dropped - l->reported);
			l->reported = dropped;
			/* The one message about the loss takes the path every
			 * event takes: the journal only if its socket is there. */
			write_event(l, journal_up(l), &e);
		}
		pthread_mutex_lock(&l->lock);
	}
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

/* From now on events go through the log thread. Call after sd_listen_fds(). */
int log_start(struct log *l)
{
	int r = -pthread_create(&l->thread, NULL, log_thread, l);

	if (r == 0)
		l->running = true;
	return r;
}

/* Copies s into buf with control characters (bytes below 0x20, and 0x7f)
 * written as \n, \t, \r or \xNN, so that a file name or a client's string can
 * never split an event or a STATUS= line in two. Everything else, the
 * backslash included, is copied as is: messages often quote text that
 * payload_escape() already rendered, which must not be escaped twice. Cuts at
 * size - 1 bytes, never inside an escape; returns the length written. */
size_t log_escape(const char *s, char *buf, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (size == 0)
		return 0;
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		char esc[4] = { '\\' };
		size_t n = 2;

		if (ch >= 0x20 && ch != 0x7f) {
			if (o + 1 >= size)
				break;
			buf[o++] = (char)ch;
			continue;
		}
		if (ch == '\n')
			esc[1] = 'n';
		else if (ch == '\t')
			esc[1] = 't';
		else if (ch == '\r')
			esc[1] = 'r';
		else
			esc[1] = 'x', esc[2] = hex[ch >> 4], esc[3] = hex[ch & 15], n = 4;
		if (o + n >= size)
			break;
		memcpy(buf + o, esc, n);
		o += n;
	}
	buf[o] = '\0';
	return o;
}

void log_event_at(const char *file, int line, const char *func, struct log *l, int level, const char *msgid,
		  const struct log_conn *c, const char *fmt, ...)
{
	char raw[1024], msg[1024];
	struct event ev = { .level = level, .msgid = msgid, .file = file, .line = line, .func = func, .msg = msg };
	struct record *rec;
	size_t mlen, dlen = 0, size;
	va_list ap;
	bool queued = false, wake = false;

	if (!log_enabled(l, level))
		return;
	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	log_escape(raw, msg, sizeof(msg));
	if (c)
		ev.conn = *c;
	if (!l->running) {
		write_event(l, journal_up(l), &ev);
		return;
	}

	/* The record owns copies of the strings the event points to. */
	const char **strs[] = { &ev.conn.remote, &ev.conn.addr,      &ev.conn.listener,
				&ev.conn.proxy,  &ev.conn.authority, &ev.conn.tls_version };
	size_t lens[ARRAY_SIZE(strs)], off;

	mlen = strlen(msg) + 1;
	size = sizeof(*rec) + mlen;
	for (size_t i = 0; i < ARRAY_SIZE(strs); i++) {
		lens[i] = *strs[i] ? strlen(*strs[i]) + 1 : 0;
		size += lens[i];
	}
	if (c && c->data)
		dlen = c->data_len;
	size += dlen;
	rec = malloc(size);
	if (!rec) {
		atomic_fetch_add_explicit(&l->dropped, 1, memory_order_relaxed);
		return;
	}
	rec->next = NULL;
	rec->ev = ev;
	memcpy(rec->buf, msg, mlen);
	rec->ev.msg = rec->buf;
	off = mlen;
	for (size_t i = 0; i < ARRAY_SIZE(strs); i++) {
		if (!lens[i])
			continue;
		memcpy(rec->buf + off, *strs[i], lens[i]);
		/* The same field of the record's own copy of the event. */
		*(const char **)((char *)&rec->ev + ((const char *)strs[i] - (const char *)&ev)) = rec->buf + off;
		off += lens[i];
	}
	if (c && c->data) {
		memcpy(rec->buf + off, c->data, dlen);
		rec->ev.conn.data = rec->buf + off;
	}

	pthread_mutex_lock(&l->lock);
	if (!l->stop && l->records < QUEUE_MAX_RECORDS && l->bytes + size <= QUEUE_MAX_BYTES) {
		bool was_empty = !l->head;

		if (l->tail)
			l->tail->next = rec;
		else
			l->head = rec;
		l->tail = rec;
		l->records++;
		l->bytes += size;
		queued = true;
		/* The first event starts the log thread's gathering window; a
		 * full batch ends it early. Nothing else needs a wake-up, and it
		 * goes out after the unlock, as in pool_wake(). */
		wake = was_empty || l->records == BATCH_RECORDS;
	}
	pthread_mutex_unlock(&l->lock);
	if (wake)
		pthread_cond_signal(&l->cond);
	if (!queued) {
		free(rec);
		atomic_fetch_add_explicit(&l->dropped, 1, memory_order_relaxed);
	}
}
