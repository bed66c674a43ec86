/* log.h - events to journald with structured POOLD_* fields, or one line per
 * event on stderr when not running under journald. */
#ifndef POOLD_LOG_H
#define POOLD_LOG_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/syslog.h>

#define MSGID_STARTED       "28318b7268fe4acc854681b0705cbd8f"
#define MSGID_STOPPED       "b3ca90c118a14bfda769784f9119c571"
#define MSGID_RELOADED      "e498def27b784eda95bc1579430fb0df"
#define MSGID_REFUSED       "62c96129d90242a683d946c8f0a13378"
#define MSGID_RELOAD_FAILED "77b1c30162df491d8b59dbf2b8dd51cf"

struct log;

/* What a connection event carries; zero fields are left out. */
struct log_conn {
	uint64_t id;
	const char *remote;      /* "a.b.c.d:port", "[v6]:port", as shown in messages */
	const char *addr;        /* the address alone: a.b.c.d, v6 without brackets, "unix" */
	unsigned port;           /* 0: none */
	const char *listener;    /* the [listener NAME] that accepted it; NULL: the default */
	const char *proxy;       /* the balancer that sent a PROXY header (POOLD_PROXY) */
	const char *authority;   /* the header's AUTHORITY TLV */
	const char *tls_version; /* the header's SSL TLV version: the client came over TLS */
	uint64_t bytes, duration_usec;
	const void *data; /* the client's bytes, for POOLD_MESSAGE */
	size_t data_len;
};

struct log *log_new(void);
struct log *log_free(struct log *l);
int log_start(struct log *l);
unsigned long log_dropped(struct log *l);
void log_set_level(struct log *l, int level);
bool log_enabled(const struct log *l, int level);

/* log_event() records the caller's file, line and function (CODE_FILE=...). */
#define log_event(...) log_event_at(__FILE__, __LINE__, __func__, __VA_ARGS__)
void log_event_at(const char *file, int line, const char *func, struct log *l, int level, const char *msgid,
		  const struct log_conn *c, const char *fmt, ...) __attribute__((format(printf, 8, 9)));

size_t log_escape(const char *s, char *buf, size_t size);

/* Syslog priority names. Inline, not in log.c: config.c uses them and
 * tests/fuzz/run builds config.c without log.c and libsystemd. */
static inline const char *log_level_name(int level)
{
	static const char *const names[] = { "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug" };

	return level >= 0 && level < 8 ? names[level] : NULL;
}

/* The names [log] level accepts, err to debug: the priority, or -EINVAL. */
static inline int log_level_from_name(const char *name)
{
	for (int i = LOG_ERR; i <= LOG_DEBUG; i++)
		if (strcmp(name, log_level_name(i)) == 0)
			return i;
	return -EINVAL;
}

#endif
