/* proxy.c - the PROXY protocol header (HAProxy's doc/proxy-protocol.txt), v1
 * text and v2 binary. Pure and stateless: the caller passes every byte it has
 * so far and gets a verdict (a header, "need more", or why not); it keeps no
 * state between calls, so it is safe from any thread and fuzzable as it is.
 * Never guesses: the first byte picks the version, and every byte or field is
 * checked as soon as it arrives, so garbage is refused at once instead of
 * waiting for the timeout. v1 addresses are read by exact scanners (the same
 * language as glibc's inet_pton, which the unit and fuzz tests compare them
 * with) because inet_pton cannot tell a valid prefix from garbage. */
#include "proxy.h"
#include "util.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/un.h>

#define V2_FIXED 16 /* signature, version and command, family, length */
#define TLV_HEAD 3  /* type, 16-bit length */
/* The spec's names. */
#define PP2_TYPE_AUTHORITY      0x02
#define PP2_TYPE_CRC32C         0x03
#define PP2_TYPE_SSL            0x20
#define PP2_SUBTYPE_SSL_VERSION 0x21
#define PP2_CLIENT_SSL          0x01
#define SSL_FIXED               5 /* the SSL TLV's client flags and 32-bit verify */
#define STR(x)                  #x
#define XSTR(x)                 STR(x)

static const uint8_t v2_signature[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

/* A scanner's verdict on a token: BAD (no completion can be valid), NEED (the
 * input ended inside a token that can still become valid) or OK (a valid
 * token, ended by a byte that cannot continue it). */
enum { SCAN_BAD = -1, SCAN_NEED = 0, SCAN_OK = 1 };

/* A dotted quad: four decimal numbers 0..255 without leading zeros (inet_pton's
 * AF_INET language). On OK, *ret_used is the token's length. */
static int scan_ip4(const char *s, size_t n, size_t *ret_used, uint8_t ret[4])
{
	unsigned octets = 0, digits = 0, val = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		char c = s[i];

		if (c >= '0' && c <= '9') {
			if (digits == 0)
				octets++;
			else if (val == 0)
				return SCAN_BAD; /* a leading zero */
			val = val * 10 + (unsigned)(c - '0');
			if (val > 255)
				return SCAN_BAD;
			digits++;
		} else if (c == '.') {
			if (digits == 0 || octets == 4)
				return SCAN_BAD;
			ret[octets - 1] = (uint8_t)val;
			digits = val = 0;
		} else {
			break;
		}
	}
	if (i == n)
		return SCAN_NEED;
	if (octets < 4 || digits == 0)
		return SCAN_BAD;
	ret[3] = (uint8_t)val;
	*ret_used = i;
	return SCAN_OK;
}

/* An IPv6 address in inet_pton's AF_INET6 language: up to eight groups of one
 * to four hex digits, one "::" standing for at least one zero group, and an
 * optional dotted quad for the last two groups. A state is kept only while some
 * completion is valid, which is what makes NEED exact. */
static int scan_ip6(const char *s, size_t n, size_t *ret_used, uint8_t ret[16])
{
	uint16_t g[8] = { 0 };
	unsigned groups = 0, digits = 0, val = 0, max;
	int gap = -1;     /* the group index "::" stands at */
	bool sep = false; /* a single ':' after a group: another must follow */
	size_t i = 0, tok = 0, used;

	if (n > 0 && s[0] == ':') {
		if (n == 1)
			return SCAN_NEED;
		if (s[1] != ':')
			return SCAN_BAD;
		gap = 0;
		i = tok = 2;
	}
	for (; i < n; i++) {
		char c = s[i];
		int h = hex_value(c);

		max = gap >= 0 ? 7 : 8; /* groups the address can hold, "::" aside */
		if (h >= 0) {
			if (digits == 0 && groups >= max)
				return SCAN_BAD;
			if (digits == 4)
				return SCAN_BAD;
			val = val << 4 | (unsigned)h;
			digits++;
			sep = false;
		} else if (c == ':' && digits > 0) {
			g[groups++] = (uint16_t)val;
			digits = val = 0;
			/* Completable by one more group, or by "::" when none yet. */
			if (groups >= max)
				return SCAN_BAD;
			sep = true;
			tok = i + 1;
		} else if (c == ':') {
			/* A second ':' in a row: "::". A third is never valid. */
			if (!sep || gap >= 0)
				return SCAN_BAD;
			gap = (int)groups;
			sep = false;
			tok = i + 1;
		} else if (c == '.' && digits > 0) {
			uint8_t q[4];
			int r;

			/* The last two groups as a dotted quad, from the token's start. */
			if (gap >= 0 ? groups > 5 : groups != 6)
				return SCAN_BAD;
			r = scan_ip4(s + tok, n - tok, &used, q);
			if (r != SCAN_OK)
				return r;
			g[groups++] = (uint16_t)(q[0] << 8 | q[1]);
			g[groups++] = (uint16_t)(q[2] << 8 | q[3]);
			digits = 0;
			i = tok + used;
			break;
		} else {
			break;
		}
	}
	if (i == n)
		return SCAN_NEED;
	if (sep || (i == 0))
		return SCAN_BAD;
	if (digits > 0)
		g[groups++] = (uint16_t)val;
	if (gap >= 0 ? groups > 7 : groups != 8)
		return SCAN_BAD;
	if (gap >= 0) {
		unsigned tail = groups - (unsigned)gap;

		memmove(g + 8 - tail, g + gap, tail * sizeof(g[0]));
		memset(g + gap, 0, (8 - tail - (unsigned)gap) * sizeof(g[0]));
	}
	for (unsigned k = 0; k < 8; k++) {
		ret[2 * k] = (uint8_t)(g[k] >> 8);
		ret[2 * k + 1] = (uint8_t)g[k];
	}
	*ret_used = i;
	return SCAN_OK;
}

/* A port: 0..65535 in decimal, no leading zero. */
static int scan_port(const char *s, size_t n, size_t *ret_used, uint16_t *ret)
{
	unsigned val = 0;
	size_t i;

	for (i = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
		if (i > 0 && val == 0)
			return SCAN_BAD;
		val = val * 10 + (unsigned)(s[i] - '0');
		if (val > 65535)
			return SCAN_BAD;
	}
	if (i == n)
		return SCAN_NEED;
	if (i == 0)
		return SCAN_BAD;
	*ret_used = i;
	*ret = (uint16_t)val;
	return SCAN_OK;
}

/* Parse results inside this file: > 0 a header's length, 0 need more, < 0 an
 * error with *reason set. */
static int bad(const char **reason, const char *why)
{
	*reason = why;
	return -EBADMSG;
}

/* "PROXY TCP4|TCP6 src dst sport dport\r\n" or "PROXY UNKNOWN[ anything]\r\n",
 * single spaces, at most PROXY_V1_MAX bytes. */
static int parse_v1(const char *s, size_t len, struct proxy_hdr *h, const char **reason)
{
	static const char *const protos[] = { "TCP4 ", "TCP6 ", "UNKNOWN" };
	static const char *const field_reason[] = { "bad v1 header: source address",
						    "bad v1 header: destination address", "bad v1 header: source port",
						    "bad v1 header: destination port" };
	size_t n = len < PROXY_V1_MAX ? len : PROXY_V1_MAX, i, used = 0;
	int proto = -1, r;

	for (i = 0; i < 6; i++) {
		if (i == n)
			return 0;
		if (s[i] != "PROXY "[i])
			return bad(reason, "no PROXY header");
	}
	/* The protocol: the one name the bytes so far can still be. */
	for (int k = 0; k < 3 && proto < 0; k++) {
		size_t plen = strlen(protos[k]), avail = n - i < plen ? n - i : plen;

		if (memcmp(s + i, protos[k], avail) == 0)
			proto = k;
	}
	if (proto < 0)
		return bad(reason, "bad v1 header: protocol");
	if (n - i < strlen(protos[proto]))
		goto need;
	i += strlen(protos[proto]);

	if (proto == 2) {
		/* UNKNOWN: a space and anything but CR and LF may follow. */
		if (i < n && s[i] != ' ' && s[i] != '\r' && s[i] != '\n')
			return bad(reason, "bad v1 header: protocol");
		for (; i < n && s[i] != '\r'; i++)
			if (s[i] == '\n')
				return bad(reason, "bad v1 header: line end");
		if (i + 1 >= n)
			goto need;
		if (s[i + 1] != '\n')
			return bad(reason, "bad v1 header: line end");
		h->version = 1;
		h->local = true;
		h->family = AF_UNSPEC;
		return (int)(i + 2);
	}

	bool v6 = proto == 1;
	struct sockaddr_in *sin[2] = { (struct sockaddr_in *)&h->src, (struct sockaddr_in *)&h->dst };
	struct sockaddr_in6 *sin6[2] = { (struct sockaddr_in6 *)&h->src, (struct sockaddr_in6 *)&h->dst };

	for (int f = 0; f < 4; f++) {
		char end = f < 3 ? ' ' : '\r';

		if (f < 2 && v6)
			r = scan_ip6(s + i, n - i, &used, sin6[f]->sin6_addr.s6_addr);
		else if (f < 2)
			r = scan_ip4(s + i, n - i, &used, (uint8_t *)&sin[f]->sin_addr.s_addr);
		else
			r = scan_port(s + i, n - i, &used, v6 ? &sin6[f - 2]->sin6_port : &sin[f - 2]->sin_port);
		if (r == SCAN_NEED)
			goto need;
		if (r == SCAN_BAD || s[i + used] != end)
			return bad(reason, field_reason[f]);
		i += used + 1;
	}
	if (i == n)
		goto need;
	if (s[i] != '\n')
		return bad(reason, "bad v1 header: line end");
	/* The ports were read in host order. */
	for (int k = 0; k < 2; k++) {
		if (v6) {
			sin6[k]->sin6_family = AF_INET6;
			sin6[k]->sin6_port = htons(sin6[k]->sin6_port);
		} else {
			sin[k]->sin_family = AF_INET;
			sin[k]->sin_port = htons(sin[k]->sin_port);
		}
	}
	h->version = 1;
	h->family = v6 ? AF_INET6 : AF_INET;
	return (int)(i + 1);
need:
	/* No CRLF in the first PROXY_V1_MAX bytes: the spec's "invalid line". */
	if (len >= PROXY_V1_MAX)
		return bad(reason, "bad v1 header: longer than " XSTR(PROXY_V1_MAX) " bytes");
	return 0;
}

/* CRC32C (Castagnoli, RFC 4960 appendix B), four bytes at a time ("slicing
 * by 4": about 0.6 ns a byte against 1.9 for a byte at a time, so even a
 * PROXY_HEADER_MAX header keeps within the 2 us a header may cost). Table k
 * maps a byte to the CRC register after that byte and then k zero bytes. The
 * map is linear, so the compiler builds each table from the images of the
 * eight one-bit bytes (CRC_BASISk, checked below against the bit-by-bit
 * definition): nothing is computed at run time. */
#define CRC_STEP(c)      (((c) >> 1) ^ (0x82f63b78u & (0u - ((c)&1u))))
#define CRC_BYTE(c)      CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(c))))))))
#define CRC_ZERO(c)      (((c) >> 8) ^ CRC_BYTE((c)&0xffu)) /* then a zero byte */
#define CRC_BASIS0       0xf26b8303, 0xe13b70f7, 0xc79a971f, 0x8ad958cf, 0x105ec76f, 0x20bd8ede, 0x417b1dbc, 0x82f63b78
#define CRC_BASIS1       0x13a29877, 0x274530ee, 0x4e8a61dc, 0x9d14c3b8, 0x3fc5f181, 0x7f8be302, 0xff17c604, 0xfbc3faf9
#define CRC_BASIS2       0xa541927e, 0x4f6f520d, 0x9edea41a, 0x38513ec5, 0x70a27d8a, 0xe144fb14, 0xc76580d9, 0x8b277743
#define CRC_BASIS3       0xdd45aab8, 0xbf672381, 0x7b2231f3, 0xf64463e6, 0xe964b13d, 0xd725148b, 0xaba65fe7, 0x52a0c93f
#define CRC_BIT(n, i, b) ((n) >> (i)&1u ? (b) : 0u)
#define CRC_LIN(n, a, b, c, d, e, f, g, h)                                                                             \
	(CRC_BIT(n, 0, a) ^ CRC_BIT(n, 1, b) ^ CRC_BIT(n, 2, c) ^ CRC_BIT(n, 3, d) ^ CRC_BIT(n, 4, e) ^                \
	 CRC_BIT(n, 5, f) ^ CRC_BIT(n, 6, g) ^ CRC_BIT(n, 7, h))
#define CRC_LIN_(...) CRC_LIN(__VA_ARGS__)
#define CRC_CHECK0(a, b, c, d, e, f, g, h)                                                                             \
	_Static_assert(a == CRC_BYTE(1u) && b == CRC_BYTE(2u) && c == CRC_BYTE(4u) && d == CRC_BYTE(8u) &&             \
			       e == CRC_BYTE(16u) && f == CRC_BYTE(32u) && g == CRC_BYTE(64u) && h == CRC_BYTE(128u),  \
		       "CRC_BASIS0")
#define CRC_CHECK(a, b, c, d, e, f, g, h, A, B, C, D, E, F, G, H)                                                      \
	_Static_assert(a == CRC_ZERO(A) && b == CRC_ZERO(B) && c == CRC_ZERO(C) && d == CRC_ZERO(D) &&                 \
			       e == CRC_ZERO(E) && f == CRC_ZERO(F) && g == CRC_ZERO(G) && h == CRC_ZERO(H),           \
		       "CRC_BASIS")
#define CRC_CHECK_(...)  CRC_CHECK(__VA_ARGS__)
#define CRC_CHECK0_(...) CRC_CHECK0(__VA_ARGS__)
#define CRC_4(k, n)                                                                                                    \
	CRC_LIN_(n, CRC_BASIS##k), CRC_LIN_((n) + 1, CRC_BASIS##k), CRC_LIN_((n) + 2, CRC_BASIS##k),                   \
		CRC_LIN_((n) + 3, CRC_BASIS##k)
#define CRC_16(k, n) CRC_4(k, n), CRC_4(k, (n) + 4), CRC_4(k, (n) + 8), CRC_4(k, (n) + 12)
#define CRC_64(k, n) CRC_16(k, n), CRC_16(k, (n) + 16), CRC_16(k, (n) + 32), CRC_16(k, (n) + 48)
#define CRC_TABLE(k) CRC_64(k, 0u), CRC_64(k, 64u), CRC_64(k, 128u), CRC_64(k, 192u)
CRC_CHECK0_(CRC_BASIS0);
CRC_CHECK_(CRC_BASIS1, CRC_BASIS0);
CRC_CHECK_(CRC_BASIS2, CRC_BASIS1);
CRC_CHECK_(CRC_BASIS3, CRC_BASIS2);
static const uint32_t crc32c_table[4][256] = { { CRC_TABLE(0) }, { CRC_TABLE(1) }, { CRC_TABLE(2) }, { CRC_TABLE(3) } };

static uint32_t crc32c_update(uint32_t crc, const uint8_t *p, size_t n)
{
	const uint32_t(*t)[256] = crc32c_table;

	for (; n >= 4; p += 4, n -= 4) {
		crc ^= (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
		crc = t[3][crc & 0xff] ^ t[2][crc >> 8 & 0xff] ^ t[1][crc >> 16 & 0xff] ^ t[0][crc >> 24];
	}
	for (; n > 0; p++, n--)
		crc = t[0][(crc ^ *p) & 0xff] ^ (crc >> 8);
	return crc;
}

/* What may go into a journal field as it is: well-formed UTF-8 (no overlong
 * forms, surrogates or code points past U+10FFFF) without control characters
 * (C0, DEL, C1). */
static bool text_ok(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		uint8_t c = s[i];
		uint32_t cp;
		size_t k;

		if (c < 0x80) {
			if (c < 0x20 || c == 0x7f)
				return false;
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			k = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			k = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			k = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (n - i - 1 < k)
			return false;
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + j] & 0x3f);
		}
		if (cp <= 0x9f || (k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += k + 1;
	}
	return true;
}

/* The SSL TLV's value: client flags, verify, then sub-TLVs bounded by it. */
static int parse_ssl(const uint8_t *v, size_t n, struct proxy_hdr *h, const char **reason)
{
	bool have_version = false;

	if (n < SSL_FIXED)
		return bad(reason, "bad v2 header: SSL TLV");
	h->ssl = v[0] & PP2_CLIENT_SSL;
	for (size_t off = SSL_FIXED; off < n;) {
		size_t sublen;

		if (n - off < TLV_HEAD)
			return bad(reason, "bad v2 header: SSL TLV");
		sublen = (size_t)v[off + 1] << 8 | v[off + 2];
		if (sublen > n - off - TLV_HEAD)
			return bad(reason, "bad v2 header: SSL TLV");
		if (v[off] == PP2_SUBTYPE_SSL_VERSION) {
			const uint8_t *s = v + off + TLV_HEAD;

			if (have_version || sublen >= sizeof(h->tls_version))
				return bad(reason, "bad v2 header: SSL version");
			for (size_t k = 0; k < sublen; k++)
				if (s[k] < 0x20 || s[k] > 0x7e)
					return bad(reason, "bad v2 header: SSL version");
			have_version = true;
			if (h->ssl)
				memcpy(h->tls_version, s, sublen);
		}
		off += TLV_HEAD + sublen;
	}
	return 0;
}

/* The 16-byte fixed part, the address block its family implies, then TLVs to
 * the end of the length the header announces. */
static int parse_v2(const uint8_t *p, size_t len, struct proxy_hdr *h, const char **reason)
{
	static const size_t addr_len[4] = { 0, 12, 36, 216 }; /* by family nibble */
	static const int families[4] = { AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX };
	size_t total, avail, off, crc_at = 0;
	unsigned cmd, fam, proto;
	bool seen_authority = false, seen_ssl = false;

	for (size_t i = 0; i < sizeof(v2_signature); i++) {
		if (i == len)
			return 0;
		if (p[i] != v2_signature[i])
			return bad(reason, "no PROXY header");
	}
	if (len < 13)
		return 0;
	if (p[12] >> 4 != 2)
		return bad(reason, "bad v2 header: version");
	cmd = p[12] & 0xf;
	if (cmd > 1)
		return bad(reason, "bad v2 header: command");
	if (len < 14)
		return 0;
	fam = p[13] >> 4;
	proto = p[13] & 0xf;
	if (fam > 3 || proto > 2)
		return bad(reason, "bad v2 header: address family");
	/* PROXY: TCP4, TCP6 and UNIX streams, or UNSPEC for "use the connection's
	 * own". A datagram header on a stream connection is a confused balancer;
	 * an unspecified transport leaves where the TLVs start in doubt. LOCAL
	 * ignores the family, as the spec says. */
	if (cmd == 1 && proto == 2)
		return bad(reason, "bad v2 header: datagram transport");
	if (cmd == 1 && (fam == 0) != (proto == 0))
		return bad(reason, "bad v2 header: address family");
	if (len < V2_FIXED)
		return 0;
	total = V2_FIXED + ((size_t)p[14] << 8 | p[15]);
	if (total > PROXY_HEADER_MAX) {
		*reason = "v2 header longer than " XSTR(PROXY_HEADER_MAX) " bytes";
		return -E2BIG;
	}
	off = V2_FIXED + addr_len[fam];
	if (off > total) {
		if (cmd == 1)
			return bad(reason, "bad v2 header: address block too short");
		off = total; /* LOCAL with no room for its family's addresses: ignore the block */
	}
	avail = len < total ? len : total;
	if (avail < off)
		return 0;
	h->version = 2;
	h->family = families[fam];
	if (cmd == 0 || fam == 0) {
		h->local = true;
		h->health_check = cmd == 0;
		h->family = AF_UNSPEC;
	} else if (fam == 1) {
		struct sockaddr_in *src = (struct sockaddr_in *)&h->src, *dst = (struct sockaddr_in *)&h->dst;

		src->sin_family = dst->sin_family = AF_INET;
		memcpy(&src->sin_addr, p + 16, 4);
		memcpy(&dst->sin_addr, p + 20, 4);
		memcpy(&src->sin_port, p + 24, 2);
		memcpy(&dst->sin_port, p + 26, 2);
	} else if (fam == 2) {
		struct sockaddr_in6 *src = (struct sockaddr_in6 *)&h->src, *dst = (struct sockaddr_in6 *)&h->dst;

		src->sin6_family = dst->sin6_family = AF_INET6;
		memcpy(&src->sin6_addr, p + 16, 16);
		memcpy(&dst->sin6_addr, p + 32, 16);
		memcpy(&src->sin6_port, p + 48, 2);
		memcpy(&dst->sin6_port, p + 50, 2);
	} else {
		struct sockaddr_un *src = (struct sockaddr_un *)&h->src, *dst = (struct sockaddr_un *)&h->dst;

		_Static_assert(sizeof(src->sun_path) == 108, "sun_path is the header's 108 bytes");
		_Static_assert(sizeof(h->src) > offsetof(struct sockaddr_un, sun_path) + 108, "a NUL follows");
		src->sun_family = dst->sun_family = AF_UNIX;
		memcpy(src->sun_path, p + 16, 108);
		memcpy(dst->sun_path, p + 124, 108);
	}

	/* TLVs: each within the announced length, each value checked once whole. */
	while (off < total) {
		const uint8_t *v;
		size_t vlen;
		int r;

		if (total - off < TLV_HEAD)
			return bad(reason, "bad v2 header: TLV overruns the header");
		if (avail - off < TLV_HEAD)
			return 0;
		vlen = (size_t)p[off + 1] << 8 | p[off + 2];
		if (vlen > total - off - TLV_HEAD)
			return bad(reason, "bad v2 header: TLV overruns the header");
		if (p[off] == PP2_TYPE_AUTHORITY && (seen_authority || vlen >= sizeof(h->authority)))
			return bad(reason, "bad v2 header: AUTHORITY TLV");
		if (p[off] == PP2_TYPE_CRC32C && (crc_at || vlen != 4))
			return bad(reason, "bad v2 header: CRC32C TLV");
		if (p[off] == PP2_TYPE_SSL && seen_ssl)
			return bad(reason, "bad v2 header: SSL TLV");
		if (avail - off - TLV_HEAD < vlen)
			return 0;
		v = p + off + TLV_HEAD;
		switch (p[off]) {
		case PP2_TYPE_AUTHORITY:
			if (!text_ok(v, vlen))
				return bad(reason, "bad v2 header: AUTHORITY TLV");
			memcpy(h->authority, v, vlen);
			seen_authority = true;
			break;
		case PP2_TYPE_CRC32C:
			crc_at = off + TLV_HEAD;
			break;
		case PP2_TYPE_SSL:
			r = parse_ssl(v, vlen, h, reason);
			if (r < 0)
				return r;
			seen_ssl = true;
			break;
		default:
			break; /* ALPN, NOOP, UNIQUE_ID, NETNS, custom: skipped */
		}
		off += TLV_HEAD + vlen;
	}
	if (len < total)
		return 0; /* the loop above has seen every byte to total; kept as the CRC's bound */
	if (crc_at) {
		static const uint8_t zero[4];
		uint32_t crc = UINT32_MAX, sent = (uint32_t)p[crc_at] << 24 | (uint32_t)p[crc_at + 1] << 16 |
						  (uint32_t)p[crc_at + 2] << 8 | p[crc_at + 3];

		/* Over the whole header with the checksum's own bytes as zeros. */
		crc = crc32c_update(crc, p, crc_at);
		crc = crc32c_update(crc, zero, 4);
		crc = crc32c_update(crc, p + crc_at + 4, total - crc_at - 4);
		if ((crc ^ UINT32_MAX) != sent)
			return bad(reason, "bad v2 header: CRC32C mismatch");
	}
	return (int)total;
}

int proxy_parse(const void *buf, size_t len, unsigned versions, struct proxy_hdr *ret, const char **ret_reason)
{
	const uint8_t *p = buf;
	const char *reason = NULL;
	struct proxy_hdr h;
	int r;

	if (versions == 0 || (versions & ~(unsigned)(PROXY_V1 | PROXY_V2))) {
		reason = "no PROXY version to accept";
		r = -EINVAL;
		goto fail;
	}
	if (len == 0)
		return 0;
	memset(&h, 0, sizeof(h));
	if (p[0] == 'P')
		r = parse_v1(buf, len, &h, &reason);
	else if (p[0] == v2_signature[0])
		r = parse_v2(p, len, &h, &reason);
	else
		r = bad(&reason, "no PROXY header");
	if (r == 0)
		return 0;
	if (r > 0 && !(versions & (unsigned)h.version)) {
		reason = h.version == 1 ? "v1 header where only v2 is accepted" : "v2 header where only v1 is accepted";
		r = -EPROTONOSUPPORT;
	}
	if (r > 0) {
		*ret = h;
		return r;
	}
fail:
	if (ret_reason)
		*ret_reason = reason;
	return r;
}
