/* access.c - who may connect and how often: addresses and CIDR prefixes, the
 * allow/deny lists of a listener, token buckets and the per-source table.
 * Pure policy: no I/O, no logging, no clock; the caller passes the time, so
 * tests drive buckets and sweeps without sleeping, and the fuzz build links
 * this file with util.c alone. Not thread-safe: the reactor calls it under
 * reg_lock, and config builds its acls before any thread sees them.
 * The acl is indexed per family by prefix length, longest first, each length
 * a sorted array of masked addresses; the per-source table is a SipHash-keyed
 * chained hash table that doubles and halves, with a FIFO of idle entries. */
#include "access.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

/* Keeps the first len bits of a 16-byte address, zeroing the rest. */
static void mask_bytes(uint8_t b[16], unsigned len)
{
	for (unsigned i = 0; i < 16; i++) {
		unsigned bits = len >= 8 * (i + 1) ? 8 : len > 8 * i ? len - 8 * i : 0;

		b[i] &= (uint8_t)(0xff00 >> bits);
	}
}

static unsigned family_bits(uint8_t family)
{
	return family == AF_INET ? 32 : family == AF_INET6 ? 128 : 0;
}

static bool is_v4_mapped(const uint8_t b[16])
{
	static const uint8_t head[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	return memcmp(b, head, sizeof(head)) == 0;
}

int addr_from_sockaddr(const struct sockaddr *sa, socklen_t len, struct addr *ret)
{
	struct addr a;

	memset(&a, 0, sizeof(a));
	if (!sa || len < (socklen_t)sizeof(sa_family_t))
		return -EINVAL;
	if (sa->sa_family == AF_INET) {
		struct sockaddr_in sin;

		if (len < (socklen_t)sizeof(sin))
			return -EINVAL;
		memcpy(&sin, sa, sizeof(sin));
		a.family = AF_INET;
		memcpy(a.bytes, &sin.sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		struct sockaddr_in6 sin6;

		if (len < (socklen_t)sizeof(sin6))
			return -EINVAL;
		memcpy(&sin6, sa, sizeof(sin6));
		if (is_v4_mapped(sin6.sin6_addr.s6_addr)) {
			a.family = AF_INET;
			memcpy(a.bytes, &sin6.sin6_addr.s6_addr[12], 4);
		} else {
			a.family = AF_INET6;
			memcpy(a.bytes, &sin6.sin6_addr, 16);
		}
	} else {
		return -EAFNOSUPPORT;
	}
	*ret = a;
	return 0;
}

void addr_unix(uint32_t uid, struct addr *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->family = AF_UNIX;
	memcpy(ret->bytes, &uid, sizeof(uid));
}

/* The address part goes through inet_pton(), which takes exactly four
 * decimal parts for IPv4 (no "10.1", no octal, no leading zeros) and the
 * RFC 4291 forms for IPv6 (no zone index). */
int prefix_parse(const char *s, struct prefix *ret)
{
	char buf[INET6_ADDRSTRLEN];
	const char *slash;
	struct prefix p, masked;
	uint64_t len;
	size_t n;

	if (!s)
		return -EINVAL;
	memset(&p, 0, sizeof(p));
	slash = strchr(s, '/');
	n = slash ? (size_t)(slash - s) : strlen(s);
	if (n == 0 || n >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (inet_pton(AF_INET, buf, p.addr.bytes) == 1)
		p.addr.family = AF_INET;
	else if (inet_pton(AF_INET6, buf, p.addr.bytes) == 1)
		p.addr.family = AF_INET6;
	else
		return -EINVAL;

	len = family_bits(p.addr.family);
	if (slash) {
		/* One spelling per length: "/8", never "/08". */
		if (slash[1] == '0' && slash[2] != '\0')
			return -EINVAL;
		if (parse_uint(slash + 1, 0, len, &len) < 0)
			return -EINVAL;
	}
	p.len = (uint8_t)len;

	if (p.addr.family == AF_INET6 && p.len >= 96 && is_v4_mapped(p.addr.bytes)) {
		memmove(p.addr.bytes, p.addr.bytes + 12, 4);
		memset(p.addr.bytes + 4, 0, 12);
		p.addr.family = AF_INET;
		p.len -= 96;
	}

	masked = p;
	mask_bytes(masked.addr.bytes, masked.len);
	*ret = masked;
	return memcmp(&masked, &p, sizeof(p)) == 0 ? 0 : -EDOM;
}

void prefix_format(const struct prefix *p, char *buf, size_t size)
{
	char a[INET6_ADDRSTRLEN];
	unsigned bits = family_bits(p->addr.family);

	if (size == 0)
		return;
	if (bits == 0 || !inet_ntop(p->addr.family, p->addr.bytes, a, sizeof(a))) {
		snprintf(buf, size, "?");
		return;
	}
	if (p->len >= bits)
		snprintf(buf, size, "%s", a);
	else
		snprintf(buf, size, "%s/%u", a, (unsigned)p->len);
}

bool prefix_match(const struct prefix *p, const struct addr *a)
{
	unsigned full = p->len / 8, rest = p->len % 8;

	if (a->family != p->addr.family || p->len > family_bits(a->family))
		return false;
	if (memcmp(p->addr.bytes, a->bytes, full) != 0)
		return false;
	return rest == 0 || ((p->addr.bytes[full] ^ a->bytes[full]) & (uint8_t)(0xff00 >> rest)) == 0;
}

/* A prefix as prefix_parse() returns it: a known family, a length it has,
 * no bits set past the length. */
static bool prefix_valid(const struct prefix *p)
{
	struct prefix m = *p;
	unsigned bits = family_bits(p->addr.family);

	if (bits == 0 || p->len > bits)
		return false;
	mask_bytes(m.addr.bytes, m.len);
	return memcmp(&m, p, sizeof(m)) == 0;
}

/* An address as a 128-bit number, IPv4 in the top 32 bits, so one masking
 * and one comparison serve both families. */
struct key128 {
	uint64_t hi, lo;
};

static uint64_t load_be64(const uint8_t *b)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | b[i];
	return v;
}

static struct key128 key_of(const struct addr *a)
{
	return (struct key128){ load_be64(a->bytes), load_be64(a->bytes + 8) };
}

static struct key128 key_mask(struct key128 k, unsigned len)
{
	if (len == 0)
		k.hi = 0;
	else if (len < 64)
		k.hi &= ~UINT64_C(0) << (64 - len);
	if (len <= 64)
		k.lo = 0;
	else if (len < 128)
		k.lo &= ~UINT64_C(0) << (128 - len);
	return k;
}

static int key_cmp(struct key128 a, struct key128 b)
{
	if (a.hi != b.hi)
		return a.hi < b.hi ? -1 : 1;
	if (a.lo != b.lo)
		return a.lo < b.lo ? -1 : 1;
	return 0;
}

/* Every prefix of one family and one length. */
struct acl_level {
	unsigned len;
	size_t n, cap;
	struct key128 *keys; /* masked addresses, sorted, distinct */
	uint8_t *deny;       /* per key: also on the deny list (deny wins a tie) */
};

struct acl_family {
	struct acl_level *levels; /* longest first */
	size_t n;
};

struct acl {
	struct acl_family fam[2]; /* IPv4, IPv6 */
	struct prefix *list[2];   /* [allow]: as added, for --print-config */
	size_t nlist[2], caplist[2];
};

/* The first position whose key is >= k; *found when it is k. */
static size_t level_find(const struct acl_level *l, struct key128 k, bool *found)
{
	size_t lo = 0, hi = l->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (key_cmp(l->keys[mid], k) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < l->n && key_cmp(l->keys[lo], k) == 0;
	return lo;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	size_t n = *cap ? *cap : 4;
	void *q;

	if (need <= *cap)
		return 0;
	while (n < need)
		n *= 2;
	q = reallocarray(*p, n, elem);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = n;
	return 0;
}

static int level_add(struct acl_level *l, struct key128 k, bool deny)
{
	bool found;
	size_t pos = level_find(l, k, &found), cap = l->cap;

	if (found) {
		l->deny[pos] |= deny;
		return 0;
	}
	/* Both arrays grow to the same capacity; l->cap moves only when both did. */
	if (grow((void **)&l->keys, &cap, l->n + 1, sizeof(*l->keys)) < 0)
		return -ENOMEM;
	cap = l->cap;
	if (grow((void **)&l->deny, &cap, l->n + 1, sizeof(*l->deny)) < 0)
		return -ENOMEM;
	l->cap = cap;
	memmove(l->keys + pos + 1, l->keys + pos, (l->n - pos) * sizeof(*l->keys));
	memmove(l->deny + pos + 1, l->deny + pos, (l->n - pos) * sizeof(*l->deny));
	l->keys[pos] = k;
	l->deny[pos] = deny;
	l->n++;
	return 0;
}

static void level_done(struct acl_level *l)
{
	free(l->keys);
	free(l->deny);
}

static int family_add(struct acl_family *f, unsigned len, struct key128 k, bool deny)
{
	struct acl_level l = { .len = len }, *levels;
	size_t i;
	int r;

	for (i = 0; i < f->n && f->levels[i].len >= len; i++)
		if (f->levels[i].len == len)
			return level_add(&f->levels[i], k, deny);
	/* A new length, at position i; this happens at most 33 + 129 times. */
	r = level_add(&l, k, deny);
	if (r < 0)
		return r;
	levels = reallocarray(f->levels, f->n + 1, sizeof(*f->levels));
	if (!levels) {
		level_done(&l);
		return -ENOMEM;
	}
	f->levels = levels;
	memmove(f->levels + i + 1, f->levels + i, (f->n - i) * sizeof(*f->levels));
	f->levels[i] = l;
	f->n++;
	return 0;
}

int acl_add(struct acl **acl, const struct prefix *p, bool allow)
{
	struct acl *a = *acl;
	int r;

	if (!prefix_valid(p))
		return -EINVAL;
	if (!a) {
		a = calloc(1, sizeof(*a));
		if (!a)
			return -ENOMEM;
	}
	r = grow((void **)&a->list[allow], &a->caplist[allow], a->nlist[allow] + 1, sizeof(struct prefix));
	if (r >= 0)
		r = family_add(&a->fam[p->addr.family == AF_INET6], p->len, key_of(&p->addr), !allow);
	if (r < 0) {
		if (!*acl)
			acl_free(a);
		return r;
	}
	a->list[allow][a->nlist[allow]++] = *p;
	*acl = a;
	return 0;
}

int acl_check(const struct acl *acl, const struct addr *a)
{
	if (!acl)
		return ACL_ALLOWED;
	if (a->family == AF_INET || a->family == AF_INET6) {
		const struct acl_family *f = &acl->fam[a->family == AF_INET6];
		struct key128 k = key_of(a);

		for (size_t i = 0; i < f->n; i++) {
			const struct acl_level *l = &f->levels[i];
			bool found;
			size_t pos = level_find(l, key_mask(k, l->len), &found);

			if (found)
				return l->deny[pos] ? ACL_DENIED : ACL_ALLOWED;
		}
	}
	return acl->nlist[true] > 0 ? ACL_NOT_ALLOWED : ACL_ALLOWED;
}

size_t acl_size(const struct acl *acl)
{
	return acl ? acl->nlist[false] + acl->nlist[true] : 0;
}

size_t acl_entries(const struct acl *acl, bool allow, const struct prefix **ret)
{
	*ret = acl ? acl->list[allow] : NULL;
	return acl ? acl->nlist[allow] : 0;
}

static void *memdup_array(const void *p, size_t n, size_t elem)
{
	void *q;

	if (n == 0)
		return NULL;
	q = reallocarray(NULL, n, elem);
	if (q)
		memcpy(q, p, n * elem);
	return q;
}

int acl_copy(const struct acl *acl, struct acl **ret)
{
	struct acl *c;

	if (!acl) {
		*ret = NULL;
		return 0;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	/* Two of each: list[deny, allow] and fam[IPv4, IPv6]. */
	for (int i = 0; i < 2; i++) {
		const struct acl_family *f = &acl->fam[i];

		c->list[i] = memdup_array(acl->list[i], acl->nlist[i], sizeof(struct prefix));
		if (acl->nlist[i] && !c->list[i])
			goto fail;
		c->nlist[i] = c->caplist[i] = acl->nlist[i];
		if (f->n == 0)
			continue;
		c->fam[i].levels = calloc(f->n, sizeof(*f->levels));
		if (!c->fam[i].levels)
			goto fail;
		c->fam[i].n = f->n;
		for (size_t j = 0; j < f->n; j++) {
			const struct acl_level *l = &f->levels[j];
			struct acl_level *m = &c->fam[i].levels[j];

			m->len = l->len;
			m->keys = memdup_array(l->keys, l->n, sizeof(*l->keys));
			m->deny = memdup_array(l->deny, l->n, sizeof(*l->deny));
			if (!m->keys || !m->deny)
				goto fail;
			m->n = m->cap = l->n;
		}
	}
	*ret = c;
	return 0;
fail:
	acl_free(c);
	return -ENOMEM;
}

struct acl *acl_free(struct acl *acl)
{
	if (!acl)
		return NULL;
	for (int i = 0; i < 2; i++) {
		for (size_t j = 0; j < acl->fam[i].n; j++)
			level_done(&acl->fam[i].levels[j]);
		free(acl->fam[i].levels);
		free(acl->list[i]);
	}
	free(acl);
	return NULL;
}

#define MICRO UINT64_C(1000000) /* micro-tokens per token */

/* The micro-tokens b would hold at now at this rate: a second refills it
 * whole, so the product below stays under 2^52. */
static uint64_t bucket_level(const struct bucket *b, uint32_t rate, uint64_t now_usec)
{
	uint64_t cap = rate * MICRO, t = b->tokens < cap ? b->tokens : cap;
	uint64_t dt = now_usec > b->last_usec ? now_usec - b->last_usec : 0;

	if (b->rate == 0 || dt >= USEC_PER_SEC)
		return cap;
	t += dt * rate;
	return t < cap ? t : cap;
}

bool bucket_take(struct bucket *b, uint32_t rate, uint64_t now_usec)
{
	uint64_t t;

	if (rate == 0)
		return true;
	t = bucket_level(b, rate, now_usec);
	if (b->rate == 0 || now_usec > b->last_usec)
		b->last_usec = now_usec;
	b->rate = rate;
	if (t < MICRO) {
		b->tokens = t;
		return false;
	}
	b->tokens = t - MICRO;
	return true;
}

bool bucket_full(const struct bucket *b, uint64_t now_usec)
{
	return b->rate == 0 || bucket_level(b, b->rate, now_usec) >= b->rate * MICRO;
}

void source_key_make(const struct addr *a, uint32_t group, unsigned ipv6_prefix, struct source_key *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->family = a->family;
	ret->group = group;
	if (a->family == AF_INET6) {
		memcpy(ret->bytes, a->bytes, 16);
		mask_bytes(ret->bytes, ipv6_prefix < 128 ? ipv6_prefix : 128);
	} else if (a->family == AF_INET || a->family == AF_UNIX) {
		memcpy(ret->bytes, a->bytes, 4);
	}
}

#define SOURCES_MIN 64 /* buckets */

struct sources {
	struct source **buckets;              /* nbuckets chains */
	size_t nbuckets;                      /* a power of two */
	size_t size;                          /* entries */
	struct source *idle_head, *idle_tail; /* count 0, bucket not yet full; oldest first */
	uint64_t k0, k1;                      /* the SipHash key */
};

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                                       \
	do {                                                                                                           \
		v0 += v1;                                                                                              \
		v1 = ROTL(v1, 13);                                                                                     \
		v1 ^= v0;                                                                                              \
		v0 = ROTL(v0, 32);                                                                                     \
		v2 += v3;                                                                                              \
		v3 = ROTL(v3, 16);                                                                                     \
		v3 ^= v2;                                                                                              \
		v0 += v3;                                                                                              \
		v3 = ROTL(v3, 21);                                                                                     \
		v3 ^= v0;                                                                                              \
		v2 += v1;                                                                                              \
		v1 = ROTL(v1, 17);                                                                                     \
		v1 ^= v2;                                                                                              \
		v2 = ROTL(v2, 32);                                                                                     \
	} while (0)

/* SipHash-1-3 (as Python and Rust hash tables use it) of n 64-bit words. */
static uint64_t siphash13(uint64_t k0, uint64_t k1, const uint64_t *w, size_t n)
{
	uint64_t v0 = k0 ^ UINT64_C(0x736f6d6570736575), v1 = k1 ^ UINT64_C(0x646f72616e646f6d);
	uint64_t v2 = k0 ^ UINT64_C(0x6c7967656e657261), v3 = k1 ^ UINT64_C(0x7465646279746573);
	uint64_t b = (uint64_t)(n * 8) << 56;

	for (size_t i = 0; i < n; i++) {
		v3 ^= w[i];
		SIPROUND;
		v0 ^= w[i];
	}
	v3 ^= b;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

static uint64_t key_hash(const struct sources *t, const struct source_key *k)
{
	uint64_t w[3];

	memcpy(&w[0], k->bytes, 8);
	memcpy(&w[1], k->bytes + 8, 8);
	w[2] = (uint64_t)k->group << 8 | k->family;
	return siphash13(t->k0, t->k1, w, 3);
}

static bool key_eq(const struct source_key *a, const struct source_key *b)
{
	return a->family == b->family && a->group == b->group && memcmp(a->bytes, b->bytes, 16) == 0;
}

int sources_new(uint64_t seed, struct sources **ret)
{
	struct sources *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->buckets = calloc(SOURCES_MIN, sizeof(*t->buckets));
	if (!t->buckets) {
		free(t);
		return -ENOMEM;
	}
	t->nbuckets = SOURCES_MIN;
	/* The second half of the key from the first (splitmix64's finalizer). */
	t->k0 = seed;
	t->k1 = seed + UINT64_C(0x9e3779b97f4a7c15);
	t->k1 = (t->k1 ^ (t->k1 >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	t->k1 = (t->k1 ^ (t->k1 >> 27)) * UINT64_C(0x94d049bb133111eb);
	t->k1 ^= t->k1 >> 31;
	*ret = t;
	return 0;
}

/* Rehashes into n chains. On ENOMEM the table keeps its size: chains get
 * longer, lookups stay correct. One rehash of 100,000 entries takes about a
 * millisecond, amortized over the inserts or frees that led to it. */
static void sources_resize(struct sources *t, size_t n)
{
	struct source **b = calloc(n, sizeof(*b));

	if (!b)
		return;
	for (size_t i = 0; i < t->nbuckets; i++) {
		struct source *s = t->buckets[i], *next;

		for (; s; s = next) {
			next = s->next;
			s->next = b[s->hash & (n - 1)];
			b[s->hash & (n - 1)] = s;
		}
	}
	free(t->buckets);
	t->buckets = b;
	t->nbuckets = n;
}

/* Doubles above one entry per chain; below one per 8, halves down to about
 * one per 2 to 4, so a size hovering at a threshold does not rehash each time. */
static void sources_shrink(struct sources *t)
{
	size_t n = t->nbuckets;

	if (n <= SOURCES_MIN || t->size >= n / 8)
		return;
	while (n > SOURCES_MIN && t->size < n / 4)
		n /= 2;
	sources_resize(t, n);
}

static bool is_idle(const struct sources *t, const struct source *s)
{
	return s->idle_prev || t->idle_head == s;
}

static void idle_unlink(struct sources *t, struct source *s)
{
	if (!is_idle(t, s))
		return;
	if (s->idle_prev)
		s->idle_prev->idle_next = s->idle_next;
	else
		t->idle_head = s->idle_next;
	if (s->idle_next)
		s->idle_next->idle_prev = s->idle_prev;
	else
		t->idle_tail = s->idle_prev;
	s->idle_prev = s->idle_next = NULL;
}

static void idle_append(struct sources *t, struct source *s)
{
	s->idle_prev = t->idle_tail;
	s->idle_next = NULL;
	if (t->idle_tail)
		t->idle_tail->idle_next = s;
	else
		t->idle_head = s;
	t->idle_tail = s;
}

/* Unlinks s from its chain and frees it; s is on no idle list. */
static void source_remove(struct sources *t, struct source *s)
{
	struct source **p = &t->buckets[s->hash & (t->nbuckets - 1)];

	while (*p != s)
		p = &(*p)->next;
	*p = s->next;
	free(s);
	t->size--;
}

struct source *sources_get(struct sources *t, const struct source_key *k)
{
	uint64_t h = key_hash(t, k);
	struct source *s;

	for (s = t->buckets[h & (t->nbuckets - 1)]; s; s = s->next)
		if (s->hash == h && key_eq(&s->key, k)) {
			idle_unlink(t, s);
			return s;
		}
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->key = *k;
	s->hash = h;
	s->next = t->buckets[h & (t->nbuckets - 1)];
	t->buckets[h & (t->nbuckets - 1)] = s;
	t->size++;
	if (t->size > t->nbuckets)
		sources_resize(t, t->nbuckets * 2);
	return s;
}

void sources_release(struct sources *t, struct source *s, uint64_t now_usec)
{
	idle_unlink(t, s);
	if (s->count > 0)
		return;
	if (!bucket_full(&s->rate, now_usec)) {
		idle_append(t, s);
		return;
	}
	source_remove(t, s);
	sources_shrink(t);
}

/* The idle FIFO is in release order, not in order of when each bucket fills
 * (that depends on the rate and on the tokens left), so the sweep stops at the
 * first entry not yet full and may leave full ones behind it. That is still
 * bounded: the head is full at most 1 s after its release (its last take came
 * before it), so everything left was released less than 1 s ago. */
size_t sources_sweep(struct sources *t, uint64_t now_usec)
{
	size_t n = 0;

	while (t->idle_head && bucket_full(&t->idle_head->rate, now_usec)) {
		struct source *s = t->idle_head;

		idle_unlink(t, s);
		source_remove(t, s);
		n++;
	}
	if (n)
		sources_shrink(t);
	return n;
}

size_t sources_size(const struct sources *t)
{
	return t ? t->size : 0;
}

struct sources *sources_free(struct sources *t)
{
	if (!t)
		return NULL;
	for (size_t i = 0; i < t->nbuckets; i++) {
		struct source *s = t->buckets[i], *next;

		for (; s; s = next) {
			next = s->next;
			free(s);
		}
	}
	free(t->buckets);
	free(t);
	return NULL;
}
