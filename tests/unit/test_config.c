/* modules: config payload util */
#include "config.h"
#include "tests.h"
#include "util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syslog.h>

static char dir[64];

/* Writes name (relative to a fresh temp dir) with the given bytes. */
static void put(const char *name, const char *text, size_t len)
{
	char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, text, len) != (ssize_t)len)
		abort();
	close(fd);
}
#define PUT(name, text) put(name, text, strlen(text))

static void fresh_dir(void)
{
	char cmd[128];

	if (dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd) != 0)
			abort();
	}
	strcpy(dir, "/tmp/poold-config-XXXXXX");
	if (!mkdtemp(dir))
		abort();
}

/* Loads dir/poold.conf; returns the error text ("" on success). */
static const char *load(struct config **ret)
{
	static char err[1024], rel[1024];
	char path[256];
	struct config *c = NULL;
	int r;

	snprintf(path, sizeof(path), "%s/poold.conf", dir);
	r = config_load(path, &c, err, sizeof(err));
	if (r < 0) {
		/* Strip the temp dir so tests compare "poold.conf:3: ...". */
		size_t n = strlen(dir) + 1;
		snprintf(rel, sizeof(rel), "%s", strncmp(err, dir, n - 1) == 0 ? err + n : err);
		if (ret)
			*ret = NULL;
		return rel;
	}
	if (ret)
		*ret = c;
	else
		config_unref(c);
	return "";
}

TEST(defaults)
{
	struct config *c;

	fresh_dir();
	PUT("poold.conf", "# nothing\n");
	ASSERT_STREQ(load(&c), "");
	ASSERT_EQ(c->threads, 4);
	ASSERT_EQ(c->queue_max, 1024);
	ASSERT_MEMEQ(c->payload.data, c->payload.len, "(lp0\nI1\naI2\naI7\naI9\naI0\na.", 26);
	ASSERT(c->payload_file == NULL);
	ASSERT_EQ(c->max_messages, 10);
	ASSERT_EQ(c->message_size, 1024);
	ASSERT_EQ(c->idle_usec, 10 * USEC_PER_SEC);
	ASSERT_EQ(c->session_usec, 60 * USEC_PER_SEC);
	ASSERT_EQ(c->max_connections, 4096);
	ASSERT_EQ(c->per_source, 0);
	ASSERT_EQ(c->overload, OVERLOAD_CLOSE);
	ASSERT_STREQ(c->listen[0], "[::]:2727");
	ASSERT(c->listen[1] == NULL);
	ASSERT_EQ(c->log_level, LOG_INFO);
	ASSERT(c->log_messages);
	config_unref(c);
}

TEST(every_key)
{
	struct config *c;

	fresh_dir();
	PUT("poold.conf", "[pool]\nthreads = 2\nqueue_max=5\n[payload]\ntext = hi\\x20\\x3b\\n\n"
			  "[session]\nmax_messages = 0\nmessage_size = 16\nidle_timeout = 250ms\n"
			  "session_timeout = 2m\nshutdown_timeout = 0\n[limits]\nmax_connections = 9\n"
			  "per_source = 3\noverload = busy\nbusy_message = go away\\n\n[listen]\n"
			  "address = 127.0.0.1:1\naddress = [::1]:2\naddress = /run/poold.sock\n"
			  "[log]\nlevel = debug\nmessages = no\n");
	ASSERT_STREQ(load(&c), "");
	ASSERT_EQ(c->threads, 2);
	ASSERT_EQ(c->queue_max, 5);
	ASSERT_MEMEQ(c->payload.data, c->payload.len, "hi ;\n", 5);
	ASSERT_EQ(c->max_messages, 0);
	ASSERT_EQ(c->message_size, 16);
	ASSERT_EQ(c->idle_usec, 250000);
	ASSERT_EQ(c->session_usec, 120 * USEC_PER_SEC);
	ASSERT_EQ(c->shutdown_usec, 0);
	ASSERT_EQ(c->max_connections, 9);
	ASSERT_EQ(c->per_source, 3);
	ASSERT_EQ(c->overload, OVERLOAD_BUSY);
	ASSERT_MEMEQ(c->busy_message.data, c->busy_message.len, "go away\n", 8);
	ASSERT_STREQ(c->listen[0], "127.0.0.1:1");
	ASSERT_STREQ(c->listen[1], "[::1]:2");
	ASSERT_STREQ(c->listen[2], "/run/poold.sock");
	ASSERT(c->listen[3] == NULL);
	ASSERT_EQ(c->log_level, LOG_DEBUG);
	ASSERT(!c->log_messages);
	config_unref(c);
}

TEST(errors_name_file_and_line)
{
	static const struct {
		const char *conf, *err;
	} cases[] = {
		{ "[pool]\nthreads = 0\n", "poold.conf:2: threads: 0 is out of range (1..1024)" },
		{ "[pool]\nthreads = 1025\n", "poold.conf:2: threads: 1025 is out of range (1..1024)" },
		{ "[pool]\n\nthreads = four\n", "poold.conf:3: threads: \"four\" is not a whole number" },
		{ "[pool]\nthreads = -1\n", "poold.conf:2: threads: \"-1\" is not a whole number" },
		{ "[pol]\nthreads = 2\n", "poold.conf:2: unknown section [pol]" },
		{ "[pool]\nthread = 2\n", "poold.conf:2: unknown key \"thread\" in section [pool]" },
		{ "threads = 2\n", "poold.conf:1: threads: key outside a section (add [section] above it)" },
		{ "[pool]\nthreads = 2\nthreads = 3\n",
		  "poold.conf:3: threads: duplicate key (already set at line 2)" },
		{ "[session]\nidle_timeout = 5x\n",
		  "poold.conf:2: idle_timeout: \"5x\" is not a duration (a whole number with ms, s, m or h)" },
		{ "[session]\nidle_timeout = 1ms\n", "poold.conf:2: idle_timeout: 1ms is out of range (10ms..24h)" },
		{ "[session]\nsession_timeout = 25h\n",
		  "poold.conf:2: session_timeout: 25h is out of range (10ms..24h)" },
		{ "[log]\nlevel = verbose\n",
		  "poold.conf:2: level: \"verbose\" is not one of err, warning, notice, info, debug" },
		{ "[log]\nmessages = maybe\n", "poold.conf:2: messages: \"maybe\" is not yes or no" },
		{ "[limits]\noverload = drop\n", "poold.conf:2: overload: \"drop\" is not close or busy" },
		{ "[payload]\ntext = a\\qb\n",
		  "poold.conf:2: text: invalid escape at \"\\qb\" (use \\n \\t \\r \\0 \\\\ or \\xNN)" },
		{ "[payload]\ntext = a\nfile = /etc/hostname\n",
		  "poold.conf:3: file: duplicate payload source (payload text already set at line 2)" },
		{ "[payload]\ntext = a\ntext = b\n",
		  "poold.conf:3: text: duplicate payload source (payload text already set at line 2)" },
		{ "[listen]\naddress = localhost\n", "poold.conf:2: address: \"localhost\" is not host:port, "
						     "[ipv6]:port or an absolute unix socket path" },
		{ "[listen]\naddress = ::1:80\n",
		  "poold.conf:2: address: \"::1:80\" is not host:port, [ipv6]:port or an absolute unix socket path" },
		{ "[listen]\naddress = 1.2.3.4:65536\n", "poold.conf:2: address: \"1.2.3.4:65536\" is not host:port, "
							 "[ipv6]:port or an absolute unix socket path" },
		{ "[listen]\naddress = a;b:2\n",
		  "poold.conf:2: address: \"a;b:2\" is not host:port, [ipv6]:port or an absolute unix socket path" },
		{ "[listen]\naddress = [::1 ]:2\n",
		  "poold.conf:2: address: \"[::1 ]:2\" is not host:port, [ipv6]:port or an absolute unix socket path" },
		{ "[pool]\nthreads\n", "poold.conf:2: syntax error (expected [section], key = value or a comment)" },
		{ "[pool\nthreads = 2\n", "poold.conf:1: syntax error (expected [section], key = value or a comment)" },
		{ "[pool]\nthreads = 2\n  3\n", "poold.conf:3: threads: indented line continues a key that takes a "
						"single value (remove the indentation)" },
		{ "[payload]\nfile = /nonexistent/p.bin\n",
		  "poold.conf:2: file: cannot read /nonexistent/p.bin: No such file or directory" },
		{ "[payload]\nfile = /dev/null\n", "poold.conf:2: file: /dev/null is not a regular file" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		fresh_dir();
		PUT("poold.conf", cases[i].conf);
		ASSERT_STREQ(load(NULL), cases[i].err);
	}
}

TEST(long_line_is_an_error_not_a_cut)
{
	char conf[512];

	fresh_dir();
	/* 198 bytes fit; 199 do not. */
	snprintf(conf, sizeof(conf), "[payload]\ntext = %0*d\n", 198 - 7, 0);
	PUT("poold.conf", conf);
	ASSERT_STREQ(load(NULL), "");
	snprintf(conf, sizeof(conf), "[payload]\ntext = %0*d\n", 199 - 7, 0);
	PUT("poold.conf", conf);
	ASSERT_STREQ(load(NULL), "poold.conf:2: line is 199 bytes long, at most 198 are allowed (continue long values "
				 "on indented lines)");
	/* Also in a comment, and on a last line without a newline. */
	snprintf(conf, sizeof(conf), "[pool]\n# %0*d", 300, 0);
	PUT("poold.conf", conf);
	ASSERT(strncmp(load(NULL), "poold.conf:2: line is 302 bytes long", 36) == 0);
}

TEST(continuation_lines_build_long_payloads)
{
	struct config *c;

	fresh_dir();
	PUT("poold.conf", "[payload]\ntext = first\\x20\n  second\n\tthird\\n\n[pool]\nthreads = 3\n");
	ASSERT_STREQ(load(&c), "");
	ASSERT_MEMEQ(c->payload.data, c->payload.len, "first secondthird\n", 18);
	ASSERT_EQ(c->threads, 3);
	config_unref(c);
}

TEST(nul_byte_in_file)
{
	fresh_dir();
	put("poold.conf", "[pool]\nthreads = 2\0\n", 20);
	ASSERT_STREQ(load(NULL), "poold.conf:2: NUL byte in line");
}

TEST(dropins_in_lexical_order_later_wins)
{
	struct config *c;
	char d[128];

	fresh_dir();
	snprintf(d, sizeof(d), "%s/poold.conf.d", dir);
	mkdir(d, 0755);
	PUT("poold.conf", "[pool]\nthreads = 2\n[payload]\ntext = main\n[listen]\naddress = 127.0.0.1:1\n");
	PUT("poold.conf.d/20-b.conf", "[pool]\nthreads = 20\n");
	PUT("poold.conf.d/10-a.conf", "[pool]\nthreads = 10\nqueue_max = 7\n[listen]\naddress = 127.0.0.1:2\n");
	PUT("poold.conf.d/30-c.conf.disabled", "[pool]\nthreads = 30\n");
	PUT("poold.conf.d/.hidden.conf", "[pool]\nthreads = 31\n");
	PUT("poold.conf.d/Z.conf", "[payload]\nfile = ../payload.bin\n");
	PUT("payload.bin", "\x01\x02");
	ASSERT_STREQ(load(&c), "");
	ASSERT_EQ(c->threads, 20);
	ASSERT_EQ(c->queue_max, 7);
	ASSERT_MEMEQ(c->payload.data, c->payload.len, "\x01\x02", 2);
	ASSERT(c->payload_file != NULL);
	/* A drop-in's address list replaces the inherited one. */
	ASSERT_STREQ(c->listen[0], "127.0.0.1:2");
	ASSERT(c->listen[1] == NULL);
	ASSERT_EQ((long long)(c->files[3] != NULL), 1);
	ASSERT(c->files[4] == NULL);
	config_unref(c);
}

TEST(error_in_dropin_names_the_dropin)
{
	char d[128];

	fresh_dir();
	snprintf(d, sizeof(d), "%s/poold.conf.d", dir);
	mkdir(d, 0755);
	PUT("poold.conf", "[pool]\nthreads = 2\n");
	PUT("poold.conf.d/50-bad.conf", "\n\n[pool]\nthreads = 0\n");
	ASSERT_STREQ(load(NULL), "poold.conf.d/50-bad.conf:4: threads: 0 is out of range (1..1024)");
}

TEST(missing_main_file)
{
	fresh_dir();
	ASSERT_STREQ(load(NULL), "poold.conf: No such file or directory");
}

TEST(refcount_keeps_config_alive)
{
	struct config *c, *ref;

	fresh_dir();
	PUT("poold.conf", "[payload]\ntext = old\n");
	ASSERT_STREQ(load(&c), "");
	ref = config_ref(c);
	ASSERT(config_unref(c) == NULL);
	ASSERT_MEMEQ(ref->payload.data, ref->payload.len, "old", 3);
	ASSERT(config_unref(ref) == NULL);
	ASSERT(config_unref(NULL) == NULL);
}
