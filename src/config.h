/* config.h - the INI configuration: parsed into a fresh, immutable,
 * reference-counted struct config that connections keep while they run.
 * Per-connection settings form a struct service: the global sections fill
 * the default one (sockets with no section of their own), and each
 * [listener NAME] section starts from it and overrides what it sets. */
#ifndef POOLD_CONFIG_H
#define POOLD_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_DEFAULT_PATH "/etc/poold/poold.conf"
#define LISTENERS_MAX       64 /* [listener NAME] sections */
/* [pool] queue_max's default: the backlog poold.socket sets (Backlog=). */
#define CONFIG_QUEUE_MAX_DEFAULT 4096

enum { OVERLOAD_CLOSE, OVERLOAD_BUSY };

struct acl;
struct blob;
struct prefix;

struct bytes {
	char *data;
	size_t len;
};

struct prefixes {
	struct prefix *v;
	size_t n;
};

/* What one listener serves, and how. */
struct service {
	char *name;                /* the listener's name; NULL for the default */
	struct bytes payload;      /* the bytes of payload_blob */
	struct blob *payload_blob; /* shared with services that loaded the same bytes */
	char *payload_file;        /* absolute; NULL when the payload came from text */
	unsigned max_messages, message_size;
	uint64_t idle_usec, session_usec;       /* microseconds */
	uint64_t linger_usec, linger_idle_usec; /* lingering_time, lingering_timeout */
	unsigned linger_bytes;                  /* lingering_bytes */
	unsigned per_source;
	unsigned per_source_rate, rate; /* new connections per second; 0 = no limit */
	unsigned send_buffer;           /* SO_SNDBUF per client, bytes; 0 = the kernel's autotuning */
	int overload;                   /* OVERLOAD_* */
	struct bytes busy_message;
	bool log_messages;
	struct prefixes allow, deny;
	struct acl *acl; /* allow and deny, for matching; NULL: everyone */
	unsigned proxy;  /* PROXY protocol versions expected (PROXY_V1 | PROXY_V2); 0: none */
	struct prefixes proxy_from;
	struct acl *proxy_acl; /* proxy_from: who may send a PROXY header */
	uint64_t proxy_usec;   /* proxy_timeout */
	char **listen;         /* standalone addresses, NULL-terminated */
};

struct config {
	atomic_uint refs;
	unsigned threads, queue_max; /* queue_max: the listen backlog when poold binds */
	uint64_t shutdown_usec;
	unsigned max_connections, ipv6_prefix;
	int log_level;                            /* syslog priority, LOG_ERR..LOG_DEBUG */
	struct service def;                       /* the global sections */
	struct service *listeners[LISTENERS_MAX]; /* [listener NAME], in order of appearance */
	size_t nlisteners;
	char *metrics_address; /* [metrics] address, standalone only; NULL: no metrics endpoint */
	char **files;          /* the files read, NULL-terminated */
};

int config_load(const char *path, struct config **ret, char *err, size_t errlen);
int config_reload(const char *path, const struct config *prev, struct config **ret, char *err, size_t errlen);
struct config *config_ref(struct config *c);
struct config *config_unref(struct config *c);
const struct service *config_service(const struct config *c, const char *name);
void config_print(const struct config *c, FILE *f);
int config_split_address(const char *s, char *host, size_t hostlen, char *port, size_t portlen);

#endif
