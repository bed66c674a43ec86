/* access.h - who may connect and how often: client addresses, CIDR prefixes,
 * allow/deny lists, token buckets and the per-source table. Pure: no I/O, no
 * logging, no clock (times are monotonic microseconds passed in). Not
 * thread-safe: the caller (the reactor) holds its lock. Errors are -errno;
 * ret_ parameters are set only on success (prefix_parse's -EDOM aside). */
#ifndef POOLD_ACCESS_H
#define POOLD_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* A client: AF_INET (bytes[0..3]), AF_INET6 (bytes[0..15]), network order;
 * AF_UNIX: the peer's uid in bytes[0..3], host order. Unused bytes are 0. */
struct addr {
	uint8_t family;
	uint8_t bytes[16];
};

/* AF_INET or AF_INET6; an IPv4-mapped ::ffff:a.b.c.d becomes AF_INET. -EINVAL
 * when len is too short, -EAFNOSUPPORT for any other family (for AF_UNIX the
 * caller reads the peer's uid and calls addr_unix()). */
int addr_from_sockaddr(const struct sockaddr *sa, socklen_t len, struct addr *ret);
void addr_unix(uint32_t uid, struct addr *ret);

/* An AF_INET (len <= 32) or AF_INET6 (len <= 128) prefix; bits past len are 0. */
struct prefix {
	struct addr addr;
	uint8_t len; /* bits */
};

#define PREFIX_STRLEN 50 /* "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128" and NUL */

/* "192.0.2.7", "10.0.0.0/8", "2001:db8::/32", "::1". An IPv4-mapped prefix of
 * length >= 96 ("::ffff:10.0.0.0/104") is the IPv4 prefix of length - 96.
 * -EINVAL for anything else: names, junk, "", "/8", a bad or 0-led length.
 * -EDOM when bits past the length are set ("10.0.0.1/8"): *ret is then set
 * to the masked prefix, so the caller can say "did you mean 10.0.0.0/8?". */
int prefix_parse(const char *s, struct prefix *ret);
/* The canonical form, which prefix_parse() reads back as the same prefix;
 * the length is left out when the prefix is one address. */
void prefix_format(const struct prefix *p, char *buf, size_t size);
/* IPv6 prefixes shorter than /96 never match IPv4 (or mapped) clients, and
 * no prefix matches an AF_UNIX client. */
bool prefix_match(const struct prefix *p, const struct addr *a);

/* One allow list and one deny list. The most specific (longest) matching
 * prefix decides, deny winning a tie; with no match, a client is allowed only
 * when the allow list is empty (so AF_UNIX clients are refused by any allow
 * list). acl_check() costs one binary search per distinct prefix length
 * present in the client's family (at most 33 or 129). */
struct acl;
enum { ACL_ALLOWED, ACL_DENIED, ACL_NOT_ALLOWED };

/* Creates *acl on the first add; duplicates are fine. -EINVAL if p is not
 * a prefix as prefix_parse() returns it. O(entries) (an insertion into a
 * sorted array), so 10,000 entries load in milliseconds. */
int acl_add(struct acl **acl, const struct prefix *p, bool allow);
int acl_check(const struct acl *acl, const struct addr *a); /* ACL_*; a NULL acl allows all */
size_t acl_size(const struct acl *acl);                     /* entries, both lists */
/* The allow or the deny list in the order added; returns the count. */
size_t acl_entries(const struct acl *acl, bool allow, const struct prefix **ret);
/* A deep copy: copies share nothing, so each can be freed from any thread. */
int acl_copy(const struct acl *acl, struct acl **ret);
struct acl *acl_free(struct acl *acl);

/* A token bucket of one second's worth (capacity = rate tokens), refilled
 * continuously. A zeroed bucket is full. From any state it is full again at
 * most 1 s after its last bucket_take(). */
struct bucket {
	uint64_t tokens;    /* micro-tokens (1,000,000 per connection) */
	uint64_t last_usec; /* the last bucket_take() */
	uint32_t rate;      /* per second, as of the last take; 0: never limited */
};

/* Takes one token if there is one. rate 0 means no limit: always true, and the
 * bucket is left alone. A changed rate keeps the tokens, up to the new
 * capacity. Times before last_usec count as last_usec. */
bool bucket_take(struct bucket *b, uint32_t rate, uint64_t now_usec);
bool bucket_full(const struct bucket *b, uint64_t now_usec);

/* Whom per-source counts and rates see: IPv6 clients by their first
 * ipv6_prefix bits (64: one entry per /64, so rotating addresses inside it
 * does not help), IPv4 clients by address, AF_UNIX clients by uid; group (the
 * listener's id) keeps each listener's counts apart. */
struct source_key {
	uint8_t family;
	uint8_t bytes[16];
	uint32_t group;
};
void source_key_make(const struct addr *a, uint32_t group, unsigned ipv6_prefix, struct source_key *ret);

struct source {
	unsigned count;     /* open connections; the caller's to change */
	struct bucket rate; /* per_source_rate; the caller's to take from */
	/* Private to access.c. */
	struct source_key key;
	struct source *next;                  /* hash chain */
	struct source *idle_prev, *idle_next; /* the idle FIFO (count 0, bucket not full) */
	uint64_t hash;
};

/* The per-source table: a hash table that grows (and shrinks), keyed by a
 * SipHash of the key under a random seed, so clients cannot choose colliding
 * addresses. Each sources_get() is followed by count++ or by
 * sources_release(), and each count-- by sources_release(): an entry whose
 * count is 0 is freed once its bucket is full, by that release or by a
 * sources_sweep() at most 1 s after it. Memory bound: live entries <= open
 * connections + sources released (last connection closed, or refused) in the
 * last second, as a bucket is full again at most 1 s after its last take. */
struct sources;
int sources_new(uint64_t seed, struct sources **ret);
/* Finds or creates (count 0, a full bucket); NULL when out of memory. */
struct source *sources_get(struct sources *t, const struct source_key *k);
/* May free s: the caller forgets it after a release with count 0. */
void sources_release(struct sources *t, struct source *s, uint64_t now_usec);
/* Frees idle entries, oldest release first, up to the first whose bucket is
 * not yet full: cost proportional to what it frees. Returns how many. */
size_t sources_sweep(struct sources *t, uint64_t now_usec);
size_t sources_size(const struct sources *t);
struct sources *sources_free(struct sources *t);

#endif
