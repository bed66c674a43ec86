/* payload.h - the bytes poold sends: C-escape decoding for [payload] text,
 * binary-safe file loading for [payload] file, escaping for display, and the
 * immutable, reference-counted blob that configs with the same payload share. */
#ifndef POOLD_PAYLOAD_H
#define POOLD_PAYLOAD_H

#include <stdatomic.h>
#include <stddef.h>

#define PAYLOAD_MAX ((size_t)16 << 20) /* bytes, for text and file alike */

struct blob {
	atomic_uint refs;
	size_t len; /* bytes */
	char *data; /* NUL-terminated past len; never changes */
};

int payload_unescape(const char *s, char **ret, size_t *ret_len, size_t *ret_errpos);
int payload_load_file(const char *path, char **ret, size_t *ret_len);
size_t payload_escape(const void *data, size_t len, char *buf, size_t size);
const char *payload_escape_name(const char *name, char *buf, size_t size);
struct blob *blob_new(char *data, size_t len);
struct blob *blob_ref(struct blob *b);
struct blob *blob_unref(struct blob *b);

#endif
