/*
 * bare_epoll: the reference server for the bench, the least a server can do.
 *
 * One thread, one level-triggered epoll set: accept4 every pending client, send
 * the tutorial's 26-byte payload at once, then count up to MAX_MESSAGES reads
 * of up to 1024 bytes (one read = one message, as in the tutorial) and close on
 * the last one, on EOF or on an error. No logging, no timers, no allocation per
 * client: the per-connection state is one counter indexed by fd.
 *
 * usage: bare_epoll HOST:PORT|/unix/path [MAX_MESSAGES (default 10)]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static const char payload[] = "(lp0\nI1\naI2\naI7\naI9\naI0\na.";

static int listen_on(const char *t)
{
	int fd, one = 1;

	if (t[0] == '/') {
		struct sockaddr_un un = { .sun_family = AF_UNIX };

		if (strlen(t) >= sizeof(un.sun_path))
			return -1;
		strcpy(un.sun_path, t);
		unlink(t);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0 || bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0)
			return -1;
	} else {
		char host[256];
		const char *colon = strrchr(t, ':');
		struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
		struct addrinfo *res;
		size_t hlen;

		if (!colon || (hlen = (size_t)(colon - t)) >= sizeof(host))
			return -1;
		memcpy(host, t, hlen);
		host[hlen] = '\0';
		if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
			return -1;
		fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, res->ai_addr, res->ai_addrlen) < 0)
			return -1;
		freeaddrinfo(res);
	}
	if (listen(fd, 4096) < 0)
		return -1;
	return fd;
}

int main(int argc, char **argv)
{
	struct epoll_event ev, evs[256];
	struct rlimit rl;
	unsigned char *count;
	unsigned max_messages = 10;
	char buf[1024];
	int lfd, epfd;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: bare_epoll HOST:PORT|/unix/path [MAX_MESSAGES]\n");
		return 64;
	}
	if (argc == 3)
		max_messages = (unsigned)strtoul(argv[2], NULL, 10);
	if (max_messages > 255)
		max_messages = 255;
	signal(SIGPIPE, SIG_IGN);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	count = calloc(rl.rlim_cur, 1);
	lfd = listen_on(argv[1]);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!count || lfd < 0 || epfd < 0) {
		perror("bare_epoll: setup");
		return 71;
	}
	ev.events = EPOLLIN;
	ev.data.fd = lfd;
	epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
	for (;;) {
		int n = epoll_wait(epfd, evs, 256, -1);

		if (n < 0 && errno != EINTR) {
			perror("bare_epoll: epoll_wait");
			return 71;
		}
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;

			if (fd == lfd) {
				/* Bounded per wake-up so clients already in get served. */
				for (int k = 0; k < 256; k++) {
					int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

					if (c < 0)
						break;
					if ((rlim_t)c >= rl.rlim_cur ||
					    send(c, payload, sizeof(payload) - 1, MSG_NOSIGNAL) < 0 ||
					    max_messages == 0) {
						close(c);
						continue;
					}
					count[c] = 0;
					ev.events = EPOLLIN;
					ev.data.fd = c;
					epoll_ctl(epfd, EPOLL_CTL_ADD, c, &ev);
				}
				continue;
			}
			ssize_t r = recv(fd, buf, sizeof(buf), 0);

			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (r <= 0 || ++count[fd] >= max_messages)
				close(fd);
		}
	}
}
