/* fuzz_duration.c - libFuzzer target for util.c's checked number parsers:
 * parse_duration(), parse_uint(), parse_bool() and format_duration().
 * Properties: no parser accepts trailing junk, signs or spaces; parse_uint
 * honours its range; a whole number of milliseconds survives
 * format_duration() -> parse_duration() unchanged (that is how
 * --print-config writes durations back). */
#include "util.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check_format(uint64_t usec)
{
	char buf[32];
	uint64_t back = 0;

	format_duration(usec, buf, sizeof(buf));
	if (usec % USEC_PER_MSEC != 0)
		return; /* sub-millisecond values are printed truncated by design */
	if (parse_duration(buf, &back) != 0 || back != usec) {
		fprintf(stderr, "format_duration(%" PRIu64 ") = \"%s\" reads back as %" PRIu64 "\n", usec, buf, back);
		abort();
	}
}

static bool all_digits_then(const char *s, const char *suffix)
{
	size_t n = strspn(s, "0123456789");

	return n > 0 && strcmp(s + n, suffix) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	uint64_t v = 0, lo = 0, hi = UINT64_MAX;
	bool b;
	int r;

	if (!s)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';

	r = parse_duration(s, &v);
	if (r == 0) {
		if (!all_digits_then(s, "") && !all_digits_then(s, "ms") && !all_digits_then(s, "s") &&
		    !all_digits_then(s, "m") && !all_digits_then(s, "h")) {
			fprintf(stderr, "parse_duration accepted \"%s\"\n", s);
			abort();
		}
		check_format(v);
	} else if (r != -EINVAL && r != -ERANGE) {
		abort();
	}

	/* Range from the first 16 bytes when there are enough. */
	if (size >= 16) {
		memcpy(&lo, data, 8);
		memcpy(&hi, data + 8, 8);
		lo %= 1000000007u;
	}
	r = parse_uint(s, lo, hi, &v);
	if (r == 0 && (v < lo || v > hi || !all_digits_then(s, "")))
		abort();
	r = parse_uint(s, 0, UINT64_MAX, &v);
	if (r == 0) {
		char buf[32];

		/* Leading zeros aside, the digits are the number. */
		snprintf(buf, sizeof(buf), "%" PRIu64, v);
		if (strcmp(s + strspn(s, "0"), buf) != 0 && !(v == 0 && s[strspn(s, "0")] == '\0'))
			abort();
	}
	if (parse_bool(s, &b) == 0 && strlen(s) > 5)
		abort();

	/* Any 64-bit value formats and (when whole milliseconds) reads back. */
	if (size >= 8) {
		uint64_t u;

		memcpy(&u, data + size - 8, 8);
		check_format(u);
		check_format(u - u % USEC_PER_MSEC);
	}
	free(s);
	return 0;
}
