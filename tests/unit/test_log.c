/* modules: log notify util */
/* test_log.c - log.c and notify.c: the escaping that keeps one event one
 * line, the level names, what reaches stderr and, through a fake journald
 * (a datagram socket at /run/systemd/journal/socket in a private mount
 * namespace, so root only), the fields of each entry. Tests that need what
 * this machine cannot give say "SKIP" and pass. */
#include "log.h"
#include "notify.h"
#include "tests.h"
#include "util.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define JOURNAL_DIR    "/run/systemd/journal"
#define JOURNAL_SOCKET JOURNAL_DIR "/socket"

#define SKIP(why)                                                                                                      \
	do {                                                                                                           \
		printf("SKIP %s: %s\n", __func__, why);                                                                \
		return;                                                                                                \
	} while (0)

TEST(log_escape_control_characters)
{
	char buf[128];

	/* Split where a hex escape would run on into the next character. */
	static const char in[] = "a\nb\tc\rd\x01"
				 "e\x7f"
				 "f\x1b[2J";
	static const char want[] = "a\\nb\\tc\\rd\\x01e\\x7ff\\x1b[2J";

	ASSERT_EQ(log_escape(in, buf, sizeof(buf)), strlen(want));
	ASSERT_STREQ(buf, want);
	/* Backslashes, UTF-8 and text payload_escape() rendered stay as they are. */
	log_escape("C:\\x00 caf\xc3\xa9 \"#;\"", buf, sizeof(buf));
	ASSERT_STREQ(buf, "C:\\x00 caf\xc3\xa9 \"#;\"");
	log_escape("STATUS=ok\nSTOPPING=1", buf, sizeof(buf));
	ASSERT(!strchr(buf, '\n'));
}

TEST(log_escape_cuts_between_escapes)
{
	char buf[8] = "zzzzzzz";

	ASSERT_EQ(log_escape("abc", buf, 0), 0);
	ASSERT_EQ(buf[0], 'z');
	ASSERT_EQ(log_escape("abc", buf, 1), 0);
	ASSERT_STREQ(buf, "");
	ASSERT_EQ(log_escape("abc", buf, 3), 2);
	ASSERT_STREQ(buf, "ab");
	ASSERT_EQ(log_escape("ab\n", buf, 4), 2); /* "\n" needs 2 bytes, 1 is left */
	ASSERT_STREQ(buf, "ab");
	ASSERT_EQ(log_escape("ab\n", buf, 5), 4);
	ASSERT_STREQ(buf, "ab\\n");
	ASSERT_EQ(log_escape("a\x02", buf, 5), 1); /* "\x02" needs 4 */
	ASSERT_STREQ(buf, "a");
	ASSERT_EQ(log_escape("a\x02", buf, 6), 5);
	ASSERT_STREQ(buf, "a\\x02");
}

TEST(log_level_names)
{
	static const char *const names[] = { "err", "warning", "notice", "info", "debug" };

	for (int i = LOG_ERR; i <= LOG_DEBUG; i++) {
		ASSERT_STREQ(log_level_name(i), names[i - LOG_ERR]);
		ASSERT_EQ(log_level_from_name(names[i - LOG_ERR]), i);
	}
	ASSERT_STREQ(log_level_name(LOG_EMERG), "emerg");
	ASSERT(log_level_name(-1) == NULL);
	ASSERT(log_level_name(8) == NULL);
	/* [log] level takes err..debug only, spelled exactly. */
	ASSERT_EQ(log_level_from_name("emerg"), -EINVAL);
	ASSERT_EQ(log_level_from_name("crit"), -EINVAL);
	ASSERT_EQ(log_level_from_name("Info"), -EINVAL);
	ASSERT_EQ(log_level_from_name("info "), -EINVAL);
	ASSERT_EQ(log_level_from_name("error"), -EINVAL);
	ASSERT_EQ(log_level_from_name(""), -EINVAL);
}

/* stderr captured through a pipe that a thread drains, so a writer never
 * blocks on it for good. */
struct capture {
	int saved, rfd;
	pthread_t thread;
	char *buf;
	size_t len, cap;
};

static void *capture_reader(void *arg)
{
	struct capture *cap = arg;

	for (;;) {
		ssize_t n;

		if (cap->cap - cap->len < 4096) {
			cap->cap = cap->cap * 2 + 65536;
			cap->buf = realloc(cap->buf, cap->cap + 1);
			if (!cap->buf)
				abort();
		}
		n = read(cap->rfd, cap->buf + cap->len, cap->cap - cap->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		cap->len += (size_t)n;
	}
	cap->buf[cap->len] = '\0';
	return NULL;
}

/* Points fd 2 at a pipe of pipe_size bytes (0: the default); the reader
 * starts now, or at capture_drain() when late. */
static int capture_start(struct capture *cap, int pipe_size, bool late)
{
	int p[2];

	*cap = (struct capture){ .saved = -1, .rfd = -1 };
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	if (pipe_size)
		fcntl(p[1], F_SETPIPE_SZ, pipe_size);
	fflush(stderr);
	cap->saved = dup(STDERR_FILENO);
	dup2(p[1], STDERR_FILENO);
	close(p[1]);
	cap->rfd = p[0];
	if (!late)
		pthread_create(&cap->thread, NULL, capture_reader, cap);
	return 0;
}

static void capture_drain(struct capture *cap)
{
	pthread_create(&cap->thread, NULL, capture_reader, cap);
}

/* Restores fd 2 and returns what was written, NUL-terminated (free it). */
static char *capture_end(struct capture *cap)
{
	dup2(cap->saved, STDERR_FILENO);
	close(cap->saved);
	pthread_join(cap->thread, NULL);
	close(cap->rfd);
	return cap->buf;
}

TEST(stderr_event_is_one_line)
{
	struct capture cap;
	struct log *l;
	_cleanup_free_ char *out = NULL;

	setenv("POOLD_LOG_TARGET", "stderr", 1);
	l = log_new();
	unsetenv("POOLD_LOG_TARGET");
	ASSERT(l);
	ASSERT_EQ(capture_start(&cap, 0, false), 0);
	log_event(l, LOG_NOTICE, NULL, NULL, "Failed to load %s: %s", "/etc/a\nwarning: forged", "\x1b[2Jgone");
	ASSERT_EQ(log_start(l), 0);
	log_event(l, LOG_INFO, NULL, &(struct log_conn){ .remote = "unix", .addr = "unix" }, "queued %s", "x\r\ny");
	l = log_free(l);
	out = capture_end(&cap);
	ASSERT_STREQ(out, "notice: Failed to load /etc/a\\nwarning: forged: \\x1b[2Jgone\n"
			  "info: queued x\\r\\ny\n");
}

/* Once per process: a private /run, so that the journal socket is ours to
 * create or leave out. Needs root and a single thread. 0 or -errno. */
static int private_run(void)
{
	static int r = 1;

	if (r <= 0)
		return r;
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("poold-test", "/run", "tmpfs", 0, "size=1m,mode=755") < 0 || mkdir("/run/systemd", 0755) < 0 ||
	    mkdir(JOURNAL_DIR, 0755) < 0)
		return r = -errno;
	return r = 0;
}

/* The value of key in a journald native datagram ("KEY=value\n", or
 * "KEY\n", a little-endian 64-bit size, the bytes, "\n") copied into ret as
 * a string; returns how often key occurs. */
static int journal_field(const char *d, size_t n, const char *key, char *ret, size_t size)
{
	size_t klen = strlen(key), i = 0;
	int found = 0;

	while (i < n) {
		const char *nl = memchr(d + i, '\n', n - i), *eq;
		const char *v;
		size_t vlen, next;

		if (!nl)
			break;
		eq = memchr(d + i, '=', (size_t)(nl - d) - i);
		if (eq) {
			v = eq + 1;
			vlen = (size_t)(nl - v);
			next = (size_t)(nl - d) + 1;
		} else {
			uint64_t len = 0;

			eq = nl;
			if ((size_t)(nl - d) + 9 > n)
				break;
			for (int b = 7; b >= 0; b--)
				len = len << 8 | (unsigned char)nl[1 + b];
			v = nl + 9;
			vlen = (size_t)len;
			next = (size_t)(v - d) + vlen + 1;
			if (next > n)
				break;
		}
		if ((size_t)(eq - (d + i)) == klen && memcmp(d + i, key, klen) == 0) {
			size_t c = vlen < size - 1 ? vlen : size - 1;

			memcpy(ret, v, c);
			ret[c] = '\0';
			found++;
		}
		i = next;
	}
	return found;
}

/* The next datagram on fd within 5 s, into buf; its length or -1. */
static ssize_t recv_entry(int fd, char *buf, size_t size)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	if (poll(&p, 1, 5000) != 1)
		return -1;
	return recv(fd, buf, size, 0);
}

static int fake_journal(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX, .sun_path = JOURNAL_SOCKET };
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	unlink(JOURNAL_SOCKET);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int r = -errno;

		close(fd);
		return r;
	}
	return fd;
}

TEST(journal_entry_fields_and_caller_location)
{
	_cleanup_close_ int fd = -1;
	struct log *l;
	char d[65536], v[256], line[16], addr[64] = "2001:db8::1";
	ssize_t n;
	int at;

	if (private_run() < 0)
		SKIP("no private mount namespace (needs root)");
	fd = fake_journal();
	ASSERT(fd >= 0);
	setenv("POOLD_LOG_TARGET", "journal", 1);
	l = log_new();
	unsetenv("POOLD_LOG_TARGET");
	ASSERT(l);

	/* Written at once (before log_start()). */
	at = __LINE__ + 1;
	log_event(l, LOG_NOTICE, MSGID_REFUSED,
		  &(struct log_conn){ .id = 7, .remote = "[2001:db8::1]:443", .addr = addr, .port = 443 }, "Refused %s",
		  "a\nPRIORITY=0");
	n = recv_entry(fd, d, sizeof(d));
	ASSERT(n > 0);
	ASSERT_EQ(journal_field(d, (size_t)n, "MESSAGE", v, sizeof(v)), 1);
	ASSERT_STREQ(v, "Refused a\\nPRIORITY=0");
	ASSERT_EQ(journal_field(d, (size_t)n, "PRIORITY", v, sizeof(v)), 1);
	ASSERT_STREQ(v, "5");
	ASSERT_EQ(journal_field(d, (size_t)n, "MESSAGE_ID", v, sizeof(v)), 1);
	ASSERT_STREQ(v, MSGID_REFUSED);
	ASSERT_EQ(journal_field(d, (size_t)n, "POOLD_CONN", v, sizeof(v)), 1);
	ASSERT_STREQ(v, "7");
	ASSERT_EQ(journal_field(d, (size_t)n, "POOLD_REMOTE", v, sizeof(v)), 1);
	ASSERT_STREQ(v, "[2001:db8::1]:443");
	ASSERT_EQ(journal_field(d, (size_t)n, "POOLD_REMOTE_ADDR", v, sizeof(v)), 1);
	ASSERT_STREQ(v, "2001:db8::1");
	ASSERT_EQ(journal_field(d, (size_t)n, "POOLD_REMOTE_PORT", v, sizeof(v)), 1);
	ASSERT_STREQ(v, "443");
	ASSERT_EQ(journal_field(d, (size_t)n, "CODE_FILE", v, sizeof(v)), 1);
	ASSERT_STREQ(v, __FILE__);
	snprintf(line, sizeof(line), "%d", at);
	ASSERT_EQ(journal_field(d, (size_t)n, "CODE_LINE", v, sizeof(v)), 1);
	ASSERT_STREQ(v, line);
	ASSERT_EQ(journal_field(d, (size_t)n, "CODE_FUNC", v, sizeof(v)), 1);
	ASSERT_STREQ(v, __func__);

	/* Queued for the log thread: the record keeps its own copy of addr. */
	ASSERT_EQ(log_start(l), 0);
	at = __LINE__ + 1;
	log_event(l, LOG_INFO, NULL, &(struct log_conn){ .remote = "192.0.2.1:80", .addr = addr, .port = 80 },
		  "Queued");
	strcpy(addr, "clobbered");
	log_event(l, LOG_INFO, NULL, &(struct log_conn){ .remote = "unix" }, "No address");
	l = log_free(l);
	n = recv_entry(fd, d, sizeof(d));
	ASSERT(n > 0);
	ASSERT_EQ(journal_field(d, (size_t)n, "MESSAGE", v, sizeof(v)), 1);
	ASSERT_STREQ(v, "Queued");
	ASSERT_EQ(journal_field(d, (size_t)n, "POOLD_REMOTE_ADDR", v, sizeof(v)), 1);
	ASSERT_STREQ(v, "2001:db8::1");
	ASSERT_EQ(journal_field(d, (size_t)n, "POOLD_REMOTE_PORT", v, sizeof(v)), 1);
	ASSERT_STREQ(v, "80");
	snprintf(line, sizeof(line), "%d", at);
	ASSERT_EQ(journal_field(d, (size_t)n, "CODE_LINE", v, sizeof(v)), 1);
	ASSERT_STREQ(v, line);
	n = recv_entry(fd, d, sizeof(d));
	ASSERT(n > 0);
	ASSERT_EQ(journal_field(d, (size_t)n, "POOLD_REMOTE", v, sizeof(v)), 1);
	ASSERT_EQ(journal_field(d, (size_t)n, "POOLD_REMOTE_ADDR", v, sizeof(v)), 0);
	ASSERT_EQ(journal_field(d, (size_t)n, "POOLD_REMOTE_PORT", v, sizeof(v)), 0);
	unlink(JOURNAL_SOCKET);
}

/* With the journal socket gone, the events and the warning about the ones
 * dropped all go to stderr: every event is either written or counted there. */
TEST(dropped_warning_reaches_stderr_without_journal)
{
	enum { EVENTS = 50000 };
	struct capture cap;
	struct log *l;
	_cleanup_free_ char *out = NULL;
	unsigned long written = 0, dropped = 0, warnings = 0;

	if (private_run() < 0 && access(JOURNAL_SOCKET, F_OK) == 0)
		SKIP("a journal socket exists and no private mount namespace (needs root) can hide it");
	unlink(JOURNAL_SOCKET);
	setenv("POOLD_LOG_TARGET", "journal", 1);
	l = log_new();
	unsetenv("POOLD_LOG_TARGET");
	ASSERT(l);
	/* A small pipe nobody reads yet: the log thread blocks on it, the
	 * queue fills, and events are dropped. */
	ASSERT_EQ(capture_start(&cap, 4096, true), 0);
	ASSERT_EQ(log_start(l), 0);
	for (int i = 0; i < EVENTS; i++)
		log_event(l, LOG_INFO, NULL, NULL, "Event %d", i);
	capture_drain(&cap);
	l = log_free(l);
	out = capture_end(&cap);
	for (char *p = out, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
		unsigned long k;

		if (strncmp(p, "info: Event ", 12) == 0)
			written++;
		else if (sscanf(p, "warning: Dropped %lu log entries", &k) == 1)
			dropped += k, warnings++;
	}
	printf("     %lu events written, %lu dropped in %lu warnings\n", written, dropped, warnings);
	ASSERT(warnings >= 1);
	ASSERT_EQ(written + dropped, EVENTS);
}

TEST(notify_status_is_one_assignment)
{
	char path[64], d[8192];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ssize_t n;

	ASSERT(fd >= 0);
	snprintf(path, sizeof(path), "/tmp/poold-test-notify-%d", (int)getpid());
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	unlink(path);
	ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setenv("NOTIFY_SOCKET", path, 1);
	notify_status("Failed to load /etc/x\nSTOPPING=1\tand\x7f");
	n = recv_entry(fd, d, sizeof(d) - 1);
	unsetenv("NOTIFY_SOCKET");
	unlink(path);
	ASSERT(n > 0);
	d[n] = '\0';
	ASSERT_STREQ(d, "STATUS=Failed to load /etc/x\\nSTOPPING=1\\tand\\x7f");
}
