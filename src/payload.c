/* payload.c - turns config text into payload bytes and back.
 * payload_unescape() decodes the escapes of [payload] text (\n \t \r \\ \0
 * \xNN); payload_escape() renders client or payload bytes printable, so a
 * client's NULs, invalid UTF-8 or terminal escapes are shown, never
 * interpreted. Pure functions, safe from any thread, except struct blob,
 * the loaded payload that configs share: immutable, its count atomic. */
#include "payload.h"
#include "util.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Decodes s into a new buffer (NUL-terminated past *ret_len for convenience).
 * On -EINVAL, *ret_errpos is the offset of the bad escape in s. */
int payload_unescape(const char *s, char **ret, size_t *ret_len, size_t *ret_errpos)
{
	size_t n = strlen(s), o = 0;
	_cleanup_free_ char *out = NULL;

	if (n > PAYLOAD_MAX)
		return -EFBIG;
	out = malloc(n + 1);
	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		int hi, lo;

		if (s[i] != '\\') {
			out[o++] = s[i];
			continue;
		}
		if (i + 1 >= n) {
			*ret_errpos = i;
			return -EINVAL;
		}
		switch (s[++i]) {
		case 'n':
			out[o++] = '\n';
			break;
		case 't':
			out[o++] = '\t';
			break;
		case 'r':
			out[o++] = '\r';
			break;
		case '0':
			out[o++] = '\0';
			break;
		case '\\':
			out[o++] = '\\';
			break;
		case 'x':
			hi = i + 1 < n ? hex_value(s[i + 1]) : -1;
			lo = i + 2 < n ? hex_value(s[i + 2]) : -1;
			if (hi < 0 || lo < 0) {
				*ret_errpos = i - 1;
				return -EINVAL;
			}
			out[o++] = (char)(hi << 4 | lo);
			i += 2;
			break;
		default:
			*ret_errpos = i - 1;
			return -EINVAL;
		}
	}
	out[o] = '\0';
	*ret = out;
	out = NULL;
	*ret_len = o;
	return 0;
}

int payload_load_file(const char *path, char **ret, size_t *ret_len)
{
	return read_file(path, PAYLOAD_MAX, ret, ret_len);
}

/* Wraps data (malloc'd, NUL-terminated past len) in a blob with one
 * reference; the blob owns data from then on. NULL when out of memory, and
 * data is still the caller's. */
struct blob *blob_new(char *data, size_t len)
{
	struct blob *b = malloc(sizeof(*b));

	if (!b)
		return NULL;
	atomic_init(&b->refs, 1);
	b->len = len;
	b->data = data;
	return b;
}

struct blob *blob_ref(struct blob *b)
{
	if (b)
		atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
	return b;
}

struct blob *blob_unref(struct blob *b)
{
	if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
		return NULL;
	free(b->data);
	free(b);
	return NULL;
}

/* Bytes payload_escape() copies as they are: printable ASCII except the
 * backslash, and ';' and '#', so printed config never reads back as a
 * comment. */
static bool plain(unsigned char c)
{
	return c >= 0x20 && c < 0x7f && c != '\\' && c != ';' && c != '#';
}

/* Bytes payload_escape_name() copies as they are: all but control
 * characters and the backslash. */
static bool plain_name(unsigned char c)
{
	return c >= 0x20 && c != 0x7f && c != '\\';
}

/* The escaping both renderings share; name picks plain_name() over plain(). */
static size_t escape(const void *data, size_t len, char *buf, size_t size, bool name)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = data;
	size_t o = 0;

	if (size == 0)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char tmp[4];
		size_t t = 0;
		unsigned char c = p[i];
		size_t run = 0;

		/* Fast path: copy a run of plain printable bytes at once. */
		while (i + run < len && (name ? plain_name(p[i + run]) : plain(p[i + run])))
			run++;
		if (run) {
			/* Keep room for the NUL, and for "..." unless the data
			 * ends with this run. */
			size_t keep = i + run == len ? 1 : 4;
			size_t room = size >= o + keep ? size - o - keep : 0;

			if (run > room) {
				room = size >= o + 4 ? size - o - 4 : 0;
				memcpy(buf + o, p + i, room);
				o += room;
				if (o + 4 <= size)
					memcpy(buf + o, "...", 3), o += 3;
				break;
			}
			memcpy(buf + o, p + i, run);
			o += run;
			i += run - 1;
			continue;
		}

		switch (c) {
		case '\n':
			tmp[t++] = '\\', tmp[t++] = 'n';
			break;
		case '\t':
			tmp[t++] = '\\', tmp[t++] = 't';
			break;
		case '\r':
			tmp[t++] = '\\', tmp[t++] = 'r';
			break;
		case '\\':
			tmp[t++] = '\\', tmp[t++] = '\\';
			break;
		default: /* plain bytes went with the run above */
			tmp[t++] = '\\', tmp[t++] = 'x';
			tmp[t++] = hex[c >> 4], tmp[t++] = hex[c & 15];
		}
		if (o + t + (i + 1 == len ? 1 : 4) > size) {
			if (o + 4 <= size)
				memcpy(buf + o, "...", 3), o += 3;
			break;
		}
		memcpy(buf + o, tmp, t);
		o += t;
	}
	buf[o] = '\0';
	return o;
}

/* Renders data printable into buf (always NUL-terminated when size > 0):
 * printable ASCII as is except backslash, the usual C escapes, \xNN for the
 * rest. Stops before overflowing, ending in "..." if it had to cut. Returns
 * the length written. The output reads back through payload_unescape(). */
size_t payload_escape(const void *data, size_t len, char *buf, size_t size)
{
	return escape(data, len, buf, size, false);
}

/* Renders a file name for a message or a comment, the way payload_escape()
 * does but escaping only control characters and the backslash: a newline in
 * a drop-in's name must not split a log line or an sd_notify STATUS=.
 * Returns buf, so it can be a printf argument. */
const char *payload_escape_name(const char *name, char *buf, size_t size)
{
	escape(name, strlen(name), buf, size, true);
	return buf;
}
