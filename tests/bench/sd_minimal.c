/*
 * sd_minimal: the least a socket-activated service can be, as the floor for
 * poold's cold start under systemd. Takes the one socket systemd passes
 * (fd 3, LISTEN_FDS=1), then for each client: accept, send the tutorial's
 * 26-byte payload, close. libc only, no threads, no config, no logging.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static const char payload[] = "(lp0\nI1\naI2\naI7\naI9\naI0\na.";

int main(void)
{
	const char *n = getenv("LISTEN_FDS");

	if (!n || atoi(n) != 1) {
		fprintf(stderr, "sd_minimal: expects one socket from systemd (LISTEN_FDS=1)\n");
		return 64;
	}
	signal(SIGPIPE, SIG_IGN);
	for (;;) {
		int c = accept4(3, NULL, NULL, SOCK_CLOEXEC);

		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return 71;
		}
		(void)!send(c, payload, sizeof(payload) - 1, MSG_NOSIGNAL);
		close(c);
	}
}
