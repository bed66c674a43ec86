/* listen.h - the listening sockets: taken from systemd (LISTEN_FDS, with
 * their LISTEN_FDNAMES) or bound from [listen] address and each
 * [listener NAME] address when poold runs on its own. The fds named
 * "metrics" (or bound for [metrics] address) are the Prometheus endpoint's,
 * kept apart from the client listeners. */
#ifndef POOLD_LISTEN_H
#define POOLD_LISTEN_H

#include <stdbool.h>
#include <stddef.h>

struct config;

#define LISTEN_METRICS_NAME "metrics" /* FileDescriptorName= of the metrics socket */

struct listeners {
	int *fds;
	char **names; /* per fd: its listener's name; NULL: the global settings */
	size_t n;
	bool activated;   /* the fds came from systemd */
	int *metrics_fds; /* GET /metrics, not clients: never in fds */
	size_t nmetrics;
};

int listen_open(const struct config *cfg, struct listeners *ret, char *err, size_t errlen);
void listen_close(struct listeners *l);
void listen_close_metrics(struct listeners *l);

#endif
