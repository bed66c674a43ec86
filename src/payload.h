/* payload.h - the bytes poold sends: C-escape decoding for [payload] text,
 * binary-safe file loading for [payload] file, and escaping for display. */
#ifndef POOLD_PAYLOAD_H
#define POOLD_PAYLOAD_H

#include <stddef.h>

#define PAYLOAD_MAX ((size_t)16 << 20) /* bytes, for text and file alike */

int payload_unescape(const char *s, char **ret, size_t *ret_len, size_t *ret_errpos);
int payload_load_file(const char *path, char **ret, size_t *ret_len);
size_t payload_escape(const void *data, size_t len, char *buf, size_t size);

#endif
