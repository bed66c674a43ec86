/* fuzz_unescape.c - libFuzzer target for payload.c's escape decoder and
 * encoder. Properties: payload_unescape() never reads or writes out of
 * bounds and reports a bad escape inside the input; whatever it decodes,
 * payload_escape() renders into text that decodes back to the same bytes;
 * any bytes at all (a client's NULs, invalid UTF-8, terminal escapes) escape
 * to printable ASCII that decodes back; a short buffer is cut cleanly. */
#include "payload.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check_printable(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e || s[i] == ';' || s[i] == '#') {
			fprintf(stderr, "escape left byte 0x%02x at %zu\n", (unsigned char)s[i], i);
			abort();
		}
}

/* Escapes bytes with room to spare, checks, decodes back. */
static void round_trip(const char *data, size_t len)
{
	size_t size = len * 4 + 4, n, back_len = 0, errpos = 0;
	char *buf = malloc(size), *back = NULL;

	if (!buf)
		abort();
	n = payload_escape(data, len, buf, size);
	if (n != strlen(buf) || n >= size)
		abort();
	check_printable(buf, n);
	if (payload_unescape(buf, &back, &back_len, &errpos) != 0) {
		fprintf(stderr, "escaped text does not decode: %s (at %zu)\n", buf, errpos);
		abort();
	}
	if (back_len != len || memcmp(back, data, len) != 0 || back[back_len] != '\0') {
		fprintf(stderr, "round trip changed the bytes\n");
		abort();
	}
	free(back);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1), *out = NULL;
	size_t len = 0, errpos = (size_t)-1;
	int r;

	if (!s)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';

	/* The decoder sees the input as config text (up to its first NUL). */
	r = payload_unescape(s, &out, &len, &errpos);
	if (r == 0) {
		if (len > strlen(s) || out[len] != '\0')
			abort();
		round_trip(out, len);
		free(out);
	} else if (r == -EINVAL) {
		if (errpos >= strlen(s) || s[errpos] != '\\')
			abort();
	} else {
		abort();
	}

	/* The encoder sees the input as a client's raw bytes. */
	round_trip((const char *)data, size);

	/* A cut rendering, as in the log preview: always terminated, in bounds,
	 * and a prefix of the full rendering (or ends in "..."). */
	if (size > 0) {
		size_t bufsize = data[0] % 64, n;
		char *cut = malloc(bufsize ? bufsize : 1);

		if (!cut)
			abort();
		n = payload_escape(data + 1, size - 1, cut, bufsize);
		if (bufsize == 0 ? n != 0 : (n >= bufsize || n != strlen(cut)))
			abort();
		check_printable(cut, n);
		free(cut);
	}
	free(s);
	return 0;
}
