/* modules: access config payload util */
#include "config.h"
#include "tests.h"
#include "util.h"

#include <fcntl.h>
#include <limits.h>
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

/* Loads dir/poold.conf, as a reload after prev when prev is not NULL;
 * returns the error text ("" on success). */
static const char *reload(struct config *prev, struct config **ret)
{
	static char err[1024], rel[1024];
	char path[256];
	struct config *c = NULL;
	int r;

	snprintf(path, sizeof(path), "%s/poold.conf", dir);
	r = prev ? config_reload(path, prev, &c, err, sizeof(err)) : config_load(path, &c, err, sizeof(err));
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

static const char *load(struct config **ret)
{
	return reload(NULL, ret);
}

TEST(defaults)
{
	struct config *c;

	fresh_dir();
	PUT("poold.conf", "# nothing\n");
	ASSERT_STREQ(load(&c), "");
	ASSERT_EQ(c->threads, 4);
	ASSERT_EQ(c->queue_max, 4096);
	ASSERT_MEMEQ(c->def.payload.data, c->def.payload.len, "(lp0\nI1\naI2\naI7\naI9\naI0\na.", 26);
	ASSERT(c->def.payload_file == NULL);
	ASSERT_EQ(c->def.max_messages, 10);
	ASSERT_EQ(c->def.message_size, 1024);
	ASSERT_EQ(c->def.idle_usec, 10 * USEC_PER_SEC);
	ASSERT_EQ(c->def.session_usec, 60 * USEC_PER_SEC);
	ASSERT_EQ(c->max_connections, 4096);
	ASSERT_EQ(c->def.per_source, 0);
	ASSERT_EQ(c->def.overload, OVERLOAD_CLOSE);
	ASSERT_STREQ(c->def.listen[0], "[::]:2727");
	ASSERT(c->def.listen[1] == NULL);
	ASSERT_EQ(c->log_level, LOG_INFO);
	ASSERT(c->def.log_messages);
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
	ASSERT_MEMEQ(c->def.payload.data, c->def.payload.len, "hi ;\n", 5);
	ASSERT_EQ(c->def.max_messages, 0);
	ASSERT_EQ(c->def.message_size, 16);
	ASSERT_EQ(c->def.idle_usec, 250000);
	ASSERT_EQ(c->def.session_usec, 120 * USEC_PER_SEC);
	ASSERT_EQ(c->shutdown_usec, 0);
	ASSERT_EQ(c->max_connections, 9);
	ASSERT_EQ(c->def.per_source, 3);
	ASSERT_EQ(c->def.overload, OVERLOAD_BUSY);
	ASSERT_MEMEQ(c->def.busy_message.data, c->def.busy_message.len, "go away\n", 8);
	ASSERT_STREQ(c->def.listen[0], "127.0.0.1:1");
	ASSERT_STREQ(c->def.listen[1], "[::1]:2");
	ASSERT_STREQ(c->def.listen[2], "/run/poold.sock");
	ASSERT(c->def.listen[3] == NULL);
	ASSERT_EQ(c->log_level, LOG_DEBUG);
	ASSERT(!c->def.log_messages);
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
		{ "[session]\nidle_timeout = 99999999999999999999s\n",
		  "poold.conf:2: idle_timeout: 99999999999999999999s is out of range (10ms..24h)" },
		{ "[session]\nshutdown_timeout = 99999999999999999h\n",
		  "poold.conf:2: shutdown_timeout: 99999999999999999h is out of range (0s..1h)" },
		{ "[session]\nidle_timeout = 99999999999999999999x\n",
		  "poold.conf:2: idle_timeout: "
		  "\"99999999999999999999x\" is not a duration (a whole number with ms, s, m or h)" },
		{ "[pool]\nthreads = 99999999999999999999\n",
		  "poold.conf:2: threads: 99999999999999999999 is out of range (1..1024)" },
		{ "[pool]\nthreads = 99999999999999999999x\n",
		  "poold.conf:2: threads: \"99999999999999999999x\" is not a whole number" },
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
		/* inih ignores what follows "]": this would leave threads at 4. */
		{ "[pool] threads = 5\n",
		  "poold.conf:1: text after [pool] (only a comment may follow a section header)" },
		{ "[pool]x\n", "poold.conf:1: text after [pool] (only a comment may follow a section header)" },
		{ "[pool]\nthreads = 2\n\n[log] ] level = debug\n",
		  "poold.conf:4: text after [log] (only a comment may follow a section header)" },
		{ "\xef\xbb\xbf[pool]x\n",
		  "poold.conf:1: text after [pool] (only a comment may follow a section header)" },
		/* inih forgets the previous key at a section header: the indented
		 * line is a second text, not more of the first. */
		{ "[payload]\ntext = abc\n[payload]\n    text = def\n",
		  "poold.conf:4: text: duplicate payload source (payload text already set at line 2)" },
		/* inih's continuations start with any isspace() byte. */
		{ "[listen]\naddress = 127.0.0.1:1\n\v127.0.0.1:2\n",
		  "poold.conf:3: address: indented line continues a "
		  "key that takes a single value (remove the indentation)" },
		{ "[listen]\naddress = 127.0.0.1:1\n\f127.0.0.1:2\n",
		  "poold.conf:3: address: indented line continues a "
		  "key that takes a single value (remove the indentation)" },
		{ "[listen]\naddress = 127.0.0.1:1\n\r127.0.0.1:2\n",
		  "poold.conf:3: address: indented line continues a "
		  "key that takes a single value (remove the indentation)" },
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
	ASSERT_MEMEQ(c->def.payload.data, c->def.payload.len, "first secondthird\n", 18);
	ASSERT_EQ(c->threads, 3);
	config_unref(c);
}

/* What inih reads as a section header, and what it reads as more of a value. */
TEST(section_headers_and_continuations_as_inih_reads_them)
{
	struct config *c;

	fresh_dir();
	PUT("poold.conf",
	    "\xef\xbb\xbf[pool]   ; threads = 9\nthreads = 3\n[log] # a comment\n\v[log]\t\nlevel = debug\n"
	    "[session];x\nmax_messages = 2\n[payload]\ntext = a\n  [b]\n\v\\x20c\n\f\\x20d\n");
	ASSERT_STREQ(load(&c), "");
	ASSERT_EQ(c->threads, 3);
	ASSERT_EQ(c->log_level, LOG_DEBUG);
	ASSERT_EQ(c->def.max_messages, 2);
	ASSERT_MEMEQ(c->def.payload.data, c->def.payload.len, "a[b] c d", 8);
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
	ASSERT_MEMEQ(c->def.payload.data, c->def.payload.len, "\x01\x02", 2);
	ASSERT(c->def.payload_file != NULL);
	/* A drop-in's address list replaces the inherited one. */
	ASSERT_STREQ(c->def.listen[0], "127.0.0.1:2");
	ASSERT(c->def.listen[1] == NULL);
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
	ASSERT_MEMEQ(ref->def.payload.data, ref->def.payload.len, "old", 3);
	ASSERT(config_unref(ref) == NULL);
	ASSERT(config_unref(NULL) == NULL);
}

/* A reload whose payload did not change shares the previous config's bytes,
 * so clients still holding old configs do not keep one copy each. */
TEST(reload_shares_an_unchanged_payload)
{
	struct config *a, *b, *c, *d;

	fresh_dir();
	PUT("payload.bin", "0123456789");
	PUT("poold.conf", "[payload]\nfile = payload.bin\n");
	ASSERT_STREQ(load(&a), "");
	ASSERT_STREQ(reload(a, &b), "");
	ASSERT(b->def.payload.data == a->def.payload.data);
	config_unref(a);
	ASSERT_MEMEQ(b->def.payload.data, b->def.payload.len, "0123456789", 10);
	/* Same length, other bytes: a copy of its own. */
	PUT("payload.bin", "0123456780");
	ASSERT_STREQ(reload(b, &c), "");
	ASSERT(c->def.payload.data != b->def.payload.data);
	ASSERT_MEMEQ(c->def.payload.data, c->def.payload.len, "0123456780", 10);
	ASSERT_MEMEQ(b->def.payload.data, b->def.payload.len, "0123456789", 10);
	/* The same bytes from text instead of a file are still the same bytes. */
	PUT("poold.conf", "[payload]\ntext = 0123456780\n");
	ASSERT_STREQ(reload(c, &d), "");
	ASSERT(d->def.payload.data == c->def.payload.data);
	config_unref(b);
	config_unref(c);
	config_unref(d);
	/* A first load has nothing to share. */
	ASSERT_STREQ(load(&a), "");
	ASSERT_STREQ(load(&b), "");
	ASSERT(a->def.payload.data != b->def.payload.data);
	config_unref(a);
	config_unref(b);
}

/* CONFIG_FILE_MAX is 1 MiB: a file of exactly that size loads. */
TEST(config_file_of_exactly_one_mib)
{
	static char conf[(1 << 20) + 1];
	const char *head = "[pool]\nthreads = 3\n";
	size_t n = strlen(head);
	struct config *c;

	memcpy(conf, head, n);
	while (n < sizeof(conf) - 1) {
		size_t line = sizeof(conf) - 1 - n < 100 ? sizeof(conf) - 1 - n : 100;

		conf[n] = '#';
		memset(conf + n + 1, 'x', line - 1);
		conf[n + line - 1] = '\n';
		n += line;
	}
	fresh_dir();
	put("poold.conf", conf, 1 << 20);
	ASSERT_STREQ(load(&c), "");
	ASSERT_EQ(c->threads, 3);
	config_unref(c);
	conf[1 << 20] = '\n';
	put("poold.conf", conf, (1 << 20) + 1);
	ASSERT_STREQ(load(NULL), "poold.conf: file too large");
}

/* File names reach messages (and sd_notify STATUS=, and the journal) and
 * --print-config's comments escaped: a newline in a name splits nothing. */
TEST(file_names_are_escaped)
{
	struct config *c;
	char d[128], *text = NULL;
	size_t len = 0;
	FILE *f;

	fresh_dir();
	snprintf(d, sizeof(d), "%s/poold.conf.d", dir);
	mkdir(d, 0755);
	PUT("poold.conf", "[pool]\nthreads = 2\n");
	PUT("poold.conf.d/a\nSTOPPING=1.conf", "[pool]\nthreads\n");
	ASSERT_STREQ(load(NULL), "poold.conf.d/a\\nSTOPPING=1.conf:2: syntax error (expected [section], key = value or "
				 "a comment)");
	fresh_dir();
	snprintf(d, sizeof(d), "%s/poold.conf.d", dir);
	mkdir(d, 0755);
	PUT("poold.conf", "[payload]\nfile = p\x1b[2J\\.bin\n");
	ASSERT(strstr(load(NULL), "/p\\x1b[2J\\\\.bin: No such file or directory") != NULL);
	PUT("poold.conf", "[pool]\nthreads = 2\n");
	PUT("poold.conf.d/b\tc\x7f;#.conf", "[pool]\nthreads = 3\n");
	ASSERT_STREQ(load(&c), "");
	f = open_memstream(&text, &len);
	config_print(c, f);
	fclose(f);
	ASSERT(strstr(text, "/poold.conf.d/b\\tc\\x7f;#.conf\n") != NULL);
	ASSERT(strchr(text, '\t') == NULL && strchr(text, '\x7f') == NULL);
	free(text);
	config_unref(c);
}

/* A relative payload path is stored absolute, resolved against the naming
 * file's directory as it was when loaded: the printed config reads back
 * from anywhere. */
TEST(payload_file_path_is_absolute)
{
	char cwd[PATH_MAX], real[PATH_MAX], want[PATH_MAX + 64], rel[128], err[1024];
	struct config *c = NULL;

	fresh_dir();
	snprintf(rel, sizeof(rel), "%s/poold.conf.d", dir);
	mkdir(rel, 0755);
	PUT("poold.conf", "[payload]\nfile = p.bin\n");
	PUT("p.bin", "xy");
	ASSERT(getcwd(cwd, sizeof(cwd)) != NULL);
	ASSERT(realpath(dir, real) != NULL);
	ASSERT_EQ(chdir(dir), 0);
	ASSERT_EQ(config_load("./poold.conf", &c, err, sizeof(err)), 0);
	snprintf(want, sizeof(want), "%s/p.bin", real);
	ASSERT_STREQ(c->def.payload_file, want);
	config_unref(c);
	/* From a drop-in, with the config named relative to the parent. */
	ASSERT_EQ(chdir(".."), 0);
	PUT("poold.conf", "");
	PUT("poold.conf.d/1.conf", "[payload]\nfile = ../p.bin\n");
	snprintf(rel, sizeof(rel), "%s/poold.conf", strrchr(dir, '/') + 1);
	ASSERT_EQ(config_load(rel, &c, err, sizeof(err)), 0);
	snprintf(want, sizeof(want), "%s/poold.conf.d/../p.bin", real);
	ASSERT_STREQ(c->def.payload_file, want);
	ASSERT_MEMEQ(c->def.payload.data, c->def.payload.len, "xy", 2);
	config_unref(c);
	ASSERT_EQ(chdir(cwd), 0);
}
