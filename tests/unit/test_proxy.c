/* modules: proxy util */
#include "crc32c_ref.h"
#include "proxy.h"
#include "tests.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <sys/un.h>

#define ANY (PROXY_V1 | PROXY_V2)

/* ------------------------------------------------------------ helpers */

/* The address and port of ss as "a.b.c.d:p" or "[v6]:p", from a ring. */
static const char *addr_text(const struct sockaddr_storage *ss)
{
	static char ring[4][INET6_ADDRSTRLEN + 16];
	static int i;
	char a[INET6_ADDRSTRLEN];

	i = (i + 1) % 4;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &s->sin_addr, a, sizeof(a));
		snprintf(ring[i], sizeof(ring[i]), "%s:%u", a, ntohs(s->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &s->sin6_addr, a, sizeof(a));
		snprintf(ring[i], sizeof(ring[i]), "[%s]:%u", a, ntohs(s->sin6_port));
	} else {
		snprintf(ring[i], sizeof(ring[i]), "family %d", ss->ss_family);
	}
	return ring[i];
}

static int parse(const void *buf, size_t len, unsigned versions, struct proxy_hdr *h, const char **why)
{
	*why = NULL;
	memset(h, 0xa5, sizeof(*h)); /* set only on success: garbage shows */
	return proxy_parse(buf, len, versions, h, why);
}

/* Every prefix of a valid header asks for more, never an error or a length;
 * the whole header (and the header with the client's bytes after it) is one. */
static bool need_more_at_every_split(const void *buf, size_t n, unsigned versions)
{
	uint8_t more[PROXY_HEADER_MAX + 64];
	struct proxy_hdr h;
	const char *why;

	for (size_t k = 0; k < n; k++) {
		int r = parse(buf, k, versions, &h, &why);

		if (r != 0) {
			fprintf(stderr, "prefix of %zu/%zu bytes: %d (%s)\n", k, n, r, why ? why : "");
			return false;
		}
	}
	if (parse(buf, n, versions, &h, &why) != (int)n)
		return false;
	memcpy(more, buf, n);
	memcpy(more + n, "SSH-2.0-x\r\n\r\n\x00\r\nQUIT\n", 22);
	return parse(more, n + 22, versions, &h, &why) == (int)n;
}

/* Prefixes shorter than at ask for more; from at on, the same error. */
static bool error_from(const void *buf, size_t n, size_t at, int err, const char *reason)
{
	struct proxy_hdr h;
	const char *why;

	for (size_t k = 0; k <= n; k++) {
		int r = parse(buf, k, ANY, &h, &why);

		if (k < at && r != 0) {
			fprintf(stderr, "%zu bytes: %d (%s), want 0 before byte %zu\n", k, r, why ? why : "", at);
			return false;
		}
		if (k >= at && (r != err || !why || strcmp(why, reason) != 0)) {
			fprintf(stderr, "%zu bytes: %d (%s), want %d (%s)\n", k, r, why ? why : "(null)", err, reason);
			return false;
		}
	}
	return true;
}

static bool error_from_str(const char *s, size_t at, const char *reason)
{
	return error_from(s, strlen(s), at, -EBADMSG, reason);
}

/* A v2 header under construction. */
struct v2 {
	uint8_t b[PROXY_HEADER_MAX + 256];
	size_t n;
};

static const uint8_t SIG[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

static void put(struct v2 *v, const void *p, size_t n)
{
	memcpy(v->b + v->n, p, n);
	v->n += n;
}

static void put_u8(struct v2 *v, uint8_t x)
{
	put(v, &x, 1);
}

static void put_u16(struct v2 *v, uint16_t x)
{
	put_u8(v, (uint8_t)(x >> 8));
	put_u8(v, (uint8_t)x);
}

static void v2_start(struct v2 *v, uint8_t ver_cmd, uint8_t fam)
{
	v->n = 0;
	put(v, SIG, 12);
	put_u8(v, ver_cmd);
	put_u8(v, fam);
	put_u16(v, 0);
}

/* Writes the length field from what was put; returns the header's length. */
static size_t v2_end(struct v2 *v)
{
	v->b[14] = (uint8_t)((v->n - 16) >> 8);
	v->b[15] = (uint8_t)(v->n - 16);
	return v->n;
}

static void put_tlv(struct v2 *v, uint8_t type, const void *val, size_t n)
{
	put_u8(v, type);
	put_u16(v, (uint16_t)n);
	put(v, val, n);
}

/* The TCP4 addresses of the spec's v1 example. */
static void put_tcp4(struct v2 *v)
{
	static const uint8_t a[12] = { 192, 168, 0, 1, 192, 168, 0, 11, 0xdc, 0x04, 0x01, 0xbb }; /* 56324, 443 */

	put(v, a, sizeof(a));
}

static void v2_tcp4(struct v2 *v)
{
	v2_start(v, 0x21, 0x11);
	put_tcp4(v);
}

/* Appends a CRC32C TLV, ends the header and fills the checksum in. */
static size_t v2_end_crc(struct v2 *v)
{
	static const uint8_t zero[4];
	size_t at = v->n + 3;
	uint32_t crc;

	put_tlv(v, 0x03, zero, 4);
	v2_end(v);
	crc = crc32c_ref(v->b, v->n);
	v->b[at] = (uint8_t)(crc >> 24);
	v->b[at + 1] = (uint8_t)(crc >> 16);
	v->b[at + 2] = (uint8_t)(crc >> 8);
	v->b[at + 3] = (uint8_t)crc;
	return v->n;
}

/* ------------------------------------------------------------ v1 */

TEST(v1_spec_example_tcp4)
{
	static const char s[] = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
				"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n";
	struct proxy_hdr h;
	const char *why;

	ASSERT_EQ(parse(s, strlen(s), ANY, &h, &why), 47);
	ASSERT_EQ(h.version, 1);
	ASSERT(!h.local && !h.health_check && !h.ssl);
	ASSERT_EQ(h.family, AF_INET);
	ASSERT_STREQ(addr_text(&h.src), "192.168.0.1:56324");
	ASSERT_STREQ(addr_text(&h.dst), "192.168.0.11:443");
	ASSERT_STREQ(h.authority, "");
	ASSERT_STREQ(h.tls_version, "");
	ASSERT_EQ(parse(s, strlen(s), PROXY_V1, &h, &why), 47);
	ASSERT(need_more_at_every_split(s, 47, ANY));
	ASSERT(need_more_at_every_split(s, 47, PROXY_V1));
}

TEST(v1_spec_longest_lines)
{
	static const char tcp4[] = "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
	static const char tcp6[] = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
				   "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	static const char unknown[] = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
				      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	struct proxy_hdr h;
	const char *why;

	ASSERT_EQ(strlen(tcp4), 56);
	ASSERT_EQ(parse(tcp4, 56, ANY, &h, &why), 56);
	ASSERT_STREQ(addr_text(&h.src), "255.255.255.255:65535");
	ASSERT(need_more_at_every_split(tcp4, 56, ANY));

	ASSERT_EQ(strlen(tcp6), 104);
	ASSERT_EQ(parse(tcp6, 104, ANY, &h, &why), 104);
	ASSERT_EQ(h.family, AF_INET6);
	ASSERT_STREQ(addr_text(&h.dst), "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
	ASSERT(need_more_at_every_split(tcp6, 104, ANY));

	ASSERT_EQ(strlen(unknown), 107);
	ASSERT_EQ(strlen(unknown), PROXY_V1_MAX);
	ASSERT_EQ(parse(unknown, 107, ANY, &h, &why), 107);
	ASSERT(h.local && !h.health_check);
	ASSERT_EQ(h.family, AF_UNSPEC);
	ASSERT(need_more_at_every_split(unknown, 107, ANY));
}

TEST(v1_unknown_short_and_ignored_rest)
{
	struct proxy_hdr h;
	const char *why;

	ASSERT_EQ(parse("PROXY UNKNOWN\r\n", 15, ANY, &h, &why), 15);
	ASSERT(h.local);
	ASSERT_EQ(h.version, 1);
	ASSERT(need_more_at_every_split("PROXY UNKNOWN\r\n", 15, ANY));
	/* The receiver must ignore anything before the CRLF, even junk. */
	ASSERT_EQ(parse("PROXY UNKNOWN \r\n", 16, ANY, &h, &why), 16);
	ASSERT_EQ(parse("PROXY UNKNOWN x\x01\x7f\xff 1.2 \r\nX", 26, ANY, &h, &why), 25);
	ASSERT(h.local);
}

TEST(v1_tcp6_forms)
{
	static const struct {
		const char *line, *src, *dst;
	} ok[] = {
		{ "PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n", "[2001:db8::1]:1", "[2001:db8::2]:2" },
		{ "PROXY TCP6 :: ::1 0 0\r\n", "[::]:0", "[::1]:0" },
		{ "PROXY TCP6 ::ffff:192.0.2.1 FE80::A 65535 1\r\n", "[::ffff:192.0.2.1]:65535", "[fe80::a]:1" },
		{ "PROXY TCP6 1:2:3:4:5:6:7:8 1::8 9 10\r\n", "[1:2:3:4:5:6:7:8]:9", "[1::8]:10" },
		{ "PROXY TCP6 0001:0002:0:0:0:0:0:0 1:2:3:4:5:6:1.2.3.4 80 443\r\n", "[1:2::]:80",
		  "[1:2:3:4:5:6:102:304]:443" },
	};
	struct proxy_hdr h;
	const char *why;

	for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
		size_t n = strlen(ok[i].line);

		if (parse(ok[i].line, n, ANY, &h, &why) != (int)n)
			FAIL_AT("refused %s: %s", ok[i].line, why);
		ASSERT_EQ(h.family, AF_INET6);
		ASSERT_STREQ(addr_text(&h.src), ok[i].src);
		ASSERT_STREQ(addr_text(&h.dst), ok[i].dst);
		ASSERT(need_more_at_every_split(ok[i].line, n, ANY));
	}
}

TEST(v1_ports_and_zeros)
{
	struct proxy_hdr h;
	const char *why;

	ASSERT_EQ(parse("PROXY TCP4 0.0.0.0 10.0.0.0 0 0\r\n", 33, ANY, &h, &why), 33);
	ASSERT_STREQ(addr_text(&h.src), "0.0.0.0:0");
	ASSERT_STREQ(addr_text(&h.dst), "10.0.0.0:0");
	ASSERT_EQ(parse("PROXY TCP4 1.2.3.4 5.6.7.8 65535 10\r\n", 37, ANY, &h, &why), 37);
}

TEST(v1_errors)
{
	static const struct {
		const char *s;
		size_t at; /* bytes received when it is refused: up to the first that cannot fit */
		const char *reason;
	} bad[] = {
		{ "GET / HTTP/1.1\r\n", 1, "no PROXY header" },
		{ "POST /", 2, "no PROXY header" },
		{ "PROXX TCP4", 5, "no PROXY header" },
		{ "PROXY\tTCP4", 6, "no PROXY header" },
		{ "PROXYTCP4", 6, "no PROXY header" },
		{ "proxy TCP4", 1, "no PROXY header" },
		{ "PROXY  TCP4", 7, "bad v1 header: protocol" },
		{ "PROXY TCP5 1.2.3.4", 10, "bad v1 header: protocol" },
		{ "PROXY tcp4", 7, "bad v1 header: protocol" },
		{ "PROXY UDP4", 8, "bad v1 header: protocol" },
		{ "PROXY TCP4\r\n", 11, "bad v1 header: protocol" },
		{ "PROXY UNKNOWNX\r\n", 14, "bad v1 header: protocol" },
		{ "PROXY UNKNOWN\n", 14, "bad v1 header: line end" },
		{ "PROXY UNKNOWN junk\n\r\n", 19, "bad v1 header: line end" },
		{ "PROXY UNKNOWN\r\r\n", 15, "bad v1 header: line end" },
		{ "PROXY TCP4  1.2.3.4", 12, "bad v1 header: source address" },
		{ "PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", 19, "bad v1 header: source address" },
		{ "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", 20, "bad v1 header: source address" },
		{ "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", 17, "bad v1 header: source address" },
		{ "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", 19, "bad v1 header: source address" },
		{ "PROXY TCP4 ::1 ::2 1 2\r\n", 12, "bad v1 header: source address" },
		{ "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", 19, "bad v1 header: source address" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n", 28, "bad v1 header: source port" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", 29, "bad v1 header: source port" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", 32, "bad v1 header: source port" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", 28, "bad v1 header: source port" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", 31, "bad v1 header: destination port" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", 31, "bad v1 header: destination port" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n", 31, "bad v1 header: destination port" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", 29, "bad v1 header: source port" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", 31, "bad v1 header: destination port" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", 32, "bad v1 header: line end" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", 32, "bad v1 header: line end" },
		{ "PROXY TCP4 1.2.3.4 ::1 1 2\r\n", 20, "bad v1 header: destination address" },
		{ "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", 13, "bad v1 header: source address" },
		{ "PROXY TCP6 ::1 1:::2 1 2\r\n", 19, "bad v1 header: destination address" },
		{ "PROXY TCP6 1::2::3 ::1 1 2\r\n", 17, "bad v1 header: source address" },
		{ "PROXY TCP6 :1 ::1 1 2\r\n", 13, "bad v1 header: source address" },
		{ "PROXY TCP6 12345:: ::1 1 2\r\n", 16, "bad v1 header: source address" },
		{ "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", 27, "bad v1 header: source address" },
		{ "PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n", 25, "bad v1 header: source address" },
		{ "PROXY TCP6 1: ::1 1 2\r\n", 14, "bad v1 header: source address" },
		{ "PROXY TCP6 ::1%eth0 ::1 1 2\r\n", 15, "bad v1 header: source address" },
		{ "PROXY TCP6 [::1] ::1 1 2\r\n", 12, "bad v1 header: source address" },
		{ "PROXY TCP6 ::1:1.2.3.4.5 ::1 1 2\r\n", 23, "bad v1 header: source address" },
		{ "PROXY TCP6 1:2:3:4:5:6:7:1.2.3.4 ::1 1 2\r\n", 27, "bad v1 header: source address" },
		{ "PROXY TCP6 ::1.2.3.04 ::1 1 2\r\n", 21, "bad v1 header: source address" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		if (!error_from_str(bad[i].s, bad[i].at, bad[i].reason))
			FAIL_AT("case %zu: %s", i, bad[i].s);
	/* NUL is not a character of any field. */
	ASSERT(error_from("PROXY TCP4 1.2.3.4\0", 19, 19, -EBADMSG, "bad v1 header: source address"));
}

TEST(v1_at_most_107_bytes)
{
	char line[160];
	struct proxy_hdr h;
	const char *why;

	/* 107 bytes with the CRLF: taken. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	memcpy(line + 105, "\r\n", 2);
	ASSERT_EQ(parse(line, 107, ANY, &h, &why), 107);
	ASSERT(need_more_at_every_split(line, 107, ANY));
	/* 108: the CRLF is not in the first 107 bytes. Refused at byte 107, not
	 * left to the timeout. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	memcpy(line + 106, "\r\n", 2);
	ASSERT(error_from(line, 108, 107, -EBADMSG, "bad v1 header: longer than 107 bytes"));
	ASSERT(error_from(line, sizeof(line), 107, -EBADMSG, "bad v1 header: longer than 107 bytes"));
}

/* The scanners speak inet_pton's language exactly: every complete token is
 * taken iff inet_pton takes it (and to the same address), and every token cut
 * short is "need more" iff some completion is valid. Random tokens over the
 * address alphabet, from a fixed seed, plus hand-picked ones. */
static uint64_t rng = UINT64_C(0x9e3779b97f4a7c15);
static uint64_t next_random(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static int token_verdict(bool v6, const char *tok, bool whole, uint8_t ret[16])
{
	char line[200];
	struct proxy_hdr h;
	const char *why;
	int r;

	snprintf(line, sizeof(line), "PROXY %s %s%s", v6 ? "TCP6" : "TCP4", tok,
		 whole ? (v6 ? " ::1 1 2\r\n" : " 1.1.1.1 1 2\r\n") : "");
	r = parse(line, strlen(line), ANY, &h, &why);
	if (r > 0)
		memcpy(ret,
		       v6 ? (void *)&((struct sockaddr_in6 *)&h.src)->sin6_addr
			  : (void *)&((struct sockaddr_in *)&h.src)->sin_addr,
		       v6 ? 16 : 4);
	return r;
}

static bool completable(bool v6, const char *tok)
{
	static const char *const tails[] = { "", "0", ":", "::", ".0", ".0.0", ".0.0.0", "0.0", "0.0.0", "0.0.0.0" };
	uint8_t out[16];
	char s[128];

	for (size_t i = 0; i < ARRAY_SIZE(tails); i++) {
		snprintf(s, sizeof(s), "%s%s", tok, tails[i]);
		if (inet_pton(v6 ? AF_INET6 : AF_INET, s, out) == 1)
			return true;
	}
	return false;
}

static bool agrees_with_inet_pton(bool v6, const char *tok)
{
	uint8_t mine[16], theirs[16];
	int r = token_verdict(v6, tok, true, mine);
	bool pton = inet_pton(v6 ? AF_INET6 : AF_INET, tok, theirs) == 1;

	if ((r > 0) != pton || (pton && memcmp(mine, theirs, v6 ? 16 : 4) != 0)) {
		fprintf(stderr, "TCP%c \"%s\": proxy_parse %d, inet_pton %d\n", v6 ? '6' : '4', tok, r, pton);
		return false;
	}
	/* Cut short: need more exactly when a completion exists (the tails
	 * above reach one from any state that has one). */
	r = token_verdict(v6, tok, false, mine);
	if ((r == 0) != completable(v6, tok)) {
		fprintf(stderr, "TCP%c \"%s\" so far: proxy_parse %d, completable %d\n", v6 ? '6' : '4', tok, r,
			completable(v6, tok));
		return false;
	}
	return true;
}

TEST(v1_addresses_match_inet_pton)
{
	static const char *const picked[] = {
		"::",
		":::",
		"::1",
		"1::",
		"1:",
		":1",
		"1::2::3",
		"::ffff:1.2.3.4",
		"::1.2.3.4",
		"1:2:3:4:5:6:1.2.3.4",
		"1:2:3:4:5::1.2.3.4",
		"1:2:3:4:5:6:7::",
		"1:2:3:4:5:6:7::8",
		"1::3:4:5:6:7:8:9",
		"::1:2:3:4:5:6:7",
		"1:2:3:4:5:6:7:8::",
		"1:2:3:4::5:6:7:8",
		"12345::",
		"0000:0000:0000:0000:0000:0000:0000:0000",
		"::0.0.0.0",
		"::255.255.255.255",
		"::256.1.1.1",
		"::01.1.1.1",
		"::1.2.3",
		"1.2.3.4",
		"255.255.255.255",
		"0.0.0.0",
		"00.0.0.0",
		"1.2.3.4.",
		".1.2.3",
		"1..2.3",
		"a.1.2.3",
		"::a.1.2.3",
		"::1a.1.2.3",
		"fFfF::",
		"g::",
		"",
	};

	for (size_t i = 0; i < ARRAY_SIZE(picked); i++) {
		ASSERT(agrees_with_inet_pton(true, picked[i]));
		ASSERT(agrees_with_inet_pton(false, picked[i]));
	}
	for (int i = 0; i < 30000; i++) {
		static const char alphabet6[] = "0123456789abcdefABCDEF::::::.";
		static const char alphabet4[] = "0123456789.....12255";
		bool v6 = i % 2;
		const char *alphabet = v6 ? alphabet6 : alphabet4;
		size_t alen = strlen(alphabet), len = 1 + next_random() % (v6 ? 24 : 16);
		char tok[32];

		for (size_t k = 0; k < len; k++)
			tok[k] = alphabet[next_random() % alen];
		tok[len] = '\0';
		if (!agrees_with_inet_pton(v6, tok))
			FAIL_AT("random token %d", i);
	}
}

/* ------------------------------------------------------------ v2 */

TEST(v2_tcp4)
{
	struct v2 v;
	struct proxy_hdr h;
	const char *why;
	size_t n;

	v2_tcp4(&v);
	n = v2_end(&v);
	ASSERT_EQ(n, 28);
	ASSERT_EQ(parse(v.b, n, ANY, &h, &why), 28);
	ASSERT_EQ(h.version, 2);
	ASSERT(!h.local && !h.health_check && !h.ssl);
	ASSERT_EQ(h.family, AF_INET);
	ASSERT_STREQ(addr_text(&h.src), "192.168.0.1:56324");
	ASSERT_STREQ(addr_text(&h.dst), "192.168.0.11:443");
	ASSERT_STREQ(h.authority, "");
	ASSERT_EQ(parse(v.b, n, PROXY_V2, &h, &why), 28);
	ASSERT(need_more_at_every_split(v.b, n, ANY));
	ASSERT(need_more_at_every_split(v.b, n, PROXY_V2));
}

TEST(v2_tcp6)
{
	struct v2 v;
	struct proxy_hdr h;
	const char *why;
	uint8_t a[36] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1, [16] = 0x20, 0x01, 0x0d, 0xb8, [31] = 2, 0, 80, 1, 0 };
	size_t n;

	v2_start(&v, 0x21, 0x21);
	put(&v, a, sizeof(a));
	n = v2_end(&v);
	ASSERT_EQ(n, 52);
	ASSERT_EQ(parse(v.b, n, ANY, &h, &why), 52);
	ASSERT_EQ(h.family, AF_INET6);
	ASSERT_STREQ(addr_text(&h.src), "[2001:db8::1]:80");
	ASSERT_STREQ(addr_text(&h.dst), "[2001:db8::2]:256");
	ASSERT(need_more_at_every_split(v.b, n, ANY));
}

TEST(v2_unix)
{
	struct v2 v;
	struct proxy_hdr h;
	const char *why;
	uint8_t a[216] = { 0 };
	const struct sockaddr_un *src = (const struct sockaddr_un *)&h.src, *dst = (const struct sockaddr_un *)&h.dst;
	size_t n;

	memcpy(a, "/run/client.sock", 16);
	a[108] = '\0'; /* abstract: NUL, then the name */
	memcpy(a + 109, "abstract", 8);
	v2_start(&v, 0x21, 0x31);
	put(&v, a, sizeof(a));
	n = v2_end(&v);
	ASSERT_EQ(n, 232);
	ASSERT_EQ(parse(v.b, n, ANY, &h, &why), 232);
	ASSERT_EQ(h.family, AF_UNIX);
	ASSERT(!h.local);
	ASSERT_EQ(src->sun_family, AF_UNIX);
	ASSERT_STREQ(src->sun_path, "/run/client.sock");
	ASSERT(dst->sun_path[0] == '\0' && memcmp(dst->sun_path + 1, "abstract", 8) == 0);
	ASSERT(need_more_at_every_split(v.b, n, ANY));

	/* 108 bytes without a NUL: still a string, the storage ends it. */
	memset(v.b + 16, 'p', 216);
	ASSERT_EQ(parse(v.b, n, ANY, &h, &why), 232);
	ASSERT_EQ(strlen(src->sun_path), 108);
	ASSERT_EQ(strlen(dst->sun_path), 108);
}

TEST(v2_local_is_a_health_check)
{
	struct v2 v;
	struct proxy_hdr h;
	const char *why;
	size_t n;

	/* What HAProxy sends for its checks: LOCAL, UNSPEC, no address. */
	v2_start(&v, 0x20, 0x00);
	n = v2_end(&v);
	ASSERT_EQ(n, 16);
	ASSERT_EQ(parse(v.b, n, ANY, &h, &why), 16);
	ASSERT_EQ(h.version, 2);
	ASSERT(h.local && h.health_check);
	ASSERT_EQ(h.family, AF_UNSPEC);
	ASSERT(need_more_at_every_split(v.b, n, ANY));

	/* "must not assume zero is presented for LOCAL": the family's address
	 * block is skipped, and the family, whatever it is, ignored (even
	 * DGRAM); the TLVs after the block are read. */
	for (uint8_t fam = 0x00; fam <= 0x32; fam++) {
		static const size_t block[4] = { 0, 12, 36, 216 };

		if ((fam >> 4) > 3 || (fam & 15) > 2)
			continue;
		v2_start(&v, 0x20, fam);
		memset(v.b + v.n, 0xff, block[fam >> 4]); /* junk as TLVs */
		v.n += block[fam >> 4];
		put_tlv(&v, 0x02, "local.example", 13);
		n = v2_end(&v);
		if (parse(v.b, n, ANY, &h, &why) != (int)n)
			FAIL_AT("LOCAL %#x: %s", fam, why);
		ASSERT(h.local && h.health_check);
		ASSERT_EQ(h.family, AF_UNSPEC);
		ASSERT_STREQ(h.authority, "local.example");
	}
	/* A family whose addresses do not fit: the block is ignored. */
	v2_start(&v, 0x20, 0x31);
	put_tcp4(&v);
	n = v2_end(&v);
	ASSERT_EQ(parse(v.b, n, ANY, &h, &why), 28);
	ASSERT(h.local && h.health_check);
	/* LOCAL carries TLVs too; they are read. */
	v2_start(&v, 0x20, 0x00);
	put_tlv(&v, 0x02, "example.com", 11);
	n = v2_end_crc(&v);
	ASSERT_EQ(parse(v.b, n, ANY, &h, &why), (int)n);
	ASSERT(h.health_check);
	ASSERT_STREQ(h.authority, "example.com");
	ASSERT(need_more_at_every_split(v.b, n, ANY));
}

TEST(v2_proxy_unspec_is_local)
{
	struct v2 v;
	struct proxy_hdr h;
	const char *why;
	size_t n;

	v2_start(&v, 0x21, 0x00);
	put_tlv(&v, 0x04, "", 0);
	n = v2_end(&v);
	ASSERT_EQ(parse(v.b, n, ANY, &h, &why), 19);
	ASSERT(h.local && !h.health_check);
	ASSERT_EQ(h.family, AF_UNSPEC);
}

TEST(v2_every_tlv)
{
	static const uint8_t ssl[] = {
		0x01, 0, 0,  0,    0,                                                  /* PP2_CLIENT_SSL, verified */
		0x21, 0, 7,  'T',  'L',  'S',  'v', '1', '.', '3',                     /* VERSION */
		0x22, 0, 11, 'e',  'x',  'a',  'm', 'p', 'l', 'e', '.', 'c', 'o', 'm', /* CN */
		0x23, 0, 6,  'A',  'E',  'S',  '1', '2', '8',                          /* CIPHER */
		0x24, 0, 10, 'R',  'S',  'A',  '-', 'S', 'H', 'A', '2', '5', '6',      /* SIG_ALG */
		0x25, 0, 7,  'R',  'S',  'A',  '2', '0', '4', '8',                     /* KEY_ALG */
		0x26, 0, 6,  'X',  '2',  '5',  '5', '1', '9',                          /* GROUP */
		0x27, 0, 4,  'r',  's',  'a',  'e',                                    /* SIG_SCHEME */
		0x28, 0, 3,  0x30, 0x01, 0x00,                                         /* CLIENT_CERT */
		0x7f, 0, 0,                                                            /* unknown */
	};
	uint8_t uid[128];
	struct v2 v;
	struct proxy_hdr h;
	const char *why;
	size_t n;

	memset(uid, 0xee, sizeof(uid));
	v2_tcp4(&v);
	put_tlv(&v, 0x01, "\x02h2", 3);           /* ALPN */
	put_tlv(&v, 0x04, "\0\0\0\0", 4);         /* NOOP */
	put_tlv(&v, 0x02, "www.example.com", 15); /* AUTHORITY */
	put_tlv(&v, 0x05, uid, sizeof(uid));      /* UNIQUE_ID */
	put_tlv(&v, 0x20, ssl, sizeof(ssl));      /* SSL */
	put_tlv(&v, 0x30, "blue", 4);             /* NETNS */
	put_tlv(&v, 0xe0, "custom", 6);           /* custom range */
	put_tlv(&v, 0xf0, "", 0);                 /* experimental */
	put_tlv(&v, 0xff, "future", 6);           /* reserved */
	n = v2_end_crc(&v);
	ASSERT_EQ(parse(v.b, n, ANY, &h, &why), (int)n);
	ASSERT_STREQ(h.authority, "www.example.com");
	ASSERT(h.ssl);
	ASSERT_STREQ(h.tls_version, "TLSv1.3");
	ASSERT_STREQ(addr_text(&h.src), "192.168.0.1:56324");
	ASSERT(need_more_at_every_split(v.b, n, ANY));
}

TEST(v2_ssl_without_tls)
{
	/* HAProxy's send-proxy-v2-ssl for a plain client: flags 0, no sub-TLVs. */
	static const uint8_t plain[] = { 0, 0, 0, 0, 1 };
	static const uint8_t version_no_flag[] = { 0x02, 0, 0, 0, 0, 0x21, 0, 7, 'T', 'L', 'S', 'v', '1', '.', '2' };
	struct v2 v;
	struct proxy_hdr h;
	const char *why;
	size_t n;

	v2_tcp4(&v);
	put_tlv(&v, 0x20, plain, sizeof(plain));
	n = v2_end(&v);
	ASSERT_EQ(parse(v.b, n, ANY, &h, &why), (int)n);
	ASSERT(!h.ssl);
	ASSERT_STREQ(h.tls_version, "");
	/* A version with no PP2_CLIENT_SSL is no TLS. */
	v2_tcp4(&v);
	put_tlv(&v, 0x20, version_no_flag, sizeof(version_no_flag));
	n = v2_end(&v);
	ASSERT_EQ(parse(v.b, n, ANY, &h, &why), (int)n);
	ASSERT(!h.ssl);
	ASSERT_STREQ(h.tls_version, "");
}

TEST(v2_authority_text)
{
	static const struct {
		const char *s;
		bool ok;
	} cases[] = {
		{ "example.com", true },
		{ "xn--bcher-kva.example", true },
		{ "b\303\274cher.example", true },    /* ü */
		{ "\xe2\x82\xac.example", true },     /* € */
		{ "\xf0\x9f\x98\x80.example", true }, /* U+1F600 */
		{ "host:8443", true },
		{ "a b", true },
		{ "", true },
		{ "evil\nPOOLD_REMOTE=1.2.3.4", false },
		{ "tab\there", false },
		{ "del\x7f", false },
		{ "esc\x1b[31m", false },
		{ "c1\xc2\x85", false }, /* NEL */
		{ "c1\xc2\x9b", false }, /* CSI */
		{ "overlong\xc0\xae", false },
		{ "overlong\xe0\x80\xae", false },
		{ "overlong\xe0\x82\xa0", false },     /* U+00A0 in three bytes */
		{ "overlong\xf0\x80\xa0\x80", false }, /* U+0800 in four */
		{ "surrogate\xed\xa0\x80", false },
		{ "big\xf4\x90\x80\x80", false },
		{ "cut\xe2\x82", false },
		{ "lone\x80", false },
		{ "not continued\xc3(", false },
		{ "latin1\xfc", false },
	};
	struct v2 v;
	struct proxy_hdr h;
	const char *why;
	size_t n;

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		v2_tcp4(&v);
		put_tlv(&v, 0x02, cases[i].s, strlen(cases[i].s));
		n = v2_end(&v);
		if (cases[i].ok) {
			if (parse(v.b, n, ANY, &h, &why) != (int)n || strcmp(h.authority, cases[i].s) != 0)
				FAIL_AT("case %zu refused: %s", i, why);
		} else if (!error_from(v.b, n, n, -EBADMSG, "bad v2 header: AUTHORITY TLV")) {
			FAIL_AT("case %zu", i);
		}
	}
	/* NUL inside. */
	v2_tcp4(&v);
	put_tlv(&v, 0x02, "a\0b", 3);
	n = v2_end(&v);
	ASSERT(error_from(v.b, n, n, -EBADMSG, "bad v2 header: AUTHORITY TLV"));
}

TEST(v2_authority_length)
{
	char name[300];
	struct v2 v;
	struct proxy_hdr h;
	const char *why;
	size_t n;

	memset(name, 'a', sizeof(name));
	v2_tcp4(&v);
	put_tlv(&v, 0x02, name, 255);
	n = v2_end(&v);
	ASSERT_EQ(parse(v.b, n, ANY, &h, &why), (int)n);
	ASSERT_EQ(strlen(h.authority), 255);
	/* 256: refused as soon as the TLV's length is in. */
	v2_tcp4(&v);
	put_tlv(&v, 0x02, name, 256);
	n = v2_end(&v);
	ASSERT(error_from(v.b, n, 28 + 3, -EBADMSG, "bad v2 header: AUTHORITY TLV"));
	/* Twice. */
	v2_tcp4(&v);
	put_tlv(&v, 0x02, "a", 1);
	put_tlv(&v, 0x02, "a", 1);
	n = v2_end(&v);
	ASSERT(error_from(v.b, n, 32 + 3, -EBADMSG, "bad v2 header: AUTHORITY TLV"));
}

TEST(v2_tlv_bounds)
{
	struct v2 v;
	struct proxy_hdr h;
	const char *why;
	size_t n;

	/* A TLV one byte longer than what is left: refused when its length is in. */
	v2_tcp4(&v);
	put_tlv(&v, 0x04, "abcd", 4);
	n = v2_end(&v);
	v.b[30]++;
	ASSERT(error_from(v.b, n, 31, -EBADMSG, "bad v2 header: TLV overruns the header"));
	/* ...even when the bytes after the header could carry it. */
	memcpy(v.b + n, "xxxxxxxx", 8);
	ASSERT(error_from(v.b, n + 8, 31, -EBADMSG, "bad v2 header: TLV overruns the header"));
	/* Its length the largest there is. */
	v.b[29] = v.b[30] = 0xff;
	ASSERT(error_from(v.b, n, 31, -EBADMSG, "bad v2 header: TLV overruns the header"));
	/* One or two bytes left after the addresses: no room for a TLV head. */
	for (int extra = 1; extra <= 2; extra++) {
		v2_tcp4(&v);
		put(&v, "\x04\x00", (size_t)extra);
		n = v2_end(&v);
		ASSERT(error_from(v.b, n, 28, -EBADMSG, "bad v2 header: TLV overruns the header"));
	}
	/* A TLV exactly to the end; an empty one at the end. */
	v2_tcp4(&v);
	put_tlv(&v, 0xe1, "abc", 3);
	put_tlv(&v, 0x04, "", 0);
	n = v2_end(&v);
	ASSERT_EQ(parse(v.b, n, ANY, &h, &why), (int)n);
	ASSERT(need_more_at_every_split(v.b, n, ANY));
}

TEST(v2_ssl_bounds)
{
	static const uint8_t cases[][24] = {
		/* length, value... */
		{ 4, 1, 0, 0, 0 },                /* shorter than flags + verify */
		{ 8, 1, 0, 0, 0, 0, 0x21, 0, 1 }, /* sub-TLV past the SSL TLV */
		{ 7, 1, 0, 0, 0, 0, 0x21, 0 },    /* sub-TLV head cut */
		{ 6, 1, 0, 0, 0, 0, 0x21 },       /* sub-TLV head cut */
	};
	uint8_t version[48];
	struct v2 v;
	struct proxy_hdr h;
	const char *why;
	size_t n;

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		v2_tcp4(&v);
		put_tlv(&v, 0x20, cases[i] + 1, cases[i][0]);
		put_tlv(&v, 0x04, "pad", 3); /* so the SSL TLV's overrun stays inside the header */
		n = v2_end(&v);
		if (!error_from(v.b, n, 31 + cases[i][0], -EBADMSG, "bad v2 header: SSL TLV"))
			FAIL_AT("case %zu", i);
	}
	/* The version: 31 characters fit, 32 do not, nor control characters. */
	memset(version, 'v', sizeof(version));
	version[0] = 1;
	version[1] = version[2] = version[3] = version[4] = 0;
	version[5] = 0x21;
	version[6] = 0;
	for (uint8_t len = 30; len <= 33; len++) {
		version[7] = len;
		v2_tcp4(&v);
		put_tlv(&v, 0x20, version, 8 + (size_t)len);
		n = v2_end(&v);
		if (len < 32) {
			ASSERT_EQ(parse(v.b, n, ANY, &h, &why), (int)n);
			ASSERT_EQ(strlen(h.tls_version), len);
		} else {
			ASSERT(error_from(v.b, n, n, -EBADMSG, "bad v2 header: SSL version"));
		}
	}
	version[7] = 7;
	memcpy(version + 8, "TLS\n1.3", 7);
	v2_tcp4(&v);
	put_tlv(&v, 0x20, version, 15);
	n = v2_end(&v);
	ASSERT(error_from(v.b, n, n, -EBADMSG, "bad v2 header: SSL version"));
	/* Two versions, two SSL TLVs. */
	memcpy(version + 8, "TLSv1.3", 7);
	memcpy(version + 15, version + 5, 10);
	v2_tcp4(&v);
	put_tlv(&v, 0x20, version, 25);
	n = v2_end(&v);
	ASSERT(error_from(v.b, n, n, -EBADMSG, "bad v2 header: SSL version"));
	v2_tcp4(&v);
	put_tlv(&v, 0x20, version, 15);
	put_tlv(&v, 0x20, version, 15);
	n = v2_end(&v);
	ASSERT(error_from(v.b, n, 46 + 3, -EBADMSG, "bad v2 header: SSL TLV"));
}

TEST(v2_crc32c)
{
	struct v2 v;
	struct proxy_hdr h;
	const char *why;
	size_t n;

	ASSERT_EQ(crc32c_ref((const uint8_t *)"123456789", 9), 0xe3069283); /* the reference's check value */
	v2_tcp4(&v);
	put_tlv(&v, 0x02, "example.com", 11);
	n = v2_end_crc(&v);
	ASSERT_EQ(parse(v.b, n, ANY, &h, &why), (int)n);
	ASSERT(need_more_at_every_split(v.b, n, ANY));
	/* Any flipped bit, in the checksum or anywhere it covers (address
	 * bytes, so the header stays well-formed otherwise). */
	for (size_t at = 16; at < 28; at++) {
		v.b[at] ^= 0x10;
		if (!error_from(v.b, n, n, -EBADMSG, "bad v2 header: CRC32C mismatch"))
			FAIL_AT("byte %zu flipped", at);
		v.b[at] ^= 0x10;
	}
	v.b[n - 1] ^= 1;
	ASSERT(error_from(v.b, n, n, -EBADMSG, "bad v2 header: CRC32C mismatch"));
	/* The CRC TLV first, the others after it. */
	v2_tcp4(&v);
	n = v2_end_crc(&v);
	ASSERT_EQ(parse(v.b, n, ANY, &h, &why), (int)n);
	/* Not 4 bytes; twice. */
	v2_tcp4(&v);
	put_tlv(&v, 0x03, "abc", 3);
	n = v2_end(&v);
	ASSERT(error_from(v.b, n, 31, -EBADMSG, "bad v2 header: CRC32C TLV"));
	v2_tcp4(&v);
	put_tlv(&v, 0x03, "abcde", 5);
	n = v2_end(&v);
	ASSERT(error_from(v.b, n, 31, -EBADMSG, "bad v2 header: CRC32C TLV"));
	v2_tcp4(&v);
	put_tlv(&v, 0x03, "abcd", 4);
	n = v2_end_crc(&v);
	ASSERT(error_from(v.b, n, 35 + 3, -EBADMSG, "bad v2 header: CRC32C TLV"));
}

/* The checksum is taken four bytes at a time with a byte tail, over three
 * pieces (before the CRC's value, its zeroed value, after it): every length
 * mod 4 and every place of the CRC TLV. */
TEST(v2_crc32c_every_alignment)
{
	static const uint8_t pad[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	struct v2 v;
	struct proxy_hdr h;
	const char *why;
	size_t n;

	for (size_t before = 0; before < 8; before++) {
		for (size_t after = 0; after < 8; after++) {
			static const uint8_t zero[4];
			size_t at;
			uint32_t crc;

			v2_tcp4(&v);
			put_tlv(&v, 0xe1, pad, before);
			at = v.n + 3;
			put_tlv(&v, 0x03, zero, 4);
			put_tlv(&v, 0xe2, pad, after);
			n = v2_end(&v);
			crc = crc32c_ref(v.b, n);
			v.b[at] = (uint8_t)(crc >> 24);
			v.b[at + 1] = (uint8_t)(crc >> 16);
			v.b[at + 2] = (uint8_t)(crc >> 8);
			v.b[at + 3] = (uint8_t)crc;
			if (parse(v.b, n, ANY, &h, &why) != (int)n)
				FAIL_AT("%zu bytes before, %zu after: %s", before, after, why);
			/* The last byte (the tail, or a word), or the empty TLV's type. */
			v.b[after ? n - 1 : n - 3] ^= 0x01;
			if (!error_from(v.b, n, n, -EBADMSG, "bad v2 header: CRC32C mismatch"))
				FAIL_AT("%zu bytes before, %zu after: a flipped last byte taken", before, after);
		}
	}
}

TEST(v2_errors)
{
	static const struct {
		uint8_t ver_cmd, fam;
		const char *reason;
		size_t at;
	} bad[] = {
		{ 0x11, 0x11, "bad v2 header: version", 13 },
		{ 0x31, 0x11, "bad v2 header: version", 13 },
		{ 0x01, 0x11, "bad v2 header: version", 13 },
		{ 0x22, 0x11, "bad v2 header: command", 13 },
		{ 0x2f, 0x11, "bad v2 header: command", 13 },
		{ 0x21, 0x41, "bad v2 header: address family", 14 },
		{ 0x21, 0xf1, "bad v2 header: address family", 14 },
		{ 0x21, 0x13, "bad v2 header: address family", 14 },
		{ 0x20, 0x41, "bad v2 header: address family", 14 },
		{ 0x20, 0x13, "bad v2 header: address family", 14 },
		{ 0x21, 0x12, "bad v2 header: datagram transport", 14 },
		{ 0x21, 0x22, "bad v2 header: datagram transport", 14 },
		{ 0x21, 0x32, "bad v2 header: datagram transport", 14 },
		{ 0x21, 0x02, "bad v2 header: datagram transport", 14 },
		{ 0x21, 0x01, "bad v2 header: address family", 14 },
		{ 0x21, 0x10, "bad v2 header: address family", 14 },
		{ 0x21, 0x20, "bad v2 header: address family", 14 },
		{ 0x21, 0x30, "bad v2 header: address family", 14 },
	};
	struct v2 v;
	size_t n;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		v2_start(&v, bad[i].ver_cmd, bad[i].fam);
		put_tcp4(&v);
		n = v2_end(&v);
		if (!error_from(v.b, n, bad[i].at, -EBADMSG, bad[i].reason))
			FAIL_AT("case %zu", i);
	}
	/* The signature, byte by byte: wrong at once. */
	for (size_t at = 0; at < 12; at++) {
		v2_tcp4(&v);
		n = v2_end(&v);
		v.b[at] ^= 0x40;
		if (!error_from(v.b, n, at + 1, -EBADMSG, "no PROXY header"))
			FAIL_AT("signature byte %zu", at);
	}
	/* Address blocks too short for the family, known from the 16th byte. */
	{
		static const uint8_t fams[] = { 0x11, 0x21, 0x31 };
		static const size_t need[] = { 12, 36, 216 };

		for (size_t i = 0; i < 3; i++) {
			v2_start(&v, 0x21, fams[i]);
			memset(v.b + 16, 0, need[i]);
			v.n += need[i] - 1;
			n = v2_end(&v);
			if (!error_from(v.b, n, 16, -EBADMSG, "bad v2 header: address block too short"))
				FAIL_AT("family %#x", fams[i]);
		}
	}
}

TEST(v2_at_most_header_max)
{
	struct v2 v;
	struct proxy_hdr h;
	const char *why;
	uint8_t pad[PROXY_HEADER_MAX];
	size_t n;

	/* Exactly PROXY_HEADER_MAX bytes: taken. */
	memset(pad, 'n', sizeof(pad));
	v2_tcp4(&v);
	put_tlv(&v, 0x04, pad, PROXY_HEADER_MAX - 28 - 3);
	n = v2_end(&v);
	ASSERT_EQ(n, PROXY_HEADER_MAX);
	ASSERT_EQ(parse(v.b, n, ANY, &h, &why), PROXY_HEADER_MAX);
	ASSERT(need_more_at_every_split(v.b, n, ANY));
	/* One more: refused once the length field is in, not after 1 KiB. */
	v2_tcp4(&v);
	put_tlv(&v, 0x04, pad, PROXY_HEADER_MAX - 28 - 2);
	n = v2_end(&v);
	ASSERT_EQ(n, PROXY_HEADER_MAX + 1);
	ASSERT(error_from(v.b, n, 16, -E2BIG, "v2 header longer than 1024 bytes"));
	/* The largest length field there is. */
	v.b[14] = v.b[15] = 0xff;
	ASSERT(error_from(v.b, 16, 16, -E2BIG, "v2 header longer than 1024 bytes"));
}

/* ------------------------------------------------------------ both */

TEST(versions_mask)
{
	static const char v1[] = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
	struct v2 v;
	struct proxy_hdr h;
	const char *why;
	size_t n;

	v2_tcp4(&v);
	n = v2_end(&v);
	ASSERT_EQ(parse(v1, 47, PROXY_V1, &h, &why), 47);
	ASSERT_EQ(parse(v.b, n, PROXY_V2, &h, &why), 28);
	/* A valid header of the other version: refused once complete, so the
	 * log says what the balancer speaks. */
	ASSERT_EQ(parse(v1, 46, PROXY_V2, &h, &why), 0);
	ASSERT_EQ(parse(v1, 47, PROXY_V2, &h, &why), -EPROTONOSUPPORT);
	ASSERT_STREQ(why, "v1 header where only v2 is accepted");
	ASSERT_EQ(parse(v.b, n - 1, PROXY_V1, &h, &why), 0);
	ASSERT_EQ(parse(v.b, n, PROXY_V1, &h, &why), -EPROTONOSUPPORT);
	ASSERT_STREQ(why, "v2 header where only v1 is accepted");
	/* A malformed one is malformed whatever the mask. */
	ASSERT_EQ(parse("PROXY TCP4 x", 12, PROXY_V2, &h, &why), -EBADMSG);
	ASSERT_EQ(parse("GET", 3, PROXY_V2, &h, &why), -EBADMSG);
	ASSERT_STREQ(why, "no PROXY header");
	/* No version, or unknown bits: the caller's mistake. */
	ASSERT_EQ(parse(v1, 47, 0, &h, &why), -EINVAL);
	ASSERT_EQ(parse(v1, 47, 4 | PROXY_V1, &h, &why), -EINVAL);
	ASSERT(why != NULL);
	/* *ret untouched on failure; ret_reason may be NULL. */
	memset(&h, 0x5a, sizeof(h));
	ASSERT_EQ(proxy_parse("GET", 3, ANY, &h, NULL), -EBADMSG);
	ASSERT_EQ(((uint8_t *)&h)[0], 0x5a);
	ASSERT_EQ(proxy_parse(v1, 20, ANY, &h, NULL), 0);
	ASSERT_EQ(((uint8_t *)&h)[0], 0x5a);
}

TEST(first_byte_decides)
{
	struct proxy_hdr h;
	const char *why;

	ASSERT_EQ(parse("", 0, ANY, &h, &why), 0);
	ASSERT_EQ(parse("P", 1, ANY, &h, &why), 0);
	ASSERT_EQ(parse("\r", 1, ANY, &h, &why), 0);
	for (int c = 0; c < 256; c++) {
		uint8_t b = (uint8_t)c;

		if (c == 'P' || c == '\r')
			continue;
		if (parse(&b, 1, ANY, &h, &why) != -EBADMSG || strcmp(why, "no PROXY header") != 0)
			FAIL_AT("byte %#x", c);
	}
	/* The other protocols the spec's signature was chosen against. */
	ASSERT(error_from("\x16\x03\x01\x02\x00", 5, 1, -EBADMSG, "no PROXY header")); /* TLS */
	ASSERT(error_from_str("SSH-2.0-OpenSSH", 1, "no PROXY header"));
	ASSERT(error_from_str("\r\n\r\nGET", 5, "no PROXY header")); /* blank lines: the 5th byte is not NUL */
}

/* As the reactor feeds it: one byte per read, the client's bytes right behind. */
TEST(byte_at_a_time)
{
	static const char v1[] = "PROXY TCP6 2001:db8::1 ::1 40000 22\r\nSSH-2.0-x\r\n";
	uint8_t got[PROXY_HEADER_MAX];
	struct v2 v;
	struct proxy_hdr h;
	const char *why;
	size_t n, have;
	int r = 0;

	for (have = 0; have < sizeof(v1) - 1 && r == 0; have++) {
		got[have] = (uint8_t)v1[have];
		r = parse(got, have + 1, ANY, &h, &why);
	}
	ASSERT_EQ(r, 37);
	ASSERT_EQ(have, 37);
	ASSERT_STREQ(addr_text(&h.src), "[2001:db8::1]:40000");

	v2_tcp4(&v);
	put_tlv(&v, 0x02, "example.com", 11);
	n = v2_end_crc(&v);
	memcpy(v.b + n, "HELO", 4);
	r = 0;
	for (have = 0; have < n + 4 && r == 0; have++) {
		got[have] = v.b[have];
		r = parse(got, have + 1, ANY, &h, &why);
	}
	ASSERT_EQ(r, (int)n);
	ASSERT_EQ(have, n);
	ASSERT_STREQ(h.authority, "example.com");
}

/* The reactor reads at most PROXY_HEADER_MAX bytes: that many always give a
 * verdict, never "need more". */
TEST(full_buffer_always_decides)
{
	uint8_t b[PROXY_HEADER_MAX];
	struct proxy_hdr h;
	const char *why;

	memset(b, ' ', sizeof(b));
	memcpy(b, "PROXY UNKNOWN", 13);
	ASSERT(parse(b, sizeof(b), ANY, &h, &why) < 0);
	memcpy(b, "PROXY TCP4 1.2.3.4 ", 19);
	ASSERT(parse(b, sizeof(b), ANY, &h, &why) < 0);
	for (size_t len = 0; len <= 0xffff; len += 7) {
		memset(b, 0, sizeof(b));
		memcpy(b, SIG, 12);
		b[12] = 0x21;
		b[13] = 0x11;
		b[14] = (uint8_t)(len >> 8);
		b[15] = (uint8_t)len;
		if (parse(b, sizeof(b), ANY, &h, &why) == 0)
			FAIL_AT("length %zu: need more", len);
	}
}
