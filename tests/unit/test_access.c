/* modules: access util */
#include "access.h"
#include "tests.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>

/* A fixed xorshift64, so every run tests the same "random" lists. */
static uint64_t rng = UINT64_C(0x9e3779b97f4a7c15);
static uint64_t next_random(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* The address a full-length prefix names (family 0 when s is not one), and
 * the prefix s names (a family acl_add() refuses when s is not one), from a
 * ring of buffers so one expression can use several. */
static const struct addr *A(const char *s)
{
	static struct addr ring[8];
	static int i;
	struct prefix p;

	i = (i + 1) % 8;
	memset(&ring[i], 0, sizeof(ring[i]));
	if (prefix_parse(s, &p) == 0 && p.len == (p.addr.family == AF_INET ? 32 : 128))
		ring[i] = p.addr;
	return &ring[i];
}

static const struct prefix *P(const char *s)
{
	static struct prefix ring[8];
	static int i;

	i = (i + 1) % 8;
	if (prefix_parse(s, &ring[i]) != 0)
		ring[i].addr.family = 0xff;
	return &ring[i];
}

static const char *fmt(const struct prefix *p)
{
	static char buf[4][PREFIX_STRLEN];
	static int i;

	i = (i + 1) % 4;
	prefix_format(p, buf[i], sizeof(buf[i]));
	return buf[i];
}

static void flip_bit(struct addr *a, unsigned bit)
{
	a->bytes[bit / 8] ^= (uint8_t)(0x80 >> (bit % 8));
}

TEST(prefix_parse_accepts_and_formats_canonically)
{
	static const struct {
		const char *in;
		int family;
		unsigned len;
		const char *out;
	} cases[] = {
		{ "192.0.2.7", AF_INET, 32, "192.0.2.7" },
		{ "192.0.2.7/32", AF_INET, 32, "192.0.2.7" },
		{ "10.0.0.0/8", AF_INET, 8, "10.0.0.0/8" },
		{ "0.0.0.0/0", AF_INET, 0, "0.0.0.0/0" },
		{ "10.8.0.0/13", AF_INET, 13, "10.8.0.0/13" },
		{ "128.0.0.0/1", AF_INET, 1, "128.0.0.0/1" },
		{ "2001:db8::/32", AF_INET6, 32, "2001:db8::/32" },
		{ "2001:DB8:0:0:0:0:0:0/32", AF_INET6, 32, "2001:db8::/32" },
		{ "2001:db8:0:0:e000::/67", AF_INET6, 67, "2001:db8:0:0:e000::/67" },
		{ "::1", AF_INET6, 128, "::1" },
		{ "::/0", AF_INET6, 0, "::/0" },
		{ "fe80::/10", AF_INET6, 10, "fe80::/10" },
		{ "::ffff:10.0.0.0/104", AF_INET, 8, "10.0.0.0/8" },
		{ "::ffff:192.0.2.7", AF_INET, 32, "192.0.2.7" },
		{ "::ffff:0:0/96", AF_INET, 0, "0.0.0.0/0" },
		{ "::fffe:0:0/95", AF_INET6, 95, "::fffe:0:0/95" },
		{ "::1.2.3.4", AF_INET6, 128, "::1.2.3.4" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct prefix p, back;

		if (prefix_parse(cases[i].in, &p) != 0)
			FAIL_AT("prefix_parse(\"%s\") failed", cases[i].in);
		ASSERT_EQ(p.addr.family, cases[i].family);
		ASSERT_EQ(p.len, cases[i].len);
		ASSERT_STREQ(fmt(&p), cases[i].out);
		ASSERT_EQ(prefix_parse(fmt(&p), &back), 0);
		ASSERT_MEMEQ(&back, sizeof(back), &p, sizeof(p));
	}
}

TEST(prefix_parse_rejects)
{
	static const char *const bad[] = {
		/* Empty parts, bad lengths, one spelling per length. */
		"",
		"/8",
		"/",
		"10.0.0.0/",
		"::1/",
		"10.0.0.0/33",
		"2001:db8::/129",
		"10.0.0.0/08",
		"10.0.0.0/00",
		"10.0.0.0/-1",
		"10.0.0.0/+8",
		"10.0.0.0/0x8",
		"10.0.0.0/8/8",
		"10.0.0.0/99999999999999999999",
		/* Spaces, names, brackets, zones. */
		"10.0.0.0/8 ",
		" 10.0.0.0",
		"10.0.0.0 /8",
		"10.0.0.0/ 8",
		"example.com",
		"localhost",
		"[::1]",
		"fe80::1%eth0",
		/* Not an address. */
		"10.0.0",
		"10.1",
		"10.0.0.0.0",
		"256.0.0.0",
		"010.0.0.1",
		"1::2::3",
		"0000:0000:0000:0000:0000:0000:0000:0000:0000/0",
		"ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255x",
	};
	struct prefix p = { { 0 }, 77 };

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		if (prefix_parse(bad[i], &p) != -EINVAL)
			FAIL_AT("prefix_parse(\"%s\") accepted", bad[i]);
	ASSERT_EQ(prefix_parse(NULL, &p), -EINVAL);
	ASSERT_EQ(p.len, 77); /* untouched */
	ASSERT_EQ(p.addr.family, 0);
	/* The longest text form still fits. */
	ASSERT_EQ(prefix_parse("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128", &p), 0);
	ASSERT_EQ(p.len, 128);
}

TEST(prefix_parse_host_bits_give_the_masked_prefix)
{
	static const struct {
		const char *in, *masked;
	} cases[] = {
		{ "10.0.0.1/8", "10.0.0.0/8" },
		{ "192.0.2.255/25", "192.0.2.128/25" },
		{ "10.15.0.0/13", "10.8.0.0/13" },
		{ "255.255.255.255/0", "0.0.0.0/0" },
		{ "2001:db8::1/32", "2001:db8::/32" },
		{ "2001:db8::ffff:0:0:0/67", "2001:db8:0:0:e000::/67" },
		{ "::1/0", "::/0" },
		{ "::ffff:10.0.0.1/104", "10.0.0.0/8" },
		{ "::ffff:0:0/95", "::fffe:0:0/95" }, /* an IPv6 prefix below /96 */
		{ "::ffff:0:0/96", NULL },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct prefix p;
		int r = prefix_parse(cases[i].in, &p);

		if (!cases[i].masked) {
			ASSERT_EQ(r, 0);
			continue;
		}
		if (r != -EDOM)
			FAIL_AT("prefix_parse(\"%s\") = %d, not -EDOM", cases[i].in, r);
		ASSERT_STREQ(fmt(&p), cases[i].masked);
	}
}

TEST(prefix_format_small_buffers)
{
	struct prefix p = *P("2001:db8::/32");
	char buf[8];

	prefix_format(&p, buf, sizeof(buf));
	ASSERT_STREQ(buf, "2001:db");
	prefix_format(&p, buf, 0); /* no write */
	p.addr.family = AF_UNIX;
	prefix_format(&p, buf, sizeof(buf));
	ASSERT_STREQ(buf, "?");
}

TEST(addr_from_sockaddr_families)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(80) };
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
	struct sockaddr sun = { .sa_family = AF_UNIX };
	struct addr a, v4 = *A("192.0.2.7"), v6 = *A("2001:db8::7");

	inet_pton(AF_INET, "192.0.2.7", &sin.sin_addr);
	ASSERT_EQ(addr_from_sockaddr((struct sockaddr *)&sin, sizeof(sin), &a), 0);
	ASSERT_MEMEQ(&a, sizeof(a), &v4, sizeof(v4));
	inet_pton(AF_INET6, "::ffff:192.0.2.7", &sin6.sin6_addr);
	ASSERT_EQ(addr_from_sockaddr((struct sockaddr *)&sin6, sizeof(sin6), &a), 0);
	ASSERT_MEMEQ(&a, sizeof(a), &v4, sizeof(v4));
	inet_pton(AF_INET6, "2001:db8::7", &sin6.sin6_addr);
	ASSERT_EQ(addr_from_sockaddr((struct sockaddr *)&sin6, sizeof(sin6), &a), 0);
	ASSERT_MEMEQ(&a, sizeof(a), &v6, sizeof(v6));

	memset(&a, 0x5a, sizeof(a));
	ASSERT_EQ(addr_from_sockaddr((struct sockaddr *)&sin6, sizeof(sin6) - 1, &a), -EINVAL);
	ASSERT_EQ(addr_from_sockaddr((struct sockaddr *)&sin, sizeof(sin) - 1, &a), -EINVAL);
	ASSERT_EQ(addr_from_sockaddr((struct sockaddr *)&sin, 1, &a), -EINVAL);
	ASSERT_EQ(addr_from_sockaddr(&sun, sizeof(sun), &a), -EAFNOSUPPORT);
	ASSERT_EQ(a.family, 0x5a); /* untouched */

	addr_unix(1000, &a);
	ASSERT_EQ(a.family, AF_UNIX);
	ASSERT_EQ(a.bytes[4], 0);
	ASSERT_EQ(a.bytes[15], 0);
}

TEST(prefix_match_named_boundaries)
{
	struct prefix all4 = *P("0.0.0.0/0"), all6 = *P("::/0"), one = *P("192.0.2.7"), half = *P("128.0.0.0/1");
	struct prefix p13 = *P("10.8.0.0/13"), p67 = *P("2001:db8::/67"), p128 = *P("2001:db8::1");
	struct addr u;

	ASSERT(prefix_match(&all4, A("0.0.0.0")));
	ASSERT(prefix_match(&all4, A("255.255.255.255")));
	ASSERT(!prefix_match(&all4, A("::")));
	ASSERT(prefix_match(&all6, A("::")));
	ASSERT(prefix_match(&all6, A("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
	ASSERT(!prefix_match(&all6, A("10.0.0.1")));
	ASSERT(!prefix_match(&all6, A("::ffff:10.0.0.1"))); /* parsed as IPv4 */
	ASSERT(prefix_match(&one, A("192.0.2.7")));
	ASSERT(!prefix_match(&one, A("192.0.2.6")));
	ASSERT(!prefix_match(&one, A("192.0.2.8")));
	ASSERT(prefix_match(&half, A("128.0.0.0")));
	ASSERT(prefix_match(&half, A("255.255.255.255")));
	ASSERT(!prefix_match(&half, A("127.255.255.255")));
	ASSERT(prefix_match(&p13, A("10.8.0.0")));
	ASSERT(prefix_match(&p13, A("10.15.255.255")));
	ASSERT(!prefix_match(&p13, A("10.7.255.255")));
	ASSERT(!prefix_match(&p13, A("10.16.0.0")));
	ASSERT(prefix_match(&p67, A("2001:db8::1fff:ffff:ffff:ffff")));
	ASSERT(!prefix_match(&p67, A("2001:db8::2000:0:0:0")));
	ASSERT(!prefix_match(&p67, A("2001:db8:0:1::")));
	ASSERT(prefix_match(&p128, A("2001:db8::1")));
	ASSERT(!prefix_match(&p128, A("2001:db8::")));
	ASSERT(!prefix_match(&p128, A("2001:db8::3")));
	addr_unix(0, &u);
	ASSERT(!prefix_match(&all4, &u));
	ASSERT(!prefix_match(&all6, &u));
}

/* At every length of both families: the prefix of a random address matches
 * it, flipping the last bit inside the prefix stops the match, flipping the
 * first bit past it does not. acl_check() with that one entry agrees. */
TEST(prefix_match_every_length)
{
	for (int fam = 0; fam < 2; fam++) {
		unsigned bits = fam ? 128 : 32;

		for (unsigned len = 0; len <= bits; len++) {
			for (int round = 0; round < 8; round++) {
				struct addr a = { fam ? AF_INET6 : AF_INET, { 0 } }, b;
				struct prefix p;
				struct acl *acl = NULL;
				char s[PREFIX_STRLEN + 8];
				uint64_t r1 = next_random(), r2 = next_random();
				int r;

				memcpy(a.bytes, &r1, 8);
				if (fam)
					memcpy(a.bytes + 8, &r2, 8);
				else
					memset(a.bytes + 4, 0, 4);
				p.addr = a;
				p.len = (uint8_t)bits;
				snprintf(s, sizeof(s), "%s/%u", fmt(&p), len);
				r = prefix_parse(s, &p); /* -EDOM: host bits, masked */
				if (r != 0 && r != -EDOM)
					FAIL_AT("prefix_parse(\"%s\") = %d", s, r);
				ASSERT_EQ(p.len, len);
				ASSERT(prefix_match(&p, &a));
				ASSERT_EQ(acl_add(&acl, &p, true), 0);
				ASSERT_EQ(acl_check(acl, &a), ACL_ALLOWED);
				if (len > 0) {
					b = a;
					flip_bit(&b, len - 1);
					ASSERT(!prefix_match(&p, &b));
					ASSERT_EQ(acl_check(acl, &b), ACL_NOT_ALLOWED);
				}
				if (len < bits) {
					b = a;
					flip_bit(&b, len);
					ASSERT(prefix_match(&p, &b));
					ASSERT_EQ(acl_check(acl, &b), ACL_ALLOWED);
					flip_bit(&b, bits - 1);
					ASSERT(prefix_match(&p, &b));
				}
				acl_free(acl);
			}
		}
	}
}

TEST(acl_null_and_deny_only_allow_everyone_else)
{
	struct acl *acl = NULL;
	struct addr u;

	addr_unix(1000, &u);
	ASSERT_EQ(acl_check(NULL, A("10.0.0.1")), ACL_ALLOWED);
	ASSERT_EQ(acl_check(NULL, &u), ACL_ALLOWED);
	ASSERT_EQ(acl_add(&acl, P("10.0.0.0/8"), false), 0);
	ASSERT_EQ(acl_check(acl, A("10.1.2.3")), ACL_DENIED);
	ASSERT_EQ(acl_check(acl, A("11.0.0.0")), ACL_ALLOWED);
	ASSERT_EQ(acl_check(acl, A("2001:db8::1")), ACL_ALLOWED);
	ASSERT_EQ(acl_check(acl, &u), ACL_ALLOWED);
	acl = acl_free(acl);
	ASSERT(acl == NULL);
}

TEST(acl_allow_list_refuses_the_unmatched)
{
	struct acl *acl = NULL;
	struct addr u;

	addr_unix(0, &u);
	ASSERT_EQ(acl_add(&acl, P("192.0.2.0/24"), true), 0);
	ASSERT_EQ(acl_check(acl, A("192.0.2.9")), ACL_ALLOWED);
	ASSERT_EQ(acl_check(acl, A("198.51.100.1")), ACL_NOT_ALLOWED);
	ASSERT_EQ(acl_check(acl, A("2001:db8::1")), ACL_NOT_ALLOWED);
	ASSERT_EQ(acl_check(acl, &u), ACL_NOT_ALLOWED); /* unix clients match no prefix */
	acl_free(acl);
}

TEST(acl_longest_match_wins)
{
	struct acl *acl = NULL;

	ASSERT_EQ(acl_add(&acl, P("10.0.0.0/8"), false), 0);
	ASSERT_EQ(acl_add(&acl, P("10.1.0.0/16"), true), 0);
	ASSERT_EQ(acl_add(&acl, P("10.1.2.0/24"), false), 0);
	ASSERT_EQ(acl_add(&acl, P("10.1.2.3"), true), 0);
	ASSERT_EQ(acl_add(&acl, P("2001:db8::/32"), true), 0);
	ASSERT_EQ(acl_add(&acl, P("2001:db8:bad::/48"), false), 0);
	ASSERT_EQ(acl_check(acl, A("10.2.0.0")), ACL_DENIED);
	ASSERT_EQ(acl_check(acl, A("10.1.3.4")), ACL_ALLOWED);
	ASSERT_EQ(acl_check(acl, A("10.1.2.4")), ACL_DENIED);
	ASSERT_EQ(acl_check(acl, A("10.1.2.3")), ACL_ALLOWED);
	ASSERT_EQ(acl_check(acl, A("11.0.0.1")), ACL_NOT_ALLOWED);
	ASSERT_EQ(acl_check(acl, A("2001:db8:1::1")), ACL_ALLOWED);
	ASSERT_EQ(acl_check(acl, A("2001:db8:bad::1")), ACL_DENIED);
	ASSERT_EQ(acl_check(acl, A("2001:db9::1")), ACL_NOT_ALLOWED);
	acl_free(acl);
}

TEST(acl_deny_wins_a_tie_in_either_order)
{
	for (int order = 0; order < 2; order++) {
		struct acl *acl = NULL;

		ASSERT_EQ(acl_add(&acl, P("10.0.0.0/8"), order == 0), 0);
		ASSERT_EQ(acl_add(&acl, P("10.0.0.0/8"), order != 0), 0);
		ASSERT_EQ(acl_add(&acl, P("10.0.0.0/8"), true), 0); /* duplicates are fine */
		ASSERT_EQ(acl_check(acl, A("10.9.9.9")), ACL_DENIED);
		ASSERT_EQ(acl_size(acl), 3);
		acl_free(acl);
	}
}

TEST(acl_v4_mapped_clients_and_rules_are_ipv4)
{
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
	struct acl *acl = NULL;
	struct addr a;

	inet_pton(AF_INET6, "::ffff:10.1.2.3", &sin6.sin6_addr);
	ASSERT_EQ(addr_from_sockaddr((struct sockaddr *)&sin6, sizeof(sin6), &a), 0);
	ASSERT_EQ(acl_add(&acl, P("::/0"), false), 0); /* all IPv6, which a mapped client is not */
	ASSERT_EQ(acl_add(&acl, P("10.0.0.0/8"), true), 0);
	ASSERT_EQ(acl_check(acl, &a), ACL_ALLOWED);
	ASSERT_EQ(acl_add(&acl, P("::ffff:10.1.0.0/112"), false), 0); /* 10.1.0.0/16 */
	ASSERT_EQ(acl_check(acl, &a), ACL_DENIED);
	ASSERT_EQ(acl_check(acl, A("10.2.0.1")), ACL_ALLOWED);
	ASSERT_EQ(acl_check(acl, A("2001:db8::1")), ACL_DENIED);
	acl_free(acl);
}

TEST(acl_entries_keep_insertion_order)
{
	static const char *const allow[] = { "10.0.0.0/8", "2001:db8::/32", "192.0.2.7", "10.0.0.0/8" };
	static const char *const deny[] = { "10.1.0.0/16", "::1" };
	const struct prefix *e;
	struct acl *acl = NULL;

	for (size_t i = 0; i < 4; i++) {
		ASSERT_EQ(acl_add(&acl, P(allow[i]), true), 0);
		if (i < 2)
			ASSERT_EQ(acl_add(&acl, P(deny[i]), false), 0);
	}
	ASSERT_EQ(acl_size(acl), 6);
	ASSERT_EQ(acl_entries(acl, true, &e), 4);
	for (size_t i = 0; i < 4; i++)
		ASSERT_STREQ(fmt(&e[i]), allow[i]);
	ASSERT_EQ(acl_entries(acl, false, &e), 2);
	for (size_t i = 0; i < 2; i++)
		ASSERT_STREQ(fmt(&e[i]), deny[i]);
	acl_free(acl);
	ASSERT_EQ(acl_size(NULL), 0);
	ASSERT_EQ(acl_entries(NULL, true, &e), 0);
}

TEST(acl_add_refuses_what_prefix_parse_would_not_return)
{
	struct acl *acl = NULL;
	struct prefix p = *P("10.0.0.0/8");

	p.addr.bytes[3] = 1; /* a host bit */
	ASSERT_EQ(acl_add(&acl, &p, true), -EINVAL);
	p = *P("10.0.0.0/8");
	p.len = 33;
	ASSERT_EQ(acl_add(&acl, &p, true), -EINVAL);
	p = *P("10.0.0.0/8");
	p.addr.bytes[4] = 1; /* past an IPv4 address */
	ASSERT_EQ(acl_add(&acl, &p, true), -EINVAL);
	p.addr.family = AF_UNIX;
	ASSERT_EQ(acl_add(&acl, &p, true), -EINVAL);
	ASSERT(acl == NULL);
}

TEST(acl_copy_is_deep)
{
	struct acl *acl = NULL, *copy = NULL;
	const struct prefix *e;

	ASSERT_EQ(acl_copy(NULL, &copy), 0);
	ASSERT(copy == NULL);
	ASSERT_EQ(acl_add(&acl, P("10.0.0.0/8"), true), 0);
	ASSERT_EQ(acl_add(&acl, P("10.1.0.0/16"), false), 0);
	ASSERT_EQ(acl_copy(acl, &copy), 0);
	ASSERT_EQ(acl_add(&copy, P("10.1.2.0/24"), true), 0);
	ASSERT_EQ(acl_add(&copy, P("2001:db8::/32"), true), 0);
	acl = acl_free(acl);
	ASSERT_EQ(acl_check(copy, A("10.1.2.3")), ACL_ALLOWED);
	ASSERT_EQ(acl_check(copy, A("10.1.3.3")), ACL_DENIED);
	ASSERT_EQ(acl_check(copy, A("10.2.0.0")), ACL_ALLOWED);
	ASSERT_EQ(acl_size(copy), 4);
	ASSERT_EQ(acl_entries(copy, true, &e), 3);
	ASSERT_STREQ(fmt(&e[2]), "2001:db8::/32");
	acl_free(copy);
}

/* The verdict by definition, over every entry: the reference for the index. */
static int naive_check(const struct prefix *v, const bool *allow, size_t n, const struct addr *a)
{
	int best = -1, verdict = ACL_ALLOWED;
	bool any_allow = false;

	for (size_t i = 0; i < n; i++) {
		any_allow |= allow[i];
		if (!prefix_match(&v[i], a))
			continue;
		if (v[i].len > best) {
			best = v[i].len;
			verdict = allow[i] ? ACL_ALLOWED : ACL_DENIED;
		} else if (v[i].len == best && !allow[i]) {
			verdict = ACL_DENIED;
		}
	}
	return best >= 0 ? verdict : any_allow ? ACL_NOT_ALLOWED : ACL_ALLOWED;
}

/* 1,000 entries of mixed lengths in a few clustered networks, so prefixes
 * nest and collide; every check agrees with naive_check(). */
TEST(acl_1000_entries_agree_with_the_definition)
{
	enum { N = 1000, CHECKS = 20000 };
	static struct prefix v[N];
	static bool allow[N];
	struct acl *acl = NULL, *copy = NULL;
	int seen[3] = { 0 };

	for (size_t i = 0; i < N; i++) {
		struct addr a = { 0 };
		uint64_t r = next_random();
		bool v6 = r & 1;
		unsigned bits = v6 ? 128 : 32;
		unsigned len = v6 ? 16 + (unsigned)(r >> 8) % 113 : 8 + (unsigned)(r >> 8) % 25;
		uint64_t x = next_random();

		a.family = v6 ? AF_INET6 : AF_INET;
		a.bytes[0] = v6 ? 0x20 : 10;
		a.bytes[1] = (uint8_t)(x & 3); /* four networks per family */
		memcpy(a.bytes + 2, &x, bits / 8 - 2 < 8 ? bits / 8 - 2 : 8);
		v[i].addr = a;
		v[i].len = (uint8_t)len;
		{
			char s[PREFIX_STRLEN + 8];
			struct prefix full = { a, (uint8_t)bits };

			snprintf(s, sizeof(s), "%s/%u", fmt(&full), len);
			prefix_parse(s, &v[i]); /* 0 or -EDOM: both give the masked prefix */
		}
		allow[i] = (r >> 40) % 3 != 0;
		ASSERT_EQ(acl_add(&acl, &v[i], allow[i]), 0);
	}
	ASSERT_EQ(acl_size(acl), N);
	ASSERT_EQ(acl_copy(acl, &copy), 0);
	for (int i = 0; i < CHECKS; i++) {
		/* An entry's address with a few random low bits changed. */
		struct addr a = v[next_random() % N].addr;
		uint64_t x = next_random();
		unsigned bits = a.family == AF_INET6 ? 128 : 32;
		int want, got;

		for (int k = 0; k < (int)(x % 4); k++)
			flip_bit(&a, bits - 1 - (unsigned)(next_random() % (bits - 8)));
		want = naive_check(v, allow, N, &a);
		got = acl_check(acl, &a);
		if (got != want)
			FAIL_AT("check %d: acl_check = %d, definition = %d", i, got, want);
		ASSERT_EQ(acl_check(copy, &a), want);
		seen[want]++;
	}
	/* The mix is meaningful: every verdict happens. */
	ASSERT(seen[ACL_ALLOWED] > 100);
	ASSERT(seen[ACL_DENIED] > 100);
	ASSERT(seen[ACL_NOT_ALLOWED] > 100);
	acl_free(acl);
	acl_free(copy);
}

TEST(bucket_starts_full_and_refills_exactly)
{
	struct bucket b = { 0 };
	uint64_t t0 = 5 * USEC_PER_SEC;

	ASSERT(bucket_full(&b, 0));
	ASSERT(bucket_take(&b, 3, t0));
	ASSERT(!bucket_full(&b, t0));
	ASSERT(bucket_take(&b, 3, t0));
	ASSERT(bucket_take(&b, 3, t0));
	ASSERT(!bucket_take(&b, 3, t0));
	/* 3/s: a token every 333,333.3 us. */
	ASSERT(!bucket_take(&b, 3, t0 + 333333));
	ASSERT(bucket_take(&b, 3, t0 + 333334));
	ASSERT(!bucket_take(&b, 3, t0 + 666666));
	ASSERT(bucket_take(&b, 3, t0 + 666668));
	/* 4 micro-tokens left at t0 + 666668: 2,999,996 more take 999,999 us. */
	ASSERT(!bucket_full(&b, t0 + 1666666));
	ASSERT(bucket_full(&b, t0 + 1666667));
	ASSERT(bucket_full(&b, UINT64_MAX));
	ASSERT(bucket_take(&b, 3, t0 + 1666667));
	ASSERT(bucket_take(&b, 3, t0 + 1666667));
	ASSERT(bucket_take(&b, 3, t0 + 1666667));
	ASSERT(!bucket_take(&b, 3, t0 + 1666667));
}

TEST(bucket_is_full_one_second_after_emptying)
{
	struct bucket b = { 0 };

	ASSERT(bucket_take(&b, 2, 0));
	ASSERT(bucket_take(&b, 2, 0));
	ASSERT(!bucket_full(&b, 999999));
	ASSERT(bucket_full(&b, 1000000));
	/* A refused take counts as a take. */
	ASSERT(bucket_take(&b, 1, 2000000));
	ASSERT(!bucket_take(&b, 1, 2500000));
	ASSERT(!bucket_full(&b, 2999999));
	ASSERT(bucket_full(&b, 3000000));
}

TEST(bucket_rate_zero_changes_and_odd_times)
{
	struct bucket b = { 0 }, zero = { 0 };

	for (int i = 0; i < 1000; i++)
		ASSERT(bucket_take(&b, 0, 0));
	ASSERT_MEMEQ(&b, sizeof(b), &zero, sizeof(zero));

	/* A lower rate keeps the tokens up to the new capacity. */
	for (int i = 0; i < 10; i++)
		ASSERT(bucket_take(&b, 10, 100));
	ASSERT(!bucket_take(&b, 10, 100));
	ASSERT(!bucket_take(&b, 1, 100));
	ASSERT(!bucket_take(&b, 1, 1000099));
	ASSERT(bucket_take(&b, 1, 1000100));
	ASSERT(!bucket_take(&b, 1, 1000100));
	/* A higher rate refills faster and holds more. */
	ASSERT(bucket_take(&b, 1000, 1001100));
	ASSERT(!bucket_full(&b, 1001100));
	ASSERT(bucket_full(&b, 2001100));

	/* Time going backwards refills nothing and breaks nothing. */
	memset(&b, 0, sizeof(b));
	ASSERT(bucket_take(&b, 1, 10 * USEC_PER_SEC));
	ASSERT(!bucket_take(&b, 1, 1));
	ASSERT(!bucket_take(&b, 1, 10 * USEC_PER_SEC + 999999));
	ASSERT(bucket_take(&b, 1, 11 * USEC_PER_SEC));

	/* The largest rate and times: no overflow. */
	memset(&b, 0, sizeof(b));
	ASSERT(bucket_take(&b, UINT32_MAX, 0));
	ASSERT(bucket_take(&b, UINT32_MAX, UINT64_MAX));
	ASSERT(!bucket_full(&b, UINT64_MAX));
	ASSERT_EQ(b.tokens, (uint64_t)UINT32_MAX * 1000000 - 1000000);
}

TEST(source_key_groups_ipv6_by_prefix)
{
	struct source_key k1, k2;
	struct addr u1, u2;

	source_key_make(A("2001:db8:1:2::1"), 0, 64, &k1);
	source_key_make(A("2001:db8:1:2:ffff:ffff:ffff:9"), 0, 64, &k2);
	ASSERT_MEMEQ(&k1, sizeof(k1), &k2, sizeof(k2));
	source_key_make(A("2001:db8:1:3::1"), 0, 64, &k2);
	ASSERT(memcmp(&k1, &k2, sizeof(k1)) != 0);
	source_key_make(A("2001:db8:1:2::1"), 0, 128, &k1);
	source_key_make(A("2001:db8:1:2::2"), 0, 128, &k2);
	ASSERT(memcmp(&k1, &k2, sizeof(k1)) != 0);
	source_key_make(A("2001:db8:1:2::2"), 0, 200, &k1); /* clamped to 128 */
	ASSERT_MEMEQ(&k1, sizeof(k1), &k2, sizeof(k2));
	source_key_make(A("2001:db8:1:2::1"), 0, 0, &k1);
	source_key_make(A("fe80::1"), 0, 0, &k2);
	ASSERT_MEMEQ(&k1, sizeof(k1), &k2, sizeof(k2));
	/* IPv4 as is, whatever the IPv6 prefix. */
	source_key_make(A("10.0.0.1"), 0, 8, &k1);
	source_key_make(A("10.0.0.2"), 0, 8, &k2);
	ASSERT(memcmp(&k1, &k2, sizeof(k1)) != 0);
	/* Unix clients by uid; groups apart. */
	addr_unix(1000, &u1);
	addr_unix(1001, &u2);
	source_key_make(&u1, 0, 64, &k1);
	source_key_make(&u2, 0, 64, &k2);
	ASSERT(memcmp(&k1, &k2, sizeof(k1)) != 0);
	source_key_make(&u1, 1, 64, &k2);
	ASSERT(memcmp(&k1, &k2, sizeof(k1)) != 0);
}

static struct source *get(struct sources *t, const char *addr, uint32_t group, unsigned ipv6_prefix)
{
	struct source_key k;
	struct addr a = *A(addr);

	source_key_make(&a, group, ipv6_prefix, &k);
	return sources_get(t, &k);
}

TEST(sources_count_and_free_at_zero)
{
	struct sources *t = NULL;
	struct source *s, *s2;

	ASSERT_EQ(sources_new(1, &t), 0);
	s = get(t, "192.0.2.1", 0, 64);
	ASSERT(s);
	ASSERT_EQ(s->count, 0);
	ASSERT_EQ(sources_size(t), 1);
	s->count++;
	s2 = get(t, "192.0.2.1", 0, 64);
	ASSERT(s2 == s);
	s->count++;
	ASSERT(get(t, "192.0.2.1", 1, 64) != s); /* another listener */
	ASSERT_EQ(sources_size(t), 2);
	s->count--;
	sources_release(t, s, 0);
	ASSERT_EQ(sources_size(t), 2);
	s->count--;
	sources_release(t, s, 0); /* no rate taken: full, freed at once */
	ASSERT_EQ(sources_size(t), 1);
	sources_release(t, get(t, "192.0.2.1", 1, 64), 0);
	ASSERT_EQ(sources_size(t), 0);
	t = sources_free(t);
	ASSERT(t == NULL);
	ASSERT_EQ(sources_size(NULL), 0);
}

TEST(sources_ipv6_prefix_shares_an_entry)
{
	struct sources *t = NULL;

	ASSERT_EQ(sources_new(2, &t), 0);
	ASSERT(get(t, "2001:db8:0:1::1", 0, 64) == get(t, "2001:db8:0:1:aaaa::2", 0, 64));
	ASSERT_EQ(sources_size(t), 1);
	ASSERT(get(t, "2001:db8:0:1::1", 0, 128) != get(t, "2001:db8:0:1:aaaa::2", 0, 128));
	ASSERT_EQ(sources_size(t), 3);
	sources_free(t);
}

TEST(sources_idle_entries_wait_for_a_full_bucket)
{
	struct sources *t = NULL;
	struct source *s;

	ASSERT_EQ(sources_new(3, &t), 0);
	/* A connection at 0 (rate 1/s), closed at 100 us: idle until 1 s. */
	s = get(t, "192.0.2.1", 0, 64);
	ASSERT(bucket_take(&s->rate, 1, 0));
	s->count++;
	s->count--;
	sources_release(t, s, 100);
	ASSERT_EQ(sources_size(t), 1);
	ASSERT_EQ(sources_sweep(t, 999999), 0);
	/* A refused attempt at 0.5 s keeps it: back on the idle list, same bucket. */
	s = get(t, "192.0.2.1", 0, 64);
	ASSERT(!bucket_take(&s->rate, 1, 500000));
	sources_release(t, s, 500000);
	ASSERT_EQ(sources_sweep(t, 999999), 0);
	ASSERT_EQ(sources_size(t), 1);
	ASSERT_EQ(sources_sweep(t, 1000000), 1);
	ASSERT_EQ(sources_size(t), 0);

	/* An entry in use is never swept, full or not. */
	s = get(t, "192.0.2.2", 0, 64);
	ASSERT(bucket_take(&s->rate, 1, 0));
	s->count = 1;
	sources_release(t, s, 0); /* say, refused by per_source */
	ASSERT_EQ(sources_sweep(t, 10 * USEC_PER_SEC), 0);
	ASSERT_EQ(sources_size(t), 1);
	s->count = 0;
	sources_release(t, s, 10 * USEC_PER_SEC); /* full by now: freed */
	ASSERT_EQ(sources_size(t), 0);
	sources_free(t);
}

TEST(sources_sweep_frees_in_release_order)
{
	struct sources *t = NULL;
	const char *addrs[] = { "192.0.2.1", "192.0.2.2", "192.0.2.3" };

	ASSERT_EQ(sources_new(4, &t), 0);
	for (int i = 0; i < 3; i++) {
		struct source *s = get(t, addrs[i], 0, 64);

		ASSERT(bucket_take(&s->rate, 1, (uint64_t)i * 300000));
		sources_release(t, s, (uint64_t)i * 300000);
	}
	ASSERT_EQ(sources_sweep(t, 999999), 0);
	ASSERT_EQ(sources_sweep(t, 1000000), 1);
	ASSERT_EQ(sources_sweep(t, 1299999), 0);
	ASSERT_EQ(sources_sweep(t, 1600000), 2);
	ASSERT_EQ(sources_size(t), 0);

	/* A slow bucket at the head holds back a fast one behind it, at most
	 * until 1 s after the latter's release. */
	{
		struct source *slow = get(t, "192.0.2.1", 0, 64), *fast;

		ASSERT(bucket_take(&slow->rate, 1, 0));
		sources_release(t, slow, 0);
		fast = get(t, "192.0.2.2", 0, 64);
		ASSERT(bucket_take(&fast->rate, 1000, 100000));
		sources_release(t, fast, 100000);
		ASSERT(bucket_full(&fast->rate, 101000));
		ASSERT_EQ(sources_sweep(t, 500000), 0);
		ASSERT_EQ(sources_size(t), 2);
		ASSERT_EQ(sources_sweep(t, 1000000), 2);
	}
	ASSERT_EQ(sources_size(t), 0);
	sources_free(t);
}

/* A spray of 100,000 distinct sources, each taking a token: the table grows,
 * finds each again, and sweeps back to nothing one second later. */
TEST(sources_100000_keys_sweep_back_to_zero)
{
	enum { N = 100000 };
	static struct source *seen[N];
	struct sources *t = NULL;
	struct source_key k;
	struct addr a = *A("127.0.0.0");

	ASSERT_EQ(sources_new(5, &t), 0);
	for (uint32_t i = 0; i < N; i++) {
		uint32_t ip = htonl(0x7f000000u + i);

		memcpy(a.bytes, &ip, 4);
		source_key_make(&a, 0, 64, &k);
		seen[i] = sources_get(t, &k);
		ASSERT(seen[i]);
		ASSERT(bucket_take(&seen[i]->rate, 1, i)); /* full again at i + 1 s */
		seen[i]->count++;
	}
	ASSERT_EQ(sources_size(t), N);
	for (uint32_t i = 0; i < N; i++) {
		uint32_t ip = htonl(0x7f000000u + i);

		memcpy(a.bytes, &ip, 4);
		source_key_make(&a, 0, 64, &k);
		if (sources_get(t, &k) != seen[i])
			FAIL_AT("entry %u moved", i);
		seen[i]->count--;
		sources_release(t, seen[i], N + i);
	}
	ASSERT_EQ(sources_size(t), N);
	ASSERT_EQ(sources_sweep(t, 2 * N), 0);
	ASSERT_EQ(sources_sweep(t, USEC_PER_SEC + N / 2), N / 2 + 1);
	ASSERT_EQ(sources_sweep(t, USEC_PER_SEC + N), N / 2 - 1);
	ASSERT_EQ(sources_size(t), 0);

	/* Without a rate, each is freed as its last connection closes. */
	for (uint32_t i = 0; i < N; i++) {
		uint32_t ip = htonl(0x7f000000u + i);
		struct source *s;

		memcpy(a.bytes, &ip, 4);
		source_key_make(&a, 7, 64, &k);
		s = sources_get(t, &k);
		ASSERT(s);
		sources_release(t, s, 0);
	}
	ASSERT_EQ(sources_size(t), 0);
	/* And one IPv6 /64 is one entry, however many addresses it uses. */
	a = *A("2001:db8::");
	for (uint32_t i = 0; i < N; i++) {
		memcpy(a.bytes + 12, &i, 4);
		source_key_make(&a, 0, 64, &k);
		ASSERT(sources_get(t, &k));
	}
	ASSERT_EQ(sources_size(t), 1);
	sources_free(t);
}
