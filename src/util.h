/* util.h - small helpers shared by every module: cleanup attributes, checked
 * number and duration parsing, the monotonic clock. Nothing here keeps state. */
#ifndef POOLD_UTIL_H
#define POOLD_UTIL_H

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define USEC_PER_MSEC UINT64_C(1000)
#define USEC_PER_SEC  UINT64_C(1000000)

static inline void freep(void *p)
{
	free(*(void **)p);
}
static inline void closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}
/* A hexadecimal digit's value, or -1. */
static inline int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

#define _cleanup_free_  __attribute__((cleanup(freep)))
#define _cleanup_close_ __attribute__((cleanup(closep)))

uint64_t now_usec(void);
uint64_t realtime_usec(void);
void handled_signals(sigset_t *ret);
int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret);
int parse_duration(const char *s, uint64_t *ret_usec);
int parse_bool(const char *s, bool *ret);
int read_file(const char *path, size_t max, char **ret, size_t *ret_len);
void format_duration(uint64_t usec, char *buf, size_t size);

#endif
