/* fuzz_proxy.c - libFuzzer target for proxy.c's proxy_parse() (the PROXY
 * protocol header a balancer sends before the client's bytes).
 * Properties, on every prefix of the input as the reactor would see it grow:
 * a result never exceeds the bytes given; "need more" (0) comes only before
 * the verdict, and once there is one (an error or a header) every longer
 * input gives the same one: the same error and reason, or the same length and
 * fields. Errors are -EBADMSG or -E2BIG with a reason. A header is well framed (v1: "PROXY ... \r\n" of at
 * most 107 bytes; v2: the signature and 16 + its length field), a whole
 * header (or PROXY_HEADER_MAX bytes) always gets a verdict, its addresses
 * read back the same once written out again, and its AUTHORITY and TLS
 * version are NUL-terminated, well-formed, with no control character. The versions mask only
 * turns a header of the other version into -EPROTONOSUPPORT.
 * The input is also tried as the TLVs of a v2 TCP4 header, with and without a
 * CRC32C computed here (bit by bit, not proxy.c's table): a correct checksum
 * changes no verdict, a wrong one is refused. And short inputs are tried as a
 * v1 address or port, which must be taken exactly when inet_pton (or a plain
 * port reader) takes them, with the same value. */
#include "../unit/crc32c_ref.h"
#include "proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <locale.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#define ANY (PROXY_V1 | PROXY_V2)

static const uint8_t sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

static bool utf8_locale;

static void fail(const char *what, int r, const char *why)
{
	fprintf(stderr, "fuzz_proxy: %s (result %d, reason %s)\n", what, r, why ? why : "(null)");
	abort();
}

/* NUL-terminated inside its array, and nothing a terminal or the journal
 * would take as control: no C0, DEL or (UTF-8) C1. */
static void check_text(const char *s, size_t cap, bool ascii, const char *what)
{
	const uint8_t *u = (const uint8_t *)s;
	size_t n = strnlen(s, cap);

	if (n == cap)
		fail(what, 0, "not NUL-terminated");
	for (size_t i = 0; i < n; i++) {
		if (u[i] < 0x20 || u[i] == 0x7f || (ascii && u[i] > 0x7e))
			fail(what, u[i], "control byte");
		if (u[i] == 0xc2 && i + 1 < n && u[i + 1] >= 0x80 && u[i + 1] <= 0x9f)
			fail(what, u[i + 1], "C1 control");
	}
	/* Well-formed UTF-8 as glibc decodes it (which takes a little more: code
	 * points past U+10FFFF), when the C.UTF-8 locale is there. */
	if (!ascii && utf8_locale) {
		mbstate_t st;
		wchar_t w;

		memset(&st, 0, sizeof(st));
		for (size_t i = 0, r; i < n; i += r) {
			r = mbrtowc(&w, s + i, n - i, &st);
			if (r == (size_t)-1 || r == (size_t)-2 || r == 0)
				fail(what, (int)i, "not UTF-8");
		}
	}
}

static bool same_hdr(const struct proxy_hdr *a, const struct proxy_hdr *b)
{
	return a->version == b->version && a->local == b->local && a->health_check == b->health_check &&
	       a->family == b->family && memcmp(&a->src, &b->src, sizeof(a->src)) == 0 &&
	       memcmp(&a->dst, &b->dst, sizeof(a->dst)) == 0 && strcmp(a->authority, b->authority) == 0 &&
	       a->ssl == b->ssl && strcmp(a->tls_version, b->tls_version) == 0;
}

/* The header's addresses written out again (v1 text, or a bare v2 header)
 * parse back as the same addresses. */
static void check_round_trip(const struct proxy_hdr *h)
{
	uint8_t b[300];
	struct proxy_hdr back;
	const char *why = NULL;
	int n, r;

	if (h->local || (h->family != AF_INET && h->family != AF_INET6))
		return;
	if (h->version == 1) {
		char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
		unsigned sp, dp;

		if (h->family == AF_INET) {
			const struct sockaddr_in *a = (const void *)&h->src, *z = (const void *)&h->dst;

			inet_ntop(AF_INET, &a->sin_addr, s, sizeof(s));
			inet_ntop(AF_INET, &z->sin_addr, d, sizeof(d));
			sp = ntohs(a->sin_port);
			dp = ntohs(z->sin_port);
		} else {
			const struct sockaddr_in6 *a = (const void *)&h->src, *z = (const void *)&h->dst;

			inet_ntop(AF_INET6, &a->sin6_addr, s, sizeof(s));
			inet_ntop(AF_INET6, &z->sin6_addr, d, sizeof(d));
			sp = ntohs(a->sin6_port);
			dp = ntohs(z->sin6_port);
		}
		n = snprintf((char *)b, sizeof(b), "PROXY TCP%c %s %s %u %u\r\n", h->family == AF_INET ? '4' : '6', s,
			     d, sp, dp);
	} else {
		memcpy(b, sig, 12);
		b[12] = 0x21;
		if (h->family == AF_INET) {
			const struct sockaddr_in *a = (const void *)&h->src, *z = (const void *)&h->dst;

			b[13] = 0x11;
			memcpy(b + 16, &a->sin_addr, 4);
			memcpy(b + 20, &z->sin_addr, 4);
			memcpy(b + 24, &a->sin_port, 2);
			memcpy(b + 26, &z->sin_port, 2);
			n = 28;
		} else {
			const struct sockaddr_in6 *a = (const void *)&h->src, *z = (const void *)&h->dst;

			b[13] = 0x21;
			memcpy(b + 16, &a->sin6_addr, 16);
			memcpy(b + 32, &z->sin6_addr, 16);
			memcpy(b + 48, &a->sin6_port, 2);
			memcpy(b + 50, &z->sin6_port, 2);
			n = 52;
		}
		b[14] = 0;
		b[15] = (uint8_t)(n - 16);
	}
	r = proxy_parse(b, (size_t)n, ANY, &back, &why);
	if (r != n || back.family != h->family || memcmp(&back.src, &h->src, sizeof(h->src)) != 0 ||
	    memcmp(&back.dst, &h->dst, sizeof(h->dst)) != 0)
		fail("addresses written out do not read back", r, why);
}

static void check_hdr(const uint8_t *data, int r, const struct proxy_hdr *h)
{
	if (h->version == 1) {
		if (r > 107 || memcmp(data, "PROXY ", 6) != 0 || data[r - 2] != '\r' || data[r - 1] != '\n')
			fail("v1 header badly framed", r, NULL);
		if (h->health_check || h->ssl || h->authority[0] || h->tls_version[0])
			fail("v1 header with v2 fields", r, NULL);
		if (!h->local) {
			int spaces = 0;

			for (int i = 6; i < r - 2; i++) {
				if (!strchr("TCP46 0123456789abcdefABCDEF:.", data[i]) || data[i] == '\0')
					fail("v1 header with a byte no field has", r, NULL);
				spaces += data[i] == ' ';
			}
			/* "TCP4 src dst sport dport": five fields, four single spaces. */
			if (spaces != 4 || memmem(data, (size_t)r, "  ", 2) || data[6] == ' ' || data[r - 3] == ' ')
				fail("v1 header not in single spaces", r, NULL);
		}
	} else if (h->version == 2) {
		if (r > PROXY_HEADER_MAX || r < 16 || memcmp(data, sig, 12) != 0 ||
		    r != 16 + (data[14] << 8 | data[15]))
			fail("v2 header badly framed", r, NULL);
		if (h->health_check != ((data[12] & 15) == 0) ||
		    h->local != ((data[12] & 15) == 0 || data[13] >> 4 == 0))
			fail("v2 command or family misread", r, NULL);
	} else {
		fail("no version", r, NULL);
	}
	if (h->local && h->family != AF_UNSPEC)
		fail("local with a family", r, NULL);
	if (h->health_check && !h->local)
		fail("health check not local", r, NULL);
	if (!h->local && ((h->family != AF_INET && h->family != AF_INET6 && h->family != AF_UNIX) ||
			  h->src.ss_family != h->family || h->dst.ss_family != h->family))
		fail("addresses of no family", r, NULL);
	if (h->tls_version[0] && !h->ssl)
		fail("TLS version without TLS", r, NULL);
	check_text(h->authority, sizeof(h->authority), false, "authority");
	check_text(h->tls_version, sizeof(h->tls_version), true, "tls_version");
	check_round_trip(h);
}

/* Every prefix, as the bytes trickle in; returns the verdict on the whole. */
static int check_prefixes(const uint8_t *data, size_t size, const char **ret_why, struct proxy_hdr *ret)
{
	size_t last = size < PROXY_HEADER_MAX ? size : PROXY_HEADER_MAX;
	struct proxy_hdr first_h, h;
	const char *first_why = NULL, *why;
	int first = 0, r;

	memset(&first_h, 0, sizeof(first_h));
	for (size_t k = 0; k <= last; k++) {
		why = NULL;
		r = proxy_parse(data, k, ANY, &h, &why);
		if (r > (int)k)
			fail("a length past the input", r, why);
		if (r < 0 && ((r != -EBADMSG && r != -E2BIG) || !why || !why[0]))
			fail("an unexpected error", r, why);
		if (r == -E2BIG && data[0] != sig[0])
			fail("too big without a v2 signature", r, why);
		if (r > 0)
			check_hdr(data, r, &h);
		if (first != 0) {
			if (r != first || (r < 0 && strcmp(why, first_why) != 0) || (r > 0 && !same_hdr(&h, &first_h)))
				fail("more bytes changed the verdict", r, why);
		} else if (r != 0) {
			first = r;
			first_why = why;
			first_h = h;
		}
	}
	/* A complete header's bytes, or PROXY_HEADER_MAX, always get a verdict. */
	if (last == PROXY_HEADER_MAX && first == 0)
		fail("PROXY_HEADER_MAX bytes and still no verdict", 0, NULL);
	if (first == 0 && size >= 16 && memcmp(data, sig, 12) == 0 && size >= 16u + (data[14] << 8 | data[15]))
		fail("a whole v2 header and still no verdict", 0, NULL);
	if (first == 0 && size > 0 && data[0] == 'P' && (size >= 107 || memmem(data, size, "\r\n", 2)))
		fail("a whole v1 line and still no verdict", 0, NULL);
	if (size > last) {
		r = proxy_parse(data, size, ANY, &h, &why);
		if (r != first || (r > 0 && !same_hdr(&h, &first_h)))
			fail("the whole input changed the verdict", r, why);
	}
	/* The versions mask changes nothing but a header of the other version. */
	for (unsigned m = PROXY_V1; m <= PROXY_V2; m++) {
		int want = first > 0 && !(first_h.version & (int)m) ? -EPROTONOSUPPORT : first;

		why = NULL;
		r = proxy_parse(data, size, m, &h, &why);
		if (r != want || (r < 0 && !why))
			fail("the versions mask changed the verdict", r, why);
	}
	*ret_why = first_why;
	*ret = first_h;
	return first;
}

/* A v2 PROXY TCP4 header whose TLVs are the input, with a CRC32C TLV first
 * when crc is set; returns its length, 0 when it would not fit. */
static size_t wrap(uint8_t *b, const uint8_t *data, size_t size, bool crc)
{
	static const uint8_t addrs[12] = { 192, 0, 2, 1, 198, 51, 100, 7, 0xc3, 0x50, 0, 25 };
	size_t n = 28 + (crc ? 7 : 0) + size;

	if (n > PROXY_HEADER_MAX)
		return 0;
	memcpy(b, sig, 12);
	b[12] = 0x21;
	b[13] = 0x11;
	b[14] = (uint8_t)((n - 16) >> 8);
	b[15] = (uint8_t)(n - 16);
	memcpy(b + 16, addrs, 12);
	if (crc)
		memcpy(b + 28, "\x03\x00\x04\x00\x00\x00\x00", 7);
	memcpy(b + 28 + (crc ? 7 : 0), data, size);
	if (crc) {
		uint32_t c = crc32c_ref(b, n);

		b[31] = (uint8_t)(c >> 24);
		b[32] = (uint8_t)(c >> 16);
		b[33] = (uint8_t)(c >> 8);
		b[34] = (uint8_t)c;
	}
	return n;
}

static void check_as_tlvs(const uint8_t *data, size_t size)
{
	uint8_t b[PROXY_HEADER_MAX], c[PROXY_HEADER_MAX];
	struct proxy_hdr h, hc;
	const char *why, *whyc;
	size_t n = wrap(b, data, size, false), nc = wrap(c, data, size, true);
	int r, rc;

	if (!n)
		return;
	r = check_prefixes(b, n, &why, &h);
	if (r > 0 && (h.version != 2 || h.family != AF_INET))
		fail("wrapped: not the TCP4 header it is", r, why);
	if (!nc)
		return;
	rc = check_prefixes(c, nc, &whyc, &hc);
	/* A correct checksum takes nothing away, unless the input has its own
	 * (then there are two), and adds nothing. */
	if (r > 0 && rc != (int)nc && !(rc == -EBADMSG && strcmp(whyc, "bad v2 header: CRC32C TLV") == 0))
		fail("a correct CRC32C refused", rc, whyc);
	if (rc > 0 && (r != (int)n || !same_hdr(&h, &hc)))
		fail("a CRC32C changed the header", rc, whyc);
	if (rc > 0) {
		c[31] ^= 0x80;
		rc = check_prefixes(c, nc, &whyc, &hc);
		if (rc != -EBADMSG || strcmp(whyc, "bad v2 header: CRC32C mismatch") != 0)
			fail("a wrong CRC32C taken", rc, whyc);
	}
}

/* A plain reader: 1 to 5 digits, no leading zero, at most 65535. */
static bool port_ok(const char *s, unsigned *ret)
{
	size_t n = strlen(s);
	unsigned v = 0;

	if (n == 0 || n > 5 || (s[0] == '0' && n > 1))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	*ret = v;
	return v <= 65535;
}

static void check_as_token(const uint8_t *data, size_t size)
{
	char tok[64], line[200];
	struct proxy_hdr h;
	const char *why;
	unsigned port = 0;
	int n, r;

	if (size == 0 || size >= sizeof(tok))
		return;
	for (size_t i = 0; i < size; i++)
		if (data[i] == ' ' || data[i] == '\r' || data[i] == '\n' || data[i] == '\0')
			return;
	memcpy(tok, data, size);
	tok[size] = '\0';
	for (int v6 = 0; v6 <= 1; v6++) {
		uint8_t want[16];
		bool ok = inet_pton(v6 ? AF_INET6 : AF_INET, tok, want) == 1;

		for (int dst = 0; dst <= 1; dst++) {
			const char *other = v6 ? "::" : "0.0.0.0";
			const struct sockaddr_storage *ss;

			n = snprintf(line, sizeof(line), "PROXY TCP%c %s %s 1 2\r\n", v6 ? '6' : '4', dst ? other : tok,
				     dst ? tok : other);
			why = NULL;
			r = proxy_parse(line, (size_t)n, ANY, &h, &why);
			if ((r > 0) != ok)
				fail(ok ? "an address inet_pton takes refused" : "an address inet_pton refuses taken",
				     r, why);
			ss = dst ? &h.dst : &h.src;
			if (ok && memcmp(v6 ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
					    : (const void *)&((const struct sockaddr_in *)ss)->sin_addr,
					 want, v6 ? 16 : 4) != 0)
				fail("an address read differently from inet_pton", r, why);
		}
	}
	n = snprintf(line, sizeof(line), "PROXY TCP4 192.0.2.1 192.0.2.2 %s 2\r\n", tok);
	why = NULL;
	r = proxy_parse(line, (size_t)n, ANY, &h, &why);
	if ((r > 0) != port_ok(tok, &port) || (r > 0 && ntohs(((const struct sockaddr_in *)&h.src)->sin_port) != port))
		fail("a port read differently", r, why);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_hdr h;
	const char *why;
	static bool once;

	if (!once) {
		utf8_locale = setlocale(LC_CTYPE, "C.UTF-8") != NULL;
		once = true;
	}
	check_prefixes(data, size, &why, &h);
	check_as_tlvs(data, size);
	check_as_token(data, size);
	return 0;
}
