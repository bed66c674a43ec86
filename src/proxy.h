/* proxy.h - the PROXY protocol header a load balancer sends before the client's
 * bytes (HAProxy's doc/proxy-protocol.txt, versions 1 and 2). A pure parser:
 * no I/O, no logging, no clock. The reactor owns the socket and the timeout
 * and calls proxy_parse() again whenever more bytes arrive. */
#ifndef POOLD_PROXY_H
#define POOLD_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

enum { PROXY_V1 = 1, PROXY_V2 = 2 }; /* a mask: PROXY_V1 | PROXY_V2 takes either */

#define PROXY_V1_MAX 107 /* bytes, CRLF included: the spec's longest line */
/* Bytes: the longest v2 header taken, so the most a waiting connection
 * buffers. The spec sizes headers to fit the smallest MSS (536); HAProxy's
 * TCP6 addresses, a 255-byte AUTHORITY, the SSL TLV with its version, cipher,
 * CN and algorithms, a UNIQUE_ID and a CRC32C come to about 650. The rest is
 * room for vendors' TLVs; a client certificate (SSL sub-TLV 0x28) does not fit. */
#define PROXY_HEADER_MAX 1024

struct proxy_hdr {
	int version;       /* 1 or 2 */
	bool local;        /* use the connection's own addresses: v1 UNKNOWN, v2 LOCAL, v2 PROXY over AF_UNSPEC */
	bool health_check; /* v2 LOCAL: the balancer's own connection */
	int family;        /* AF_INET, AF_INET6, AF_UNIX, or AF_UNSPEC when local */
	/* The client (src) and the address it reached (dst), ports included, when
	 * !local. AF_UNIX: the header's 108 bytes as sent (an abstract address
	 * starts with NUL; escape before logging), always followed by a NUL. */
	struct sockaddr_storage src, dst;
	char authority[256];  /* v2 AUTHORITY TLV (SNI): UTF-8 without control characters; "" if absent */
	bool ssl;             /* v2 SSL TLV with PP2_CLIENT_SSL: the client came over TLS */
	char tls_version[32]; /* its VERSION sub-TLV ("TLSv1.3"), printable ASCII; "" if absent or !ssl */
};

/* Parses the header at the start of buf, len bytes received so far. Returns
 * its length (> 0) and sets *ret when buf starts with a complete, valid header
 * of an accepted version (versions: a non-empty PROXY_V* mask). Returns 0 when
 * buf is a valid beginning of a header and more bytes are needed: truncation
 * is for the caller's timeout to judge. Never 0 once buf holds a whole header
 * or PROXY_HEADER_MAX bytes, so a buffer of that size always decides. Each
 * byte or field is checked as soon as it is in buf (v2 TLV values and the
 * CRC32C once complete), so the answer for a prefix never contradicts the
 * answer for the whole: an error stays the same error (and reason), and a
 * header the same header, however many bytes follow. Bytes past the header
 * are the client's and are not looked at. At most about 0.8 us a call.
 * Errors, with *ret_reason (if not NULL) set to a short static English phrase:
 *   -EBADMSG          not a header, or a malformed one (v1 over 107 bytes too)
 *   -E2BIG            a v2 header longer than PROXY_HEADER_MAX (known from
 *                     its first 16 bytes)
 *   -EPROTONOSUPPORT  a complete, valid header of a version not in versions
 *   -EINVAL           versions is not a non-empty PROXY_V* mask
 * v2: a PROXY command takes TCP4, TCP6, UNIX stream, or UNSPEC (0x00, then
 * local); DGRAM and half-specified pairs (0x01, 0x10...) are refused. LOCAL
 * ignores the family but still reads the TLVs after its address block. A
 * CRC32C TLV is verified; unknown TLVs are skipped. ret must not be NULL. */
int proxy_parse(const void *buf, size_t len, unsigned versions, struct proxy_hdr *ret, const char **ret_reason);

#endif
