/* util.c - checked parsers (numbers, durations, booleans) and whole-file reads.
 * Pure functions, safe from any thread. No atoi, no bare strtol elsewhere:
 * every number a user or client controls goes through parse_uint(). */
#include "util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static uint64_t clock_usec(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

uint64_t now_usec(void)
{
	return clock_usec(CLOCK_MONOTONIC);
}

/* Wall-clock time, for what is shown as a date (metrics timestamps). */
uint64_t realtime_usec(void)
{
	return clock_usec(CLOCK_REALTIME);
}

/* The signals poold handles (through the reactor's signalfd): main.c
 * blocks exactly these in every thread before the first one starts. */
void handled_signals(sigset_t *ret)
{
	sigemptyset(ret);
	sigaddset(ret, SIGHUP);
	sigaddset(ret, SIGTERM);
	sigaddset(ret, SIGINT);
}

/* Parses the leading decimal digits of s. *end points past all of them, even
 * on overflow (-ERANGE), so callers can tell "too large" from "not a number"
 * by what follows; -EINVAL when there are no digits. */
static int parse_digits(const char *s, uint64_t *ret, const char **end)
{
	uint64_t v = 0;
	const char *p = s;
	int r = 0;

	*end = s;
	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');

		if (v > (UINT64_MAX - d) / 10)
			r = -ERANGE;
		else
			v = v * 10 + d;
	}
	*end = p;
	if (r == 0)
		*ret = v;
	return r;
}

int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
	const char *end;
	uint64_t v = 0;
	int r;

	r = parse_digits(s, &v, &end);
	if (*end != '\0')
		return -EINVAL;
	if (r < 0)
		return r;
	if (v < min || v > max)
		return -ERANGE;
	*ret = v;
	return 0;
}

/* "250ms", "10s", "2m", "1h"; a bare number is seconds, as in systemd. */
int parse_duration(const char *s, uint64_t *ret_usec)
{
	static const struct {
		const char *suffix;
		uint64_t mult;
	} units[] = {
		{ "ms", USEC_PER_MSEC },      { "s", USEC_PER_SEC }, { "m", 60 * USEC_PER_SEC },
		{ "h", 3600 * USEC_PER_SEC }, { "", USEC_PER_SEC },
	};
	const char *end;
	uint64_t v = 0;
	int r;

	r = parse_digits(s, &v, &end);
	if (r == -EINVAL)
		return r;
	for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
		if (strcmp(end, units[i].suffix) != 0)
			continue;
		if (r < 0 || v > UINT64_MAX / units[i].mult)
			return -ERANGE;
		*ret_usec = v * units[i].mult;
		return 0;
	}
	return -EINVAL;
}

int parse_bool(const char *s, bool *ret)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcmp(s, yes[i]) == 0) {
			*ret = true;
			return 0;
		}
		if (strcmp(s, no[i]) == 0) {
			*ret = false;
			return 0;
		}
	}
	return -EINVAL;
}

/* Reads a whole regular file of at most max bytes (exactly max is fine). The
 * buffer is always NUL-terminated (one byte past *ret_len) so text callers can
 * use it as is. It is allocated once at the size fstat() gives; only a file
 * that grows while we read it (or a procfs file, which says 0) makes it grow. */
int read_file(const char *path, size_t max, char **ret, size_t *ret_len)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *buf = NULL;
	struct stat st;
	size_t len = 0, cap;

	/* O_NONBLOCK: a FIFO put in a file's place must not hang the caller
	 * (the reactor, on reload); fstat() below refuses it. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	if (!S_ISREG(st.st_mode))
		return -EBADFD;
	if ((uint64_t)st.st_size > max)
		return -EFBIG;
	cap = (size_t)st.st_size + 1;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		char probe[512], *dst = buf + len;
		size_t want = cap - 1 - len;
		ssize_t n;

		/* A full buffer is the usual end: read into a probe to see EOF
		 * rather than growing the buffer first. */
		if (want == 0) {
			dst = probe;
			want = sizeof(probe);
		}
		n = read(fd, dst, want);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		if ((size_t)n > max - len)
			return -EFBIG;
		if (dst == probe) {
			/* The file grew while we read it: keep reading up to max. */
			size_t ncap = cap > (max + 1) / 2 ? max + 1 : cap * 2;
			char *nb;

			if (ncap < len + (size_t)n + 1)
				ncap = len + (size_t)n + 1;
			nb = realloc(buf, ncap);
			if (!nb)
				return -ENOMEM;
			buf = nb;
			cap = ncap;
			memcpy(buf + len, probe, (size_t)n);
		}
		len += (size_t)n;
	}
	buf[len] = '\0';
	*ret = buf;
	buf = NULL;
	*ret_len = len;
	return 0;
}

/* Formats a duration the way the config takes it back. */
void format_duration(uint64_t usec, char *buf, size_t size)
{
	if (usec % (3600 * USEC_PER_SEC) == 0 && usec)
		snprintf(buf, size, "%" PRIu64 "h", usec / (3600 * USEC_PER_SEC));
	else if (usec % (60 * USEC_PER_SEC) == 0 && usec)
		snprintf(buf, size, "%" PRIu64 "m", usec / (60 * USEC_PER_SEC));
	else if (usec % USEC_PER_SEC == 0)
		snprintf(buf, size, "%" PRIu64 "s", usec / USEC_PER_SEC);
	else
		snprintf(buf, size, "%" PRIu64 "ms", usec / USEC_PER_MSEC);
}
