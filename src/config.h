/* config.h - the INI configuration: parsed into a fresh, immutable,
 * reference-counted struct config that connections keep while they run. */
#ifndef POOLD_CONFIG_H
#define POOLD_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_DEFAULT_PATH "/etc/poold/poold.conf"

enum { OVERLOAD_CLOSE, OVERLOAD_BUSY };

struct blob;

struct bytes {
	char *data;
	size_t len;
};

struct config {
	atomic_uint refs;
	unsigned threads, queue_max;
	struct bytes payload;      /* the bytes of payload_blob */
	struct blob *payload_blob; /* shared with configs that loaded the same bytes */
	char *payload_file;        /* absolute; NULL when the payload came from text */
	unsigned max_messages, message_size;
	uint64_t idle_usec, session_usec, shutdown_usec; /* microseconds */
	uint64_t linger_usec, linger_idle_usec;          /* lingering_time, lingering_timeout */
	unsigned linger_bytes;                           /* lingering_bytes */
	unsigned max_connections, per_source;
	unsigned send_buffer; /* SO_SNDBUF per client, bytes; 0 = the kernel's autotuning */
	int overload;         /* OVERLOAD_* */
	struct bytes busy_message;
	char **listen; /* NULL-terminated */
	int log_level; /* syslog priority, LOG_ERR..LOG_DEBUG */
	bool log_messages;
	char **files; /* the files read, NULL-terminated */
};

int config_load(const char *path, struct config **ret, char *err, size_t errlen);
int config_reload(const char *path, const struct config *prev, struct config **ret, char *err, size_t errlen);
struct config *config_ref(struct config *c);
struct config *config_unref(struct config *c);
void config_print(const struct config *c, FILE *f);
int config_split_address(const char *s, char *host, size_t hostlen, char *port, size_t portlen);

#endif
