/*
 * tutorial_inetd: the tutorial protocol for one client on stdin/stdout, for
 * `systemd-socket-activate --inetd -a` (fork and exec per connection): write
 * the 26-byte payload, then up to 10 reads of up to 1024 bytes, then exit.
 * Like the tutorial it prints what it reads; here to stderr, which the bench
 * sends to /dev/null.
 */
#include <stdio.h>
#include <unistd.h>

static const char payload[] = "(lp0\nI1\naI2\naI7\naI9\naI0\na.";

int main(void)
{
	char buf[1024];

	if (write(1, payload, sizeof(payload) - 1) != (ssize_t)sizeof(payload) - 1)
		return 1;
	for (int i = 0; i < 10; i++) {
		ssize_t n = read(0, buf, sizeof(buf));

		if (n <= 0)
			break;
		fprintf(stderr, "%.*s\n", (int)n, buf);
	}
	return 0;
}
