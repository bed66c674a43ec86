/* modules: util */
#include "tests.h"
#include "util.h"

#include <malloc.h>

TEST(parse_uint_accepts_range)
{
	uint64_t v = 0;

	ASSERT_EQ(parse_uint("0", 0, 10, &v), 0);
	ASSERT_EQ(v, 0);
	ASSERT_EQ(parse_uint("1024", 1, 1024, &v), 0);
	ASSERT_EQ(v, 1024);
	ASSERT_EQ(parse_uint("18446744073709551615", 0, UINT64_MAX, &v), 0);
	ASSERT(v == UINT64_MAX);
}

TEST(parse_uint_rejects_garbage)
{
	uint64_t v = 7;

	ASSERT_EQ(parse_uint("", 0, 10, &v), -EINVAL);
	ASSERT_EQ(parse_uint("-1", 0, 10, &v), -EINVAL);
	ASSERT_EQ(parse_uint("+1", 0, 10, &v), -EINVAL);
	ASSERT_EQ(parse_uint(" 1", 0, 10, &v), -EINVAL);
	ASSERT_EQ(parse_uint("1 ", 0, 10, &v), -EINVAL);
	ASSERT_EQ(parse_uint("0x10", 0, 100, &v), -EINVAL);
	ASSERT_EQ(parse_uint("11", 0, 10, &v), -ERANGE);
	ASSERT_EQ(parse_uint("0", 1, 10, &v), -ERANGE);
	ASSERT_EQ(parse_uint("18446744073709551616", 0, UINT64_MAX, &v), -ERANGE);
	ASSERT_EQ(parse_uint("18446744073709551616x", 0, UINT64_MAX, &v), -EINVAL);
	ASSERT_EQ(v, 7);
}

TEST(parse_duration_units)
{
	uint64_t v;

	ASSERT_EQ(parse_duration("250ms", &v), 0);
	ASSERT_EQ(v, 250000);
	ASSERT_EQ(parse_duration("10s", &v), 0);
	ASSERT_EQ(v, 10000000);
	ASSERT_EQ(parse_duration("2m", &v), 0);
	ASSERT_EQ(v, 120000000);
	ASSERT_EQ(parse_duration("1h", &v), 0);
	ASSERT_EQ(v, 3600000000LL);
	ASSERT_EQ(parse_duration("7", &v), 0);
	ASSERT_EQ(v, 7000000);
}

TEST(parse_duration_rejects)
{
	uint64_t v;

	ASSERT_EQ(parse_duration("", &v), -EINVAL);
	ASSERT_EQ(parse_duration("s", &v), -EINVAL);
	ASSERT_EQ(parse_duration("10 s", &v), -EINVAL);
	ASSERT_EQ(parse_duration("1.5s", &v), -EINVAL);
	ASSERT_EQ(parse_duration("10us", &v), -EINVAL);
	ASSERT_EQ(parse_duration("-1s", &v), -EINVAL);
	ASSERT_EQ(parse_duration("99999999999999999h", &v), -ERANGE);
	ASSERT_EQ(parse_duration("99999999999999999999s", &v), -ERANGE);
	ASSERT_EQ(parse_duration("99999999999999999999", &v), -ERANGE);
	/* Too many digits, but not a duration either. */
	ASSERT_EQ(parse_duration("99999999999999999999x", &v), -EINVAL);
}

TEST(parse_bool_words)
{
	bool b = false;

	ASSERT_EQ(parse_bool("yes", &b), 0);
	ASSERT(b);
	ASSERT_EQ(parse_bool("off", &b), 0);
	ASSERT(!b);
	ASSERT_EQ(parse_bool("Yes", &b), -EINVAL);
	ASSERT_EQ(parse_bool("", &b), -EINVAL);
}

TEST(format_duration_round_trips)
{
	static const char *const in[] = { "10ms", "1s", "90s", "2m", "1h", "0s" };
	char buf[32];

	for (size_t i = 0; i < ARRAY_SIZE(in); i++) {
		uint64_t v, w;

		ASSERT_EQ(parse_duration(in[i], &v), 0);
		format_duration(v, buf, sizeof(buf));
		ASSERT_EQ(parse_duration(buf, &w), 0);
		ASSERT_EQ(v, w);
	}
}

static char tmpdir[64];

__attribute__((destructor)) static void remove_tmpdir(void)
{
	char path[128];

	if (!tmpdir[0])
		return;
	snprintf(path, sizeof(path), "%s/f", tmpdir);
	unlink(path);
	rmdir(tmpdir);
}

/* Writes len bytes of 'x' to a fresh file; returns its path. */
static const char *file_of(size_t len)
{
	static char path[128];
	FILE *f;

	if (!tmpdir[0]) {
		strcpy(tmpdir, "/tmp/poold-util-XXXXXX");
		if (!mkdtemp(tmpdir))
			abort();
	}
	snprintf(path, sizeof(path), "%s/f", tmpdir);
	f = fopen(path, "w");
	if (!f)
		abort();
	for (size_t i = 0; i < len; i++)
		fputc('x', f);
	if (fclose(f) != 0)
		abort();
	return path;
}

TEST(read_file_takes_exactly_max_bytes)
{
	char *buf = NULL;
	size_t len = 0;

	ASSERT_EQ(read_file(file_of(64), 64, &buf, &len), 0);
	ASSERT_EQ(len, 64);
	ASSERT_EQ(buf[64], '\0');
	free(buf);
	buf = NULL;
	ASSERT_EQ(read_file(file_of(65), 64, &buf, &len), -EFBIG);
	ASSERT(buf == NULL);
	ASSERT_EQ(read_file(file_of(0), 64, &buf, &len), 0);
	ASSERT_EQ(len, 0);
	ASSERT_EQ(buf[0], '\0');
	free(buf);
	buf = NULL;
	ASSERT_EQ(read_file(file_of(1), 0, &buf, &len), -EFBIG);
}

/* A file that did not grow is read into one buffer of its size plus the NUL,
 * not one grown to twice that while looking for EOF. */
TEST(read_file_allocates_the_file_size)
{
	char *buf = NULL;
	size_t len = 0;

	ASSERT_EQ(read_file(file_of(4000), 1 << 20, &buf, &len), 0);
	ASSERT_EQ(len, 4000);
	ASSERT(malloc_usable_size(buf) < 4100);
	free(buf);
}

/* procfs files say st_size 0 but have bytes: the read goes past the size
 * fstat() gave, and still stops at max. */
TEST(read_file_past_the_stat_size)
{
	char *buf = NULL;
	size_t len = 0;

	ASSERT_EQ(read_file("/proc/self/status", 1 << 20, &buf, &len), 0);
	ASSERT(len > 16);
	ASSERT_EQ(strlen(buf), len);
	ASSERT(strncmp(buf, "Name:", 5) == 0);
	free(buf);
	buf = NULL;
	ASSERT_EQ(read_file("/proc/self/status", 16, &buf, &len), -EFBIG);
	ASSERT(buf == NULL);
}

TEST(read_file_refuses_non_files)
{
	char *buf = NULL;
	size_t len;

	ASSERT_EQ(read_file("/tmp", 64, &buf, &len), -EISDIR);
	ASSERT_EQ(read_file("/dev/null", 64, &buf, &len), -EBADFD);
	ASSERT_EQ(read_file("/nonexistent/x", 64, &buf, &len), -ENOENT);
	ASSERT(buf == NULL);
}
