/* listen.h - the listening sockets: taken from systemd (LISTEN_FDS, with
 * their LISTEN_FDNAMES) or bound from [listen] address and each
 * [listener NAME] address when poold runs on its own. */
#ifndef POOLD_LISTEN_H
#define POOLD_LISTEN_H

#include <stdbool.h>
#include <stddef.h>

struct config;

struct listeners {
	int *fds;
	char **names; /* per fd: its listener's name; NULL: the global settings */
	size_t n;
	bool activated; /* the fds came from systemd */
};

int listen_open(const struct config *cfg, struct listeners *ret, char *err, size_t errlen);
void listen_close(struct listeners *l);

#endif
