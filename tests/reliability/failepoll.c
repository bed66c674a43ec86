/* failepoll.c - an LD_PRELOAD shim that drives poold's event loop into its
 * error exit with clients still connected and queued. Once the file named by
 * FAILEPOLL_TRIGGER exists, the next epoll_wait() first sleeps 300 ms (a
 * burst of clients piles up in the backlog, and that turn accepts them), and
 * every call after it fails with EBADF. Only the event loops call
 * epoll_wait() (the main thread polls): run poold with threads = 1. Built by the tests with
 *   cc -O2 -shared -fPIC -o failepoll.so failepoll.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
	static int (*real)(int, struct epoll_event *, int, int);
	static int fired; /* one event loop (threads = 1) is the only caller */
	const char *trigger = getenv("FAILEPOLL_TRIGGER");

	if (fired) {
		errno = EBADF;
		return -1;
	}
	if (trigger && access(trigger, F_OK) == 0) {
		fired = 1;
		usleep(300 * 1000);
		timeout = 0;
	}
	if (!real)
		real = (int (*)(int, struct epoll_event *, int, int))dlsym(RTLD_NEXT, "epoll_wait");
	/* Short waits, so a trigger is seen within 50 ms. */
	return real(epfd, events, maxevents, timeout < 0 || timeout > 50 ? 50 : timeout);
}
