/* listen.h - the listening sockets: taken from systemd (LISTEN_FDS) or bound
 * from [listen] address when poold runs on its own. */
#ifndef POOLD_LISTEN_H
#define POOLD_LISTEN_H

#include <stdbool.h>
#include <stddef.h>

struct listeners {
	int *fds;
	size_t n;
	bool activated; /* the fds came from systemd */
};

int listen_open(char **addresses, struct listeners *ret, char *err, size_t errlen);
void listen_close(struct listeners *l);

#endif
