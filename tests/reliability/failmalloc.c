/* failmalloc.c - an LD_PRELOAD shim that makes malloc(), calloc(), realloc()
 * and their aligned variants fail (NULL, errno ENOMEM) on demand, to test
 * that poold survives running out of memory. Built by the tests with
 *   cc -O2 -shared -fPIC -o failmalloc.so failmalloc.c
 * Environment:
 *   FAILMALLOC_MIN=BYTES   only allocations of at least this size fail (0)
 *   FAILMALLOC_EVERY=N     fail every Nth eligible allocation (1)
 *   FAILMALLOC_COUNT=N     stop after N failures (-1: no limit)
 *   FAILMALLOC_ARMED=1     armed from the start; otherwise SIGUSR2 arms it
 *                          and SIGUSR1 disarms it
 * Each failure is reported on stderr as one line "failmalloc: failing ...". */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static size_t min_size;
static long every = 1, limit = -1;
static atomic_long seen, failed;
static atomic_int armed;

static long env_long(const char *name, long def)
{
	const char *v = getenv(name);

	return v && *v ? strtol(v, NULL, 10) : def;
}

static void on_signal(int sig)
{
	atomic_store(&armed, sig == SIGUSR2);
}

__attribute__((constructor)) static void failmalloc_init(void)
{
	struct sigaction sa;

	min_size = (size_t)env_long("FAILMALLOC_MIN", 0);
	every = env_long("FAILMALLOC_EVERY", 1);
	if (every < 1)
		every = 1;
	limit = env_long("FAILMALLOC_COUNT", -1);
	atomic_store(&armed, env_long("FAILMALLOC_ARMED", 0) != 0);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
}

/* Writes "failmalloc: failing NAME(SIZE)\n" without allocating. */
static void report(const char *name, size_t size)
{
	char buf[96], num[24];
	size_t n = 0, k = 0;

	do
		num[k++] = (char)('0' + size % 10);
	while ((size /= 10) && k < sizeof(num));
	n = strlen("failmalloc: failing ");
	memcpy(buf, "failmalloc: failing ", n);
	memcpy(buf + n, name, strlen(name));
	n += strlen(name);
	buf[n++] = '(';
	while (k)
		buf[n++] = num[--k];
	buf[n++] = ')';
	buf[n++] = '\n';
	(void)!write(STDERR_FILENO, buf, n);
}

static int should_fail(const char *name, size_t size)
{
	long f;

	if (!atomic_load_explicit(&armed, memory_order_relaxed) || size < min_size)
		return 0;
	if ((atomic_fetch_add(&seen, 1) + 1) % every != 0)
		return 0;
	f = atomic_fetch_add(&failed, 1);
	if (limit >= 0 && f >= limit)
		return 0;
	report(name, size);
	errno = ENOMEM;
	return 1;
}

void *malloc(size_t size)
{
	return should_fail("malloc", size) ? NULL : __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
	return should_fail("calloc", n * size) ? NULL : __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
	return size && should_fail("realloc", size) ? NULL : __libc_realloc(p, size);
}

void *memalign(size_t align, size_t size)
{
	return should_fail("memalign", size) ? NULL : __libc_memalign(align, size);
}

void *aligned_alloc(size_t align, size_t size)
{
	return memalign(align, size);
}

int posix_memalign(void **ret, size_t align, size_t size)
{
	void *p = memalign(align, size);

	if (!p)
		return ENOMEM;
	*ret = p;
	return 0;
}
