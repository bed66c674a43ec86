/* listen.c - owns the listening fds. Under systemd every passed fd must be a
 * listening stream socket (TCP over IPv4/IPv6 or AF_UNIX); anything else is
 * refused, not guessed at. Each keeps its LISTEN_FDNAMES name (the socket
 * unit's FileDescriptorName=), which picks its [listener NAME] section.
 * Standalone, each [listen] address and each listener's address is bound
 * here, named after its listener; "[::]:port" is dual-stack. The name
 * "metrics" is not a listener's: those fds (FileDescriptorName=metrics, or
 * the sockets bound for [metrics] address) go to l->metrics_fds, which the
 * reactor never sees; metrics.c serves HTTP on them. All fds end up
 * non-blocking and close-on-exec. Runs once at start, before any thread
 * exists (sd_listen_fds() requires it). */
#include "listen.h"
#include "config.h"
#include "util.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#define LISTEN_BACKLOG 4096

static int fd_prepare(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		return -errno;
	return 0;
}

static bool is_metrics(const char *name)
{
	return name && strcmp(name, LISTEN_METRICS_NAME) == 0;
}

static int push_fd(struct listeners *l, int fd, const char *name)
{
	int *n;
	char **nn;

	if (is_metrics(name)) {
		n = realloc(l->metrics_fds, (l->nmetrics + 1) * sizeof(int));
		if (!n)
			return -ENOMEM;
		l->metrics_fds = n;
		l->metrics_fds[l->nmetrics++] = fd;
		return 0;
	}
	n = realloc(l->fds, (l->n + 1) * sizeof(int));
	if (!n)
		return -ENOMEM;
	l->fds = n;
	nn = realloc(l->names, (l->n + 1) * sizeof(char *));
	if (!nn)
		return -ENOMEM;
	l->names = nn;
	l->names[l->n] = NULL;
	if (name && !(l->names[l->n] = strdup(name)))
		return -ENOMEM;
	l->fds[l->n++] = fd;
	return 0;
}

static int take_activated(int n, char **names, struct listeners *l, char *err, size_t errlen)
{
	for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + n; fd++) {
		const char *name = names ? names[fd - SD_LISTEN_FDS_START] : NULL;

		int r = sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1);

		if (r <= 0 || (sd_is_socket(fd, AF_INET, 0, -1) <= 0 && sd_is_socket(fd, AF_INET6, 0, -1) <= 0 &&
			       sd_is_socket(fd, AF_UNIX, 0, -1) <= 0)) {
			snprintf(err, errlen,
				 "Passed file descriptor %d is not a listening TCP or unix stream socket (check "
				 "ListenStream= in poold.socket)",
				 fd);
			return -ENOTSOCK;
		}
		r = fd_prepare(fd);
		if (r == 0)
			r = push_fd(l, fd, name && strcmp(name, "unknown") != 0 ? name : NULL);
		if (r < 0) {
			snprintf(err, errlen, "Failed to prepare passed socket %d: %s", fd, strerror(-r));
			return r;
		}
	}
	l->activated = true;
	if (l->n == 0) {
		snprintf(err, errlen,
			 "systemd passed only the metrics socket (FileDescriptorName=%s): no socket for clients",
			 LISTEN_METRICS_NAME);
		return -EDESTADDRREQ;
	}
	return 0;
}

static int bind_unix(const char *path, const char *name, struct listeners *l, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = -1;
	struct stat st;

	size_t n = strlen(path);

	if (n >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "Failed to listen on %s: path too long", path);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, n);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	/* A socket left behind by an earlier run would make bind() fail. */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, LISTEN_BACKLOG) < 0)
		goto fail;
	if (push_fd(l, fd, name) < 0)
		goto fail;
	fd = -1;
	return 0;
fail:
	snprintf(err, errlen, "Failed to listen on %s: %s", path, strerror(errno));
	return -errno;
}

static int bind_inet(const char *addr, const char *host, const char *port, const char *name, struct listeners *l,
		     char *err, size_t errlen)
{
	struct addrinfo hints = {
		.ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_ADDRCONFIG,
		.ai_socktype = SOCK_STREAM,
	}, *res = NULL;
	int r, saved = 0;

	if (strcmp(host, "*") == 0)
		host = "::";
	r = getaddrinfo(host, port, &hints, &res);
	if (r != 0) {
		hints.ai_flags &= ~AI_ADDRCONFIG;
		r = getaddrinfo(host, port, &hints, &res);
	}
	if (r != 0) {
		snprintf(err, errlen, "Failed to resolve %s: %s", addr, gai_strerror(r));
		return -EADDRNOTAVAIL;
	}
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		int one = 1, zero = 0;

		if (fd < 0)
			goto fail;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, LISTEN_BACKLOG) < 0 ||
		    push_fd(l, fd, name) < 0) {
			saved = errno;
			close(fd);
			errno = saved;
			goto fail;
		}
	}
	freeaddrinfo(res);
	return 0;
fail:
	saved = errno;
	freeaddrinfo(res);
	snprintf(err, errlen, "Failed to listen on %s: %s", addr, strerror(saved));
	return -saved;
}

/* Binds one address: host:port ("[::]:port" dual-stack) or an absolute
 * unix path, both checked at config load. `what` names it in errors. */
static int bind_address(const char *addr, const char *what, const char *name, struct listeners *l, char *err,
			size_t errlen)
{
	char host[256], port[128];

	if (config_split_address(addr, host, sizeof(host), port, sizeof(port)) < 0) {
		snprintf(err, errlen, "Invalid address %s", addr);
		return -EINVAL;
	}
	return host[0] ? bind_inet(what, host, port, name, l, err, errlen) : bind_unix(port, name, l, err, errlen);
}

static int bind_all(char **addresses, const char *name, struct listeners *l, char *err, size_t errlen)
{
	int r = 0;

	for (char **a = addresses; r == 0 && a && *a; a++)
		r = bind_address(*a, *a, name, l, err, errlen);
	return r;
}

/* Takes systemd's sockets when there are any, else binds addresses. */
int listen_open(const struct config *cfg, struct listeners *ret, char *err, size_t errlen)
{
	struct listeners l = { 0 };
	char **names = NULL;
	int n, r = 0;

	n = sd_listen_fds_with_names(1, &names);
	if (n < 0) {
		snprintf(err, errlen, "Failed to read LISTEN_FDS: %s", strerror(-n));
		return n;
	}
	if (n > 0) {
		r = take_activated(n, names, &l, err, errlen);
	} else {
		r = bind_all(cfg->def.listen, NULL, &l, err, errlen);
		for (size_t i = 0; r == 0 && i < cfg->nlisteners; i++)
			r = bind_all(cfg->listeners[i]->listen, cfg->listeners[i]->name, &l, err, errlen);
		if (r == 0 && cfg->metrics_address) {
			char what[512];

			snprintf(what, sizeof(what), "[metrics] address %s", cfg->metrics_address);
			r = bind_address(cfg->metrics_address, what, LISTEN_METRICS_NAME, &l, err, errlen);
		}
		if (r == 0 && l.n == 0) {
			snprintf(err, errlen, "No socket passed by systemd and no [listen] address configured");
			r = -EDESTADDRREQ;
		}
	}
	for (char **i = names; i && *i; i++)
		free(*i);
	free(names);
	if (r < 0) {
		listen_close(&l);
		listen_close_metrics(&l);
		return r;
	}
	*ret = l;
	return 0;
}

void listen_close(struct listeners *l)
{
	for (size_t i = 0; i < l->n; i++) {
		if (l->fds[i] >= 0)
			close(l->fds[i]);
		free(l->names[i]);
	}
	free(l->fds);
	free(l->names);
	l->fds = NULL;
	l->names = NULL;
	l->n = 0;
}

/* Apart from listen_close(), which the reactor calls on SIGTERM to stop
 * accepting clients: the metrics endpoint serves on until poold exits. */
void listen_close_metrics(struct listeners *l)
{
	for (size_t i = 0; i < l->nmetrics; i++)
		if (l->metrics_fds[i] >= 0)
			close(l->metrics_fds[i]);
	free(l->metrics_fds);
	l->metrics_fds = NULL;
	l->nmetrics = 0;
}
