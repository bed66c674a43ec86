/* tests.h - the unit test harness: TEST() registers a function, ASSERT_*()
 * print file:line and fail the test, main() runs them all and prints
 * "N passed, N failed". No dependencies beyond libc. */
#ifndef POOLD_TESTS_H
#define POOLD_TESTS_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct test {
	const char *name;
	void (*fn)(int *failed);
};

#define MAX_TESTS 256
static struct test tests_all[MAX_TESTS];
static int tests_n;

#define TEST(name)                                                                                                     \
	static void test_##name(int *failed_);                                                                         \
	__attribute__((constructor)) static void register_##name(void)                                                 \
	{                                                                                                              \
		tests_all[tests_n++] = (struct test){ #name, test_##name };                                            \
	}                                                                                                              \
	static void test_##name(int *failed_)

#define FAIL_AT(...)                                                                                                   \
	do {                                                                                                           \
		fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                                        \
		fprintf(stderr, __VA_ARGS__);                                                                          \
		fputc('\n', stderr);                                                                                   \
		*failed_ = 1;                                                                                          \
		return;                                                                                                \
	} while (0)

#define ASSERT(c)                                                                                                      \
	do {                                                                                                           \
		if (!(c))                                                                                              \
			FAIL_AT("assertion failed: %s", #c);                                                           \
	} while (0)
#define ASSERT_EQ(a, b)                                                                                                \
	do {                                                                                                           \
		long long a_ = (long long)(a), b_ = (long long)(b);                                                    \
		if (a_ != b_)                                                                                          \
			FAIL_AT("%s == %s: %lld != %lld", #a, #b, a_, b_);                                             \
	} while (0)
#define ASSERT_STREQ(a, b)                                                                                             \
	do {                                                                                                           \
		const char *a_ = (a), *b_ = (b);                                                                       \
		if (!a_ || !b_ || strcmp(a_, b_) != 0)                                                                 \
			FAIL_AT("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");         \
	} while (0)
#define ASSERT_MEMEQ(a, alen, b, blen)                                                                                 \
	do {                                                                                                           \
		if ((size_t)(alen) != (size_t)(blen) || memcmp((a), (b), (blen)) != 0)                                 \
			FAIL_AT("%s differs from %s (%zu vs %zu bytes)", #a, #b, (size_t)(alen), (size_t)(blen));      \
	} while (0)

int main(void)
{
	int passed = 0, failed = 0;

	for (int i = 0; i < tests_n; i++) {
		int f = 0;

		tests_all[i].fn(&f);
		printf("%s %s\n", f ? "FAIL" : "ok  ", tests_all[i].name);
		f ? failed++ : passed++;
	}
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}

#endif
