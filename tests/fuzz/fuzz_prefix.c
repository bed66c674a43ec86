/* fuzz_prefix.c - libFuzzer target for access.c's prefix_parse() and
 * prefix_format() (the allow = / deny = words of the config).
 * Properties: prefix_parse() returns 0, -EINVAL or -EDOM and accepts only
 * address characters; what it returns (0 and -EDOM alike) is a prefix acl_add()
 * takes, that matches its own address, and that prefix_format() writes as
 * text prefix_parse() reads back as the same prefix (that is how
 * --print-config writes them back). The same holds for any prefix built from
 * raw input bytes, so the formatter sees every address, not only parsed ones. */
#include "access.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check_prefix(const struct prefix *p, const char *what)
{
	char buf[PREFIX_STRLEN], small[12];
	struct prefix back;
	struct acl *acl = NULL;
	int r;

	prefix_format(p, buf, sizeof(buf));
	r = prefix_parse(buf, &back);
	if (r != 0 || memcmp(&back, p, sizeof(back)) != 0) {
		fprintf(stderr, "%s: prefix_format() wrote \"%s\", which reads back as %d\n", what, buf, r);
		abort();
	}
	if (!prefix_match(p, &p->addr)) {
		fprintf(stderr, "%s: %s does not match its own address\n", what, buf);
		abort();
	}
	if (acl_add(&acl, p, true) != 0 || acl_check(acl, &p->addr) != ACL_ALLOWED) {
		fprintf(stderr, "%s: %s refused by an acl that allows it\n", what, buf);
		abort();
	}
	acl_free(acl);
	prefix_format(p, small, sizeof(small)); /* a cut, never an overflow */
	if (strncmp(small, buf, sizeof(small) - 1) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	struct prefix p;
	int r;

	if (!s)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';

	memset(&p, 0, sizeof(p));
	r = prefix_parse(s, &p);
	if (r == 0 && s[strspn(s, "0123456789abcdefABCDEF:./")] != '\0') {
		fprintf(stderr, "prefix_parse accepted \"%s\"\n", s);
		abort();
	}
	if (r == 0 || r == -EDOM)
		check_prefix(&p, s);
	else if (r != -EINVAL)
		abort();

	/* Raw bytes as a prefix: a family, a length, an address, masked the way
	 * prefix_parse() masks (by reading the masked form back as text). */
	if (size >= 18) {
		struct prefix raw;
		char text[PREFIX_STRLEN + 8];
		bool v6 = data[0] & 1;
		unsigned bits = v6 ? 128 : 32, len = data[1] % (bits + 1);

		memset(&raw, 0, sizeof(raw));
		raw.addr.family = v6 ? AF_INET6 : AF_INET;
		memcpy(raw.addr.bytes, data + 2, v6 ? 16 : 4);
		raw.len = (uint8_t)bits;
		prefix_format(&raw, text, sizeof(text));
		snprintf(text + strlen(text), sizeof(text) - strlen(text), "/%u", len);
		r = prefix_parse(text, &raw);
		if (r != 0 && r != -EDOM) {
			fprintf(stderr, "prefix_parse refused \"%s\" (%d)\n", text, r);
			abort();
		}
		check_prefix(&raw, text);
	}
	free(s);
	return 0;
}
