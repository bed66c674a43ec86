/* log.c - owns where events go. Under journald (JOURNAL_STREAM names our
 * stderr, as systemd sets it) each event is one sd_journal_sendv() entry with
 * MESSAGE, PRIORITY, MESSAGE_ID and the POOLD_* fields, the client's bytes
 * binary-safe in POOLD_MESSAGE. Otherwise each event is one write() of one
 * line to stderr, so lines from different threads never interleave. Called
 * from every thread: the level is atomic, everything else is fixed at
 * log_new(). Failures to log are counted, never fatal. */
#include "log.h"
#include "util.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>

struct log {
	atomic_int level;
	bool journal;
	atomic_ulong dropped; /* events that could not be written */
};

static const char *const level_names[] = {
	"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
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
	if (force && strcmp(force, "journal") == 0)
		l->journal = true;
	else if (force && strcmp(force, "stderr") == 0)
		l->journal = false;
	else
		l->journal = stderr_is_journal();
	return l;
}

struct log *log_free(struct log *l)
{
	free(l);
	return NULL;
}

void log_set_level(struct log *l, int level)
{
	atomic_store_explicit(&l->level, level, memory_order_relaxed);
}

bool log_enabled(const struct log *l, int level)
{
	return level <= atomic_load_explicit(&l->level, memory_order_relaxed);
}

bool log_journal(const struct log *l)
{
	return l->journal;
}

static void log_stderr(struct log *l, int level, const char *msg)
{
	char line[2048];
	int n;

	n = snprintf(line, sizeof(line), "%s: %s\n", level_names[level & 7], msg);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	for (ssize_t off = 0; off < n;) {
		ssize_t w = write(STDERR_FILENO, line + off, (size_t)(n - off));

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			atomic_fetch_add_explicit(&l->dropped, 1, memory_order_relaxed);
			return;
		}
		off += w;
	}
}

/* snprintf()'s result clamped to what it actually wrote. */
static size_t fitted(int n, size_t size)
{
	return n < 0 ? 0 : (size_t)n >= size ? size - 1 : (size_t)n;
}

void log_event(struct log *l, int level, const char *msgid, const struct log_conn *c, const char *fmt, ...)
{
	char msg[1024], full[sizeof(msg) + 8], prio[16], conn[40], bytes[40], dur[48], id[48];
	char remote[80];
	struct iovec iov[10];
	size_t n = 0;
	va_list ap;

	if (!log_enabled(l, level))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!l->journal) {
		log_stderr(l, level, msg);
		return;
	}

#define ADD(s, len) (iov[n].iov_base = (void *)(s), iov[n].iov_len = (len), n++)
#define ADDF(buf, ...) ADD(buf, fitted(snprintf(buf, sizeof(buf), __VA_ARGS__), sizeof(buf)))
	ADDF(full, "MESSAGE=%s", msg);
	ADDF(prio, "PRIORITY=%d", level);
	if (msgid)
		ADDF(id, "MESSAGE_ID=%s", msgid);
	if (c) {
		if (c->id)
			ADDF(conn, "POOLD_CONN=%" PRIu64, c->id);
		if (c->remote)
			ADDF(remote, "POOLD_REMOTE=%s", c->remote);
		if (c->bytes)
			ADDF(bytes, "POOLD_BYTES=%" PRIu64, c->bytes);
		if (c->duration_usec)
			ADDF(dur, "POOLD_DURATION_USEC=%" PRIu64, c->duration_usec);
		if (c->data) {
			static const char key[] = "POOLD_MESSAGE=";
			_cleanup_free_ char *field = malloc(sizeof(key) - 1 + c->data_len);

			if (!field) {
				atomic_fetch_add_explicit(&l->dropped, 1, memory_order_relaxed);
				return;
			}
			memcpy(field, key, sizeof(key) - 1);
			memcpy(field + sizeof(key) - 1, c->data, c->data_len);
			ADD(field, sizeof(key) - 1 + c->data_len);
			if (sd_journal_sendv(iov, (int)n) < 0)
				atomic_fetch_add_explicit(&l->dropped, 1, memory_order_relaxed);
			return;
		}
	}
	if (sd_journal_sendv(iov, (int)n) < 0)
		atomic_fetch_add_explicit(&l->dropped, 1, memory_order_relaxed);
#undef ADD
#undef ADDF
}
