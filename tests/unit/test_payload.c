/* modules: payload util */
#include "payload.h"
#include "tests.h"
#include "util.h"

#include <fcntl.h>

#define TUTORIAL "(lp0\nI1\naI2\naI7\naI9\naI0\na."

TEST(unescape_tutorial_payload)
{
	_cleanup_free_ char *out = NULL;
	size_t len = 0, pos;

	ASSERT_EQ(payload_unescape("(lp0\\nI1\\naI2\\naI7\\naI9\\naI0\\na.", &out, &len, &pos), 0);
	ASSERT_EQ(len, 26);
	ASSERT_MEMEQ(out, len, TUTORIAL, 26);
}

TEST(unescape_all_escapes)
{
	_cleanup_free_ char *out = NULL;
	size_t len = 0, pos;

	ASSERT_EQ(payload_unescape("a\\tb\\rc\\\\d\\0e\\x41\\xfF\\x20", &out, &len, &pos), 0);
	ASSERT_MEMEQ(out, len, "a\tb\rc\\d\0eA\xff ", 12);
}

TEST(unescape_rejects_bad_escapes)
{
	static const struct {
		const char *in;
		size_t pos;
	} bad[] = {
		{ "abc\\", 3 }, { "\\q", 0 }, { "x\\x4", 1 }, { "\\xg0", 0 }, { "ok\\x", 2 }, { "\\\\\\z", 2 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char *out = NULL;
		size_t len, pos = 99;

		ASSERT_EQ(payload_unescape(bad[i].in, &out, &len, &pos), -EINVAL);
		ASSERT_EQ(pos, bad[i].pos);
		ASSERT(out == NULL);
	}
}

TEST(escape_round_trips_every_byte)
{
	char in[256], buf[256 * 4 + 8];
	_cleanup_free_ char *back = NULL;
	size_t len, pos;

	for (int i = 0; i < 256; i++)
		in[i] = (char)i;
	payload_escape(in, sizeof(in), buf, sizeof(buf));
	for (const char *p = buf; *p; p++)
		ASSERT(*p >= 0x20 && *p < 0x7f && *p != ';' && *p != '#');
	ASSERT_EQ(payload_unescape(buf, &back, &len, &pos), 0);
	ASSERT_MEMEQ(back, len, in, sizeof(in));
}

TEST(escape_truncates_with_ellipsis)
{
	char buf[16];
	size_t n = payload_escape("\x1b[2Jhello world, long", 20, buf, sizeof(buf));

	ASSERT(n < sizeof(buf));
	ASSERT_EQ(strlen(buf), n);
	ASSERT(strncmp(buf, "\\x1b[2J", 7) == 0);
	ASSERT(strcmp(buf + n - 3, "...") == 0);
}

TEST(load_file_binary_safe)
{
	char path[] = "/tmp/poold-test-XXXXXX";
	static const char data[] = "\0\1\2binary\0\xff";
	_cleanup_free_ char *out = NULL;
	size_t len = 0;
	int fd = mkstemp(path);

	ASSERT(fd >= 0);
	ASSERT_EQ(write(fd, data, sizeof(data)), sizeof(data));
	close(fd);
	ASSERT_EQ(payload_load_file(path, &out, &len), 0);
	unlink(path);
	ASSERT_MEMEQ(out, len, data, sizeof(data));
}

TEST(load_file_errors)
{
	char path[] = "/tmp/poold-test-XXXXXX";
	char *out = NULL;
	size_t len;
	int fd;

	ASSERT_EQ(payload_load_file("/nonexistent/payload", &out, &len), -ENOENT);
	ASSERT_EQ(payload_load_file("/tmp", &out, &len), -EISDIR);
	ASSERT_EQ(payload_load_file("/dev/null", &out, &len), -EBADFD);
	fd = mkstemp(path);
	ASSERT(fd >= 0);
	ASSERT_EQ(ftruncate(fd, (off_t)PAYLOAD_MAX + 1), 0);
	close(fd);
	ASSERT_EQ(payload_load_file(path, &out, &len), -EFBIG);
	unlink(path);
	ASSERT(out == NULL);
}

TEST(escape_cuts_cleanly_at_every_size)
{
	static const char in[] = "plain text;\x01 more\\text#\xff end of it";
	char full[256], out[256];
	size_t flen = payload_escape(in, sizeof(in) - 1, full, sizeof(full));

	ASSERT(strstr(full, "...") == NULL);
	for (size_t size = 1; size <= flen + 1; size++) {
		size_t n;

		memset(out, 'Z', sizeof(out));
		n = payload_escape(in, sizeof(in) - 1, out, size);
		ASSERT(n < size);
		ASSERT_EQ(strlen(out), n);
		ASSERT_EQ(out[size], 'Z'); /* nothing written past size */
		if (size == flen + 1) {
			ASSERT_STREQ(out, full);
		} else if (n >= 3) {
			/* A prefix of the full rendering, then "...". */
			ASSERT(strcmp(out + n - 3, "...") == 0);
			ASSERT(strncmp(out, full, n - 3) == 0);
		}
	}
}

/* "at most 16 MiB": 16 MiB itself loads. */
TEST(load_file_of_exactly_payload_max)
{
	char path[] = "/tmp/poold-test-XXXXXX";
	_cleanup_free_ char *out = NULL;
	size_t len = 0;
	int fd = mkstemp(path);

	ASSERT(fd >= 0);
	ASSERT_EQ(ftruncate(fd, (off_t)PAYLOAD_MAX), 0);
	close(fd);
	ASSERT_EQ(payload_load_file(path, &out, &len), 0);
	unlink(path);
	ASSERT_EQ(len, PAYLOAD_MAX);
}

TEST(escape_name_escapes_only_controls_and_backslash)
{
	char buf[64];

	ASSERT_STREQ(payload_escape_name("a\nSTOPPING=1;#\\x\x1b\x7f\xc3\xa9.conf", buf, sizeof(buf)),
		     "a\\nSTOPPING=1;#\\\\x\\x1b\\x7f\xc3\xa9.conf");
	ASSERT_STREQ(payload_escape_name("/etc/poold/poold.conf", buf, sizeof(buf)), "/etc/poold/poold.conf");
	ASSERT_STREQ(payload_escape_name("0123456789\n0123456789", buf, 16), "0123456789\\n...");
}

TEST(blob_is_freed_with_its_last_reference)
{
	char *data = strdup("bytes");
	struct blob *b = blob_new(data, 5), *ref;

	ASSERT(b != NULL);
	ASSERT(b->data == data && b->len == 5);
	ref = blob_ref(b);
	ASSERT(ref == b);
	ASSERT(blob_unref(b) == NULL);
	ASSERT_MEMEQ(ref->data, ref->len, "bytes", 5);
	ASSERT(blob_unref(ref) == NULL); /* freed here: ASan reports a leak otherwise */
	ASSERT(blob_unref(NULL) == NULL);
	ASSERT(blob_ref(NULL) == NULL);
}
