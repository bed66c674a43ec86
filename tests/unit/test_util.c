/* modules: util */
#include "tests.h"
#include "util.h"

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
