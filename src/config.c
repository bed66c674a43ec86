/* config.c - parses /etc/poold/poold.conf and its poold.conf.d/ drop-ins with
 * inih into a fresh struct config, driven by one table of keys (name, type,
 * default, range). Nothing is applied until every file parsed cleanly; the
 * caller swaps configs. Errors come back as "FILE:LINE: message" and are never
 * logged here. Long lines are caught by our own line reader before inih sees
 * them: Debian's inih (INI_MAX_LINE 200) would silently split them. A config is
 * immutable once loaded; connections hold references (config_ref()), so a
 * reload never changes what an in-flight client is served.
 *
 * Listeners. A key is global (struct config) or per connection (struct
 * service). The global sections set the default service; a [listener NAME]
 * section takes the per-connection keys by name, and whatever it leaves unset
 * is copied from the default once every file is read, so a drop-in that
 * changes a global key reaches every listener that does not set it. */
#include "config.h"
#include "access.h"
#include "log.h"
#include "payload.h"
#include "proxy.h"
#include "util.h"

#include <ctype.h>
#include <dirent.h>
#include <ini.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/syslog.h>

#define CONFIG_FILE_MAX ((size_t)1 << 20)  /* bytes per config file */
#define LINE_MAX_BYTES  (INI_MAX_LINE - 2) /* inih needs room for "\n\0" */
#define LISTEN_MAX      64
#define NAME_SHOWN      1024 /* bytes of an escaped file name in a message */

enum key_type {
	KEY_UINT,
	KEY_DURATION,
	KEY_BOOL,
	KEY_LEVEL,
	KEY_OVERLOAD,
	KEY_TEXT,
	KEY_FILE,
	KEY_ADDRESS,
	KEY_PREFIXES,
	KEY_RATE,
	KEY_PROXY,
	KEY_ENDPOINT, /* one address, or empty for none */
};
enum { KEY_GLOBAL, KEY_SERVICE };

struct key {
	const char *section, *name;
	enum key_type type;
	int scope;       /* KEY_GLOBAL: a field of struct config; KEY_SERVICE: of struct service */
	size_t offset;   /* of the field */
	const char *def; /* default, in config syntax; NULL: none */
	uint64_t min, max;
};

#define G(f) KEY_GLOBAL, offsetof(struct config, f)
#define V(f) KEY_SERVICE, offsetof(struct service, f)
#define MS   USEC_PER_MSEC
#define S    USEC_PER_SEC

/* The one list of keys: parsing, defaults, --print-config and the man page's
 * list all follow it. KEY_SERVICE keys may also be set in [listener NAME]. */
static const struct key keys[] = {
	{ "pool", "threads", KEY_UINT, G(threads), "4", 1, 1024 },
	{ "pool", "queue_max", KEY_UINT, G(queue_max), "4096", 1, 1048576 }, /* CONFIG_QUEUE_MAX_DEFAULT */
	{ "payload", "text", KEY_TEXT, V(payload), "(lp0\\nI1\\naI2\\naI7\\naI9\\naI0\\na.", 0, 0 },
	{ "payload", "file", KEY_FILE, V(payload), NULL, 0, 0 },
	{ "session", "max_messages", KEY_UINT, V(max_messages), "10", 0, 1000000 },
	{ "session", "message_size", KEY_UINT, V(message_size), "1024", 1, 1048576 },
	{ "session", "idle_timeout", KEY_DURATION, V(idle_usec), "10s", 10 * MS, 24 * 3600 * S },
	{ "session", "session_timeout", KEY_DURATION, V(session_usec), "60s", 10 * MS, 24 * 3600 * S },
	{ "session", "shutdown_timeout", KEY_DURATION, G(shutdown_usec), "10s", 0, 3600 * S },
	{ "session", "lingering_time", KEY_DURATION, V(linger_usec), "30s", 0, 3600 * S },
	{ "session", "lingering_timeout", KEY_DURATION, V(linger_idle_usec), "5s", 10 * MS, 3600 * S },
	{ "session", "lingering_bytes", KEY_UINT, V(linger_bytes), "1048576", 0, 1073741824 },
	{ "limits", "max_connections", KEY_UINT, G(max_connections), "4096", 1, 1048576 },
	{ "limits", "per_source", KEY_UINT, V(per_source), "0", 0, 1048576 },
	{ "limits", "per_source_rate", KEY_RATE, V(per_source_rate), "0", 0, 1000000 },
	{ "limits", "rate", KEY_RATE, V(rate), "0", 0, 1000000 },
	{ "limits", "allow", KEY_PREFIXES, V(allow), NULL, 0, 0 },
	{ "limits", "deny", KEY_PREFIXES, V(deny), NULL, 0, 0 },
	{ "limits", "ipv6_prefix", KEY_UINT, G(ipv6_prefix), "64", 1, 128 },
	{ "limits", "overload", KEY_OVERLOAD, V(overload), "close", 0, 0 },
	{ "limits", "busy_message", KEY_TEXT, V(busy_message), "busy\\n", 0, 0 },
	{ "limits", "send_buffer", KEY_UINT, V(send_buffer), "0", 0, 67108864 },
	{ "listen", "address", KEY_ADDRESS, V(listen), "[::]:2727", 0, 0 },
	{ "listen", "proxy_protocol", KEY_PROXY, V(proxy), "no", 0, 0 },
	{ "listen", "proxy_from", KEY_PREFIXES, V(proxy_from), NULL, 0, 0 },
	{ "listen", "proxy_timeout", KEY_DURATION, V(proxy_usec), "3s", 10 * MS, 3600 * S },
	{ "log", "level", KEY_LEVEL, G(log_level), "info", 0, 0 },
	{ "log", "messages", KEY_BOOL, V(log_messages), "yes", 0, 0 },
	{ "metrics", "address", KEY_ENDPOINT, G(metrics_address), NULL, 0, 0 },
};

#define NKEYS        ARRAY_SIZE(keys)
#define LISTENER_SEC "listener "
#define PREFIXES_MAX 100000 /* entries per allow or deny list */

/* What the files said about one service. */
struct svc_state {
	unsigned seen[NKEYS];   /* line where the current file set each key */
	bool set[NKEYS];        /* set by any file (a listener inherits the rest) */
	bool payload_set;       /* the current file chose the payload source */
	bool listen_set;        /* the current file replaced the inherited addresses */
	const char *proxy_file; /* where proxy_protocol or proxy_from was last set (in c->files) */
	unsigned proxy_line;
};

struct parse {
	struct config *c;
	const char *file;
	char *err;
	size_t errlen;
	int r; /* first error, or 0 */
	unsigned err_line;

	/* The line reader over the file's bytes. */
	const char *buf;
	size_t len, pos;
	unsigned line;
	bool indented; /* the current line is an inih continuation */

	const struct key *last;   /* key an indented line continues; NULL after [section] */
	const char *last_section; /* its section, as inih names it */
	char last_section_buf[256];
	struct svc_state def_state; /* global keys and the default service */
	struct svc_state *states[LISTENERS_MAX];
};

static bool is_listener_key(const struct key *k)
{
	return k->scope == KEY_SERVICE;
}

static void *field_of(void *base, const struct key *k)
{
	return (char *)base + k->offset;
}

static int fail(struct parse *p, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct parse *p, int r, const char *fmt, ...)
{
	char name[NAME_SHOWN];
	va_list ap;
	int n;

	if (p->r < 0)
		return p->r;
	p->r = r;
	p->err_line = p->line;
	n = snprintf(p->err, p->errlen, "%s:%u: ", payload_escape_name(p->file, name, sizeof(name)), p->line);
	if (n < 0 || (size_t)n >= p->errlen)
		return r;
	va_start(ap, fmt);
	vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return r;
}

/* Looks at line the way ini_parse_stream() will: for a section header, inih
 * forgets the previous key (so must we, or an indented line after it would
 * continue that key here while inih reads a new key), and it ignores any
 * text after the "]", which would silently drop "[pool] threads = 5". An
 * indented "[x]" right after a key is more of its value, not a header.
 * p->last stands for inih's previous key name: both are set by every key
 * line (the handler runs before the next line is read) and cleared here. */
static int section_line(struct parse *p, const char *line)
{
	const char *s = line, *close, *e;
	bool was_space = false;

	if (p->line == 1 && strncmp(s, "\xef\xbb\xbf", 3) == 0)
		s += 3; /* inih skips a UTF-8 BOM */
	while (isspace((unsigned char)*s))
		s++;
	if (*s != '[' || (p->indented && p->last))
		return 0;
	p->last = NULL;
	/* inih's end of the name: "]", or an inline ";" comment after a space
	 * (a syntax error, which inih reports). */
	for (close = s + 1; *close && *close != ']' && !(was_space && *close == ';'); close++)
		was_space = isspace((unsigned char)*close);
	if (*close != ']')
		return 0;
	for (e = close + 1; isspace((unsigned char)*e); e++)
		;
	if (*e != '\0' && *e != ';' && *e != '#')
		return fail(p, -EINVAL, "text after %.*s (only a comment may follow a section header)",
			    (int)(close + 1 - s), s);
	return 0;
}

/* An inih reader over a buffer that counts lines and refuses lines inih would
 * cut. Returning NULL ends the parse; p->r tells an error from the end. */
static char *reader(char *str, int num, void *stream)
{
	struct parse *p = stream;
	const char *start, *nl;
	size_t n, take;

	if (p->r < 0 || p->pos >= p->len)
		return NULL;
	start = p->buf + p->pos;
	nl = memchr(start, '\n', p->len - p->pos);
	n = nl ? (size_t)(nl - start) : p->len - p->pos;
	p->line++;
	if (memchr(start, '\0', n)) {
		fail(p, -EINVAL, "NUL byte in line");
		return NULL;
	}
	take = n;
	if (take && start[take - 1] == '\r')
		take--;
	if (take > LINE_MAX_BYTES || (size_t)num < LINE_MAX_BYTES + 2) {
		fail(p, -E2BIG,
		     "line is %zu bytes long, at most %d are allowed (continue long values on indented lines)", take,
		     LINE_MAX_BYTES);
		return NULL;
	}
	memcpy(str, start, take);
	str[take] = '\n';
	str[take + 1] = '\0';
	/* inih's own test for a continuation: isspace(), not just ' ' and '\t'. */
	p->indented = take > 0 && isspace((unsigned char)start[0]);
	p->pos += n + (nl ? 1 : 0);
	if (section_line(p, str) < 0)
		return NULL;
	return str;
}

static void strv_free(char **v)
{
	if (!v)
		return;
	for (char **i = v; *i; i++)
		free(*i);
	free(v);
}

static int strv_push(char ***v, const char *s)
{
	size_t n = 0;
	char **nv, *d;

	if (*v)
		while ((*v)[n])
			n++;
	d = strdup(s);
	if (!d)
		return -ENOMEM;
	nv = realloc(*v, (n + 2) * sizeof(char *));
	if (!nv) {
		free(d);
		return -ENOMEM;
	}
	nv[n] = d;
	nv[n + 1] = NULL;
	*v = nv;
	return 0;
}

/* host:port, [v6]:port or an absolute unix socket path (host "", port path). */
int config_split_address(const char *s, char *host, size_t hostlen, char *port, size_t portlen)
{
	const char *colon, *h = s;
	size_t hl;
	uint64_t v;

	if (s[0] == '/') {
		if (strlen(s) >= 108 || strlen(s) >= portlen)
			return -ENAMETOOLONG;
		host[0] = '\0';
		strcpy(port, s);
		return 0;
	}
	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close || close[1] != ':')
			return -EINVAL;
		h = s + 1;
		hl = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || memchr(s, ':', (size_t)(colon - s)))
			return -EINVAL;
		hl = (size_t)(colon - s);
	}
	if (hl == 0 || hl >= hostlen || strlen(colon + 1) >= portlen)
		return -EINVAL;
	/* Host names, IPv4/IPv6 literals (with %scope), or "*". */
	if (strspn(h, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.:%_-*") < hl)
		return -EINVAL;
	if (parse_uint(colon + 1, 0, 65535, &v) < 0)
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	strcpy(port, colon + 1);
	return 0;
}

static int set_text(struct parse *p, const struct key *k, void *base, const char *value, bool append)
{
	struct bytes *b = field_of(base, k);
	_cleanup_free_ char *data = NULL;
	size_t len, errpos = 0;
	int r;

	r = payload_unescape(value, &data, &len, &errpos);
	if (r == -EINVAL)
		return fail(p, r, "%s: invalid escape at \"%.8s\" (use \\n \\t \\r \\0 \\\\ or \\xNN)", k->name,
			    value + errpos);
	if (r < 0)
		return fail(p, r, "%s: %s", k->name, strerror(-r));
	if (append) {
		char *nd;

		if (b->len + len > PAYLOAD_MAX)
			return fail(p, -EFBIG, "%s: longer than %zu bytes", k->name, PAYLOAD_MAX);
		nd = realloc(b->data, b->len + len + 1);
		if (!nd)
			return fail(p, -ENOMEM, "%s: out of memory", k->name);
		memcpy(nd + b->len, data, len + 1);
		b->data = nd;
		b->len += len;
		return 0;
	}
	free(b->data);
	b->data = data;
	data = NULL;
	b->len = len;
	return 0;
}

/* The directory of the config file being parsed, as an absolute path: a
 * relative payload path is stored resolved against it, so --print-config's
 * "file =" reads back the same from any working directory. An absolute
 * config path is kept as written; a relative one goes through realpath(). The
 * payload file itself is not resolved: a symlink to it is followed anew on
 * each load. */
static int file_dir(const char *file, char **ret)
{
	const char *slash = strrchr(file, '/');
	_cleanup_free_ char *dir = NULL;
	char *abs;

	if (file[0] == '/') {
		abs = strndup(file, (size_t)(slash - file));
		if (!abs)
			return -ENOMEM;
		*ret = abs;
		return 0;
	}
	dir = slash ? strndup(file, (size_t)(slash - file)) : strdup(".");
	if (!dir)
		return -ENOMEM;
	abs = realpath(dir, NULL);
	if (!abs)
		return -errno;
	*ret = abs;
	return 0;
}

static int set_file(struct parse *p, struct service *svc, const char *value)
{
	_cleanup_free_ char *path = NULL, *data = NULL, *dir = NULL;
	char name[NAME_SHOWN];
	size_t len;
	int r;

	if (value[0] == '\0')
		return fail(p, -EINVAL, "file: empty path");
	if (value[0] == '/') {
		path = strdup(value);
	} else {
		r = file_dir(p->file, &dir);
		if (r < 0)
			return fail(p, r, "file: cannot find the directory of %s: %s",
				    payload_escape_name(p->file, name, sizeof(name)), strerror(-r));
		if (asprintf(&path, "%s/%s", dir, value) < 0)
			path = NULL;
	}
	if (!path)
		return fail(p, -ENOMEM, "file: out of memory");
	payload_escape_name(path, name, sizeof(name));
	r = payload_load_file(path, &data, &len);
	if (r == -EFBIG)
		return fail(p, r, "file: %s is larger than %zu bytes", name, PAYLOAD_MAX);
	if (r == -EBADFD)
		return fail(p, r, "file: %s is not a regular file", name);
	if (r < 0)
		return fail(p, r, "file: cannot read %s: %s", name, strerror(-r));
	free(svc->payload.data);
	svc->payload.data = data;
	data = NULL;
	svc->payload.len = len;
	free(svc->payload_file);
	svc->payload_file = path;
	path = NULL;
	return 0;
}

/* "N/s", or 0 for no limit. */
static int parse_rate(const char *value, uint64_t max, uint64_t *ret)
{
	char digits[32];
	size_t n = strcspn(value, "/");

	if (strcmp(value, "0") == 0) {
		*ret = 0;
		return 0;
	}
	if (n == 0 || n >= sizeof(digits) || strcmp(value + n, "/s") != 0)
		return -EINVAL;
	memcpy(digits, value, n);
	digits[n] = '\0';
	return parse_uint(digits, 1, max, ret);
}

static int prefixes_push(struct prefixes *l, const struct prefix *pf)
{
	struct prefix *nv;

	if (l->n >= PREFIXES_MAX)
		return -E2BIG;
	nv = realloc(l->v, (l->n + 1) * sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	nv[l->n++] = *pf;
	l->v = nv;
	return 0;
}

/* allow/deny: space-separated addresses and prefixes, appended to the list;
 * an empty value empties it (as systemd's list settings do). */
static int set_prefixes(struct parse *p, const struct key *k, struct prefixes *l, const char *value)
{
	const char *s = value;

	if (value[0] == '\0') {
		free(l->v);
		l->v = NULL;
		l->n = 0;
		return 0;
	}
	while (*s) {
		char word[INET6_ADDRSTRLEN + 8], canon[INET6_ADDRSTRLEN + 8];
		size_t n = strcspn(s, " \t");
		struct prefix pf;
		int r;

		if (n == 0) {
			s++;
			continue;
		}
		if (n >= sizeof(word))
			return fail(p, -EINVAL, "%s: \"%.*s\" is not an address or prefix", k->name, (int)n, s);
		memcpy(word, s, n);
		word[n] = '\0';
		r = prefix_parse(word, &pf);
		if (r == -EDOM) {
			prefix_format(&pf, canon, sizeof(canon));
			return fail(p, r, "%s: %s has bits set past its prefix length (did you mean %s?)", k->name,
				    word, canon);
		}
		if (r < 0)
			return fail(p, r,
				    "%s: \"%s\" is not an IPv4 or IPv6 address or prefix (like 192.0.2.0/24 or "
				    "2001:db8::/32)",
				    k->name, word);
		r = prefixes_push(l, &pf);
		if (r < 0)
			return fail(p, r, "%s: %s", k->name, r == -E2BIG ? "too many entries" : strerror(-r));
		s += n;
	}
	return 0;
}

static int set_value(struct parse *p, const struct key *k, void *base, struct svc_state *st, const char *value)
{
	void *field = field_of(base, k);
	uint64_t v;
	bool b;
	int r;

	switch (k->type) {
	case KEY_UINT:
		r = parse_uint(value, k->min, k->max, &v);
		if (r == -ERANGE)
			return fail(p, r, "%s: %s is out of range (%" PRIu64 "..%" PRIu64 ")", k->name, value, k->min,
				    k->max);
		if (r < 0)
			return fail(p, r, "%s: \"%s\" is not a whole number", k->name, value);
		*(unsigned *)field = (unsigned)v;
		return 0;
	case KEY_RATE:
		r = parse_rate(value, k->max, &v);
		if (r == -ERANGE)
			return fail(p, r, "%s: %s is out of range (1/s..%" PRIu64 "/s, or 0 for no limit)", k->name,
				    value, k->max);
		if (r < 0)
			return fail(p, r, "%s: \"%s\" is not a rate (N/s, or 0 for no limit)", k->name, value);
		*(unsigned *)field = (unsigned)v;
		return 0;
	case KEY_DURATION:
		r = parse_duration(value, &v);
		if (r < 0 && r != -ERANGE)
			return fail(p, r, "%s: \"%s\" is not a duration (a whole number with ms, s, m or h)", k->name,
				    value);
		if (r == -ERANGE || v < k->min || v > k->max) {
			char lo[32], hi[32];

			format_duration(k->min, lo, sizeof(lo));
			format_duration(k->max, hi, sizeof(hi));
			return fail(p, -ERANGE, "%s: %s is out of range (%s..%s)", k->name, value, lo, hi);
		}
		*(uint64_t *)field = v;
		return 0;
	case KEY_BOOL:
		if (parse_bool(value, &b) < 0)
			return fail(p, -EINVAL, "%s: \"%s\" is not yes or no", k->name, value);
		*(bool *)field = b;
		return 0;
	case KEY_LEVEL:
		r = log_level_from_name(value);
		if (r < 0)
			return fail(p, r, "%s: \"%s\" is not one of err, warning, notice, info, debug", k->name, value);
		*(int *)field = r;
		return 0;
	case KEY_PROXY:
		if (strcmp(value, "no") == 0)
			*(unsigned *)field = 0;
		else if (strcmp(value, "v1") == 0)
			*(unsigned *)field = PROXY_V1;
		else if (strcmp(value, "v2") == 0)
			*(unsigned *)field = PROXY_V2;
		else if (strcmp(value, "any") == 0)
			*(unsigned *)field = PROXY_V1 | PROXY_V2;
		else
			return fail(p, -EINVAL, "%s: \"%s\" is not no, v1, v2 or any", k->name, value);
		return 0;
	case KEY_OVERLOAD:
		if (strcmp(value, "close") == 0)
			*(int *)field = OVERLOAD_CLOSE;
		else if (strcmp(value, "busy") == 0)
			*(int *)field = OVERLOAD_BUSY;
		else
			return fail(p, -EINVAL, "%s: \"%s\" is not close or busy", k->name, value);
		return 0;
	case KEY_TEXT:
		r = set_text(p, k, base, value, false);
		if (r == 0 && k->offset == offsetof(struct service, payload)) {
			struct service *svc = base;

			free(svc->payload_file);
			svc->payload_file = NULL;
		}
		return r;
	case KEY_FILE:
		return set_file(p, base, value);
	case KEY_PREFIXES:
		return set_prefixes(p, k, field, value);
	case KEY_ENDPOINT: {
		char host[256], port[128];
		char **addr = field;

		if (value[0] != '\0' && config_split_address(value, host, sizeof(host), port, sizeof(port)) < 0)
			return fail(p, -EINVAL,
				    "[%s] %s: \"%s\" is not host:port, [ipv6]:port or an absolute unix socket path (or "
				    "empty for none)",
				    k->section, k->name, value);
		free(*addr);
		*addr = NULL;
		if (value[0] != '\0' && !(*addr = strdup(value)))
			return fail(p, -ENOMEM, "out of memory");
		return 0;
	}
	case KEY_ADDRESS: {
		char host[256], port[128];
		char ***list = field;
		size_t n = 0;

		if (config_split_address(value, host, sizeof(host), port, sizeof(port)) < 0)
			return fail(p, -EINVAL,
				    "%s: \"%s\" is not host:port, [ipv6]:port or an absolute unix socket path", k->name,
				    value);
		if (!st->listen_set) {
			strv_free(*list);
			*list = NULL;
			st->listen_set = true;
		}
		while (*list && (*list)[n])
			n++;
		if (n >= LISTEN_MAX)
			return fail(p, -E2BIG, "%s: more than %d addresses", k->name, LISTEN_MAX);
		if (strv_push(list, value) < 0)
			return fail(p, -ENOMEM, "out of memory");
		return 0;
	}
	}
	return fail(p, -EINVAL, "internal error: unknown key type");
}

static void reset_file_state(struct svc_state *st)
{
	memset(st->seen, 0, sizeof(st->seen));
	st->payload_set = false;
	st->listen_set = false;
}

/* Listener names are what systemd's FileDescriptorName= can carry; kept to
 * characters that need no quoting in a log line or a unit file. */
static bool valid_listener_name(const char *name)
{
	size_t n = strlen(name);

	return n >= 1 && n <= 64 &&
	       strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.@-") == n;
}

/* The service and state a [listener NAME] section sets: found, or new. */
static int listener_for(struct parse *p, const char *name, struct service **ret, struct svc_state **ret_state)
{
	struct config *c = p->c;
	struct service *svc;
	struct svc_state *st;

	for (size_t i = 0; i < c->nlisteners; i++)
		if (strcmp(c->listeners[i]->name, name) == 0) {
			*ret = c->listeners[i];
			*ret_state = p->states[i];
			return 0;
		}
	if (!valid_listener_name(name))
		return fail(p, -EINVAL,
			    "[listener %s]: a listener name is 1 to 64 letters, digits and _ . @ - (the "
			    "FileDescriptorName= of its socket)",
			    name);
	if (strcmp(name, "metrics") == 0)
		return fail(p, -EINVAL,
			    "[listener metrics]: the socket named metrics serves GET /metrics, not clients (see "
			    "[metrics]); give the listener another name");
	if (c->nlisteners >= LISTENERS_MAX)
		return fail(p, -E2BIG, "more than %d [listener] sections", LISTENERS_MAX);
	svc = calloc(1, sizeof(*svc));
	st = calloc(1, sizeof(*st));
	if (svc)
		svc->name = strdup(name);
	if (!svc || !st || !svc->name) {
		if (svc)
			free(svc->name);
		free(svc);
		free(st);
		return fail(p, -ENOMEM, "out of memory");
	}
	c->listeners[c->nlisteners] = svc;
	p->states[c->nlisteners++] = st;
	*ret = svc;
	*ret_state = st;
	return 0;
}

static const struct key *find_key(const char *section, const char *name, bool *ret_known_section)
{
	*ret_known_section = false;
	for (size_t i = 0; i < NKEYS; i++) {
		if (strcmp(keys[i].section, section) != 0)
			continue;
		*ret_known_section = true;
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
	}
	return NULL;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
	struct parse *p = user;
	const struct key *k = NULL;
	struct svc_state *st = &p->def_state;
	void *base = p->c;
	bool listener = strncmp(section, LISTENER_SEC, strlen(LISTENER_SEC)) == 0 || strcmp(section, "listener") == 0;
	size_t i;

	if (p->r < 0)
		return 0;
	if (p->indented && p->last && strcmp(p->last->name, name) == 0 && p->last_section &&
	    strcmp(p->last_section, section) == 0) {
		/* inih hands us an indented line as more of the previous key. */
		if (p->last->type == KEY_TEXT) {
			if (listener) {
				struct service *svc;

				if (listener_for(p, section + strlen(LISTENER_SEC), &svc, &st) < 0)
					return 0;
				base = svc;
			} else if (p->last->scope == KEY_SERVICE) {
				base = &p->c->def;
			}
			return set_text(p, p->last, base, value, true) == 0;
		}
		fail(p, -EINVAL, "%s: indented line continues a key that takes a single value (remove the indentation)",
		     name);
		return 0;
	}
	if (section[0] == '\0')
		return fail(p, -EINVAL, "%s: key outside a section (add [section] above it)", name), 0;
	if (listener) {
		struct service *svc;
		if (strlen(section) <= strlen(LISTENER_SEC))
			return fail(p, -EINVAL, "[listener] needs a name: [listener NAME]"), 0;
		for (i = 0; i < NKEYS && !k; i++)
			if (strcmp(keys[i].name, name) == 0)
				k = &keys[i];
		if (!k)
			return fail(p, -EINVAL, "unknown key \"%s\" in section [%s]", name, section), 0;
		if (!is_listener_key(k))
			return fail(p, -EINVAL, "%s is a global setting: set it in [%s], not in a [listener] section",
				    name, k->section),
			       0;
		if (listener_for(p, section + strlen(LISTENER_SEC), &svc, &st) < 0)
			return 0;
		base = svc;
	} else {
		bool known_section;

		k = find_key(section, name, &known_section);
		if (!known_section)
			return fail(p, -EINVAL, "unknown section [%s]", section), 0;
		if (!k)
			return fail(p, -EINVAL, "unknown key \"%s\" in section [%s]", name, section), 0;
		if (k->scope == KEY_SERVICE)
			base = &p->c->def;
	}
	i = (size_t)(k - keys);
	p->last = k;
	snprintf(p->last_section_buf, sizeof(p->last_section_buf), "%s", section);
	p->last_section = p->last_section_buf;
	if (k->type == KEY_TEXT || k->type == KEY_FILE) {
		if (k->offset == offsetof(struct service, payload) && st->payload_set) {
			for (size_t j = 0; j < NKEYS; j++)
				if ((keys[j].type == KEY_TEXT || keys[j].type == KEY_FILE) &&
				    keys[j].offset == offsetof(struct service, payload) && st->seen[j])
					return fail(p, -EINVAL,
						    "%s: duplicate payload source (payload %s already set at line %u)",
						    name, keys[j].name, st->seen[j]),
					       0;
		}
		if (k->offset == offsetof(struct service, payload))
			st->payload_set = true;
		else if (st->seen[i])
			return fail(p, -EINVAL, "%s: duplicate key (already set at line %u)", name, st->seen[i]), 0;
	} else if (st->seen[i] && k->type != KEY_ADDRESS && k->type != KEY_PREFIXES) {
		return fail(p, -EINVAL, "%s: duplicate key (already set at line %u)", name, st->seen[i]), 0;
	}
	st->seen[i] = p->line;
	st->set[i] = true;
	if (k->type == KEY_PROXY || (k->scope == KEY_SERVICE && k->offset == offsetof(struct service, proxy_from))) {
		char **f = p->c->files;

		while (f && f[0] && f[1])
			f++;
		st->proxy_file = f ? *f : NULL;
		st->proxy_line = p->line;
	}
	return set_value(p, k, base, st, value) == 0;
}

static int parse_buffer(struct parse *p, const char *file, const char *buf, size_t len)
{
	int r;

	p->file = file;
	p->buf = buf;
	p->len = len;
	p->pos = 0;
	p->line = 0;
	p->last = NULL;
	reset_file_state(&p->def_state);
	for (size_t i = 0; i < p->c->nlisteners; i++)
		reset_file_state(p->states[i]);
	r = ini_parse_stream(reader, p, handler, p);
	if (r > 0 && (p->r == 0 || (unsigned)r < p->err_line)) {
		/* inih found a line it cannot read before any error of ours. */
		p->r = 0;
		p->line = (unsigned)r;
		return fail(p, -EINVAL, "syntax error (expected [section], key = value or a comment)");
	}
	if (r == -2)
		return fail(p, -ENOMEM, "out of memory");
	return p->r;
}

static int parse_file(struct parse *p, const char *path)
{
	_cleanup_free_ char *buf = NULL;
	size_t len;
	int r;

	r = read_file(path, CONFIG_FILE_MAX, &buf, &len);
	if (r < 0) {
		char name[NAME_SHOWN];

		p->r = r;
		snprintf(p->err, p->errlen, "%s: %s", payload_escape_name(path, name, sizeof(name)),
			 r == -EFBIG    ? "file too large"
			 : r == -EBADFD ? "not a regular file"
					: strerror(-r));
		return r;
	}
	r = strv_push(&p->c->files, path);
	if (r < 0)
		return r;
	return parse_buffer(p, path, buf, len);
}

static int dropin_filter(const struct dirent *d)
{
	size_t n = strlen(d->d_name);

	return d->d_name[0] != '.' && n > 5 && strcmp(d->d_name + n - 5, ".conf") == 0;
}

static int dropin_compare(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int config_defaults(struct parse *p)
{
	p->file = "(built-in default)";
	p->line = 0;
	for (size_t i = 0; i < NKEYS; i++) {
		if (!keys[i].def)
			continue;
		p->def_state.listen_set = false;
		if (set_value(p, &keys[i], keys[i].scope == KEY_GLOBAL ? (void *)p->c : (void *)&p->c->def,
			      &p->def_state, keys[i].def) < 0)
			return p->r;
	}
	return 0;
}

static int bytes_copy(struct bytes *to, const struct bytes *from)
{
	to->data = malloc(from->len + 1);
	if (!to->data)
		return -ENOMEM;
	memcpy(to->data, from->data, from->len);
	to->data[from->len] = '\0';
	to->len = from->len;
	return 0;
}

/* Copies into a listener every per-connection key it did not set. The
 * payload is shared later (share_payloads()), addresses are never inherited. */
static int inherit(struct service *svc, const struct svc_state *st, const struct service *def)
{
	bool payload = false;

	for (size_t i = 0; i < NKEYS; i++) {
		const struct key *k = &keys[i];
		void *to = field_of(svc, k);
		const void *from = field_of((void *)def, k);

		if (k->scope != KEY_SERVICE)
			continue;
		if (k->offset == offsetof(struct service, payload)) {
			payload = payload || st->set[i];
			continue;
		}
		if (st->set[i])
			continue;
		switch (k->type) {
		case KEY_UINT:
		case KEY_RATE:
		case KEY_PROXY:
			*(unsigned *)to = *(const unsigned *)from;
			break;
		case KEY_DURATION:
			*(uint64_t *)to = *(const uint64_t *)from;
			break;
		case KEY_BOOL:
			*(bool *)to = *(const bool *)from;
			break;
		case KEY_OVERLOAD:
		case KEY_LEVEL:
			*(int *)to = *(const int *)from;
			break;
		case KEY_TEXT:
			if (bytes_copy(to, from) < 0)
				return -ENOMEM;
			break;
		case KEY_PREFIXES: {
			struct prefixes *t = to;
			const struct prefixes *f = from;

			if (f->n) {
				t->v = malloc(f->n * sizeof(*t->v));
				if (!t->v)
					return -ENOMEM;
				memcpy(t->v, f->v, f->n * sizeof(*t->v));
				t->n = f->n;
			}
			break;
		}
		case KEY_FILE:
		case KEY_ADDRESS:
		case KEY_ENDPOINT:
			break;
		}
	}
	if (!payload) {
		/* def's payload is already a blob: share it. */
		svc->payload_blob = blob_ref(def->payload_blob);
		svc->payload = def->payload;
		if (def->payload_file) {
			svc->payload_file = strdup(def->payload_file);
			if (!svc->payload_file)
				return -ENOMEM;
		}
	}
	return 0;
}

static int build_acl(struct service *svc)
{
	for (size_t i = 0; i < svc->allow.n; i++)
		if (acl_add(&svc->acl, &svc->allow.v[i], true) < 0)
			return -ENOMEM;
	for (size_t i = 0; i < svc->deny.n; i++)
		if (acl_add(&svc->acl, &svc->deny.v[i], false) < 0)
			return -ENOMEM;
	for (size_t i = 0; i < svc->proxy_from.n; i++)
		if (acl_add(&svc->proxy_acl, &svc->proxy_from.v[i], true) < 0)
			return -ENOMEM;
	return 0;
}

/* A blob of x's with these bytes, if any. */
static struct blob *find_blob(const struct config *x, const struct bytes *b)
{
	for (size_t i = 0; i <= x->nlisteners; i++) {
		const struct service *s = i == 0 ? &x->def : x->listeners[i - 1];

		if (s->payload_blob && s->payload.len == b->len && memcmp(s->payload.data, b->data, b->len) == 0)
			return s->payload_blob;
	}
	return NULL;
}

/* Makes a service's parsed payload bytes its immutable blob: one with the
 * same bytes where there is one (another listener, or prev's), so that however
 * many configs clients still hold after reloads, a payload is in memory once. */
static int share_payload(struct config *c, struct service *svc, const struct config *prev)
{
	struct blob *b = find_blob(c, &svc->payload);

	if (!b && prev)
		b = find_blob(prev, &svc->payload);
	if (b) {
		b = blob_ref(b);
		free(svc->payload.data);
	} else {
		b = blob_new(svc->payload.data, svc->payload.len);
		if (!b)
			return -ENOMEM;
	}
	svc->payload_blob = b;
	svc->payload.data = b->data;
	return 0;
}

/* After the last file: blobs, inheritance, access lists. */
static int finish(struct parse *p, const struct config *prev)
{
	struct config *c = p->c;
	int r;

	r = share_payload(c, &c->def, prev);
	for (size_t i = 0; r == 0 && i < c->nlisteners; i++) {
		struct service *svc = c->listeners[i];
		bool own = false;

		for (size_t j = 0; j < NKEYS; j++)
			if (keys[j].scope == KEY_SERVICE && keys[j].offset == offsetof(struct service, payload))
				own = own || p->states[i]->set[j];
		if (own)
			r = share_payload(c, svc, prev);
		if (r == 0)
			r = inherit(svc, p->states[i], &c->def);
	}
	for (size_t i = 0; r == 0 && i <= c->nlisteners; i++)
		r = build_acl(i == 0 ? &c->def : c->listeners[i - 1]);
	/* Never guess who sent a PROXY header: a listener that expects one
	 * names the balancers that may send it. */
	for (size_t i = 0; r == 0 && i <= c->nlisteners; i++) {
		const struct service *svc = i == 0 ? &c->def : c->listeners[i - 1];
		const struct svc_state *st = i == 0 ? &p->def_state : p->states[i - 1];

		if (!svc->proxy || svc->proxy_from.n)
			continue;
		if (!st->proxy_file)
			st = &p->def_state;
		p->file = st->proxy_file ? st->proxy_file : "(built-in default)";
		p->line = st->proxy_line;
		return fail(p, -EINVAL,
			    "%s%s%sproxy_protocol needs proxy_from = (the addresses of the balancers that may send the "
			    "header)",
			    svc->name ? "[listener " : "", svc->name ? svc->name : "", svc->name ? "]: " : "");
	}
	return r;
}

/* A first load: config_reload() with no previous config to share with. */
int config_load(const char *path, struct config **ret, char *err, size_t errlen)
{
	return config_reload(path, NULL, ret, err, errlen);
}

/* Loads path and then path.d/ *.conf in byte order into a new config, which
 * shares its payloads with prev (may be NULL) where the bytes are the same.
 * On failure err holds "FILE:LINE: message". */
int config_reload(const char *path, const struct config *prev, struct config **ret, char *err, size_t errlen)
{
	struct parse p = { .err = err, .errlen = errlen };
	_cleanup_free_ char *dir = NULL;
	struct dirent **list = NULL;
	char name[NAME_SHOWN];
	int n, r;

	err[0] = '\0';
	p.c = calloc(1, sizeof(*p.c));
	if (!p.c)
		return -ENOMEM;
	atomic_init(&p.c->refs, 1);
	r = config_defaults(&p);
	if (r < 0)
		goto fail;
	r = parse_file(&p, path);
	if (r < 0)
		goto fail;
	if (asprintf(&dir, "%s.d", path) < 0) {
		dir = NULL;
		r = -ENOMEM;
		goto fail;
	}
	n = scandir(dir, &list, dropin_filter, dropin_compare);
	if (n < 0 && errno != ENOENT && errno != ENOTDIR) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", payload_escape_name(dir, name, sizeof(name)), strerror(-r));
		goto fail;
	}
	for (int i = 0; i < n; i++) {
		_cleanup_free_ char *f = NULL;

		if (r == 0 && asprintf(&f, "%s/%s", dir, list[i]->d_name) < 0) {
			f = NULL;
			r = -ENOMEM;
		}
		if (r == 0)
			r = parse_file(&p, f);
		free(list[i]);
	}
	free(list);
	if (r == 0)
		r = finish(&p, prev);
	if (r < 0)
		goto fail;
	for (size_t i = 0; i < p.c->nlisteners; i++)
		free(p.states[i]);
	*ret = p.c;
	return 0;
fail:
	if (err[0] == '\0')
		snprintf(err, errlen, "%s: %s", payload_escape_name(path, name, sizeof(name)), strerror(-r));
	for (size_t i = 0; i < p.c->nlisteners; i++)
		free(p.states[i]);
	config_unref(p.c);
	return r;
}

struct config *config_ref(struct config *c)
{
	if (c)
		atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
	return c;
}

static void service_clear(struct service *s)
{
	if (s->payload_blob)
		blob_unref(s->payload_blob);
	else
		free(s->payload.data); /* a load that failed before share_payload() */
	free(s->payload_file);
	free(s->busy_message.data);
	free(s->allow.v);
	free(s->deny.v);
	free(s->proxy_from.v);
	acl_free(s->acl);
	acl_free(s->proxy_acl);
	strv_free(s->listen);
	free(s->name);
}

struct config *config_unref(struct config *c)
{
	if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
		return NULL;
	service_clear(&c->def);
	for (size_t i = 0; i < c->nlisteners; i++) {
		service_clear(c->listeners[i]);
		free(c->listeners[i]);
	}
	strv_free(c->files);
	free(c->metrics_address);
	free(c);
	return NULL;
}

/* The service a socket named name is served with: its [listener] section,
 * or the global settings. */
const struct service *config_service(const struct config *c, const char *name)
{
	for (size_t i = 0; name && i < c->nlisteners; i++)
		if (strcmp(c->listeners[i]->name, name) == 0)
			return c->listeners[i];
	return &c->def;
}

/* Prints escaped bytes as a value inih reads back: long values continue on
 * indented lines, and spaces at either end of a line are escaped. */
static void print_text(FILE *f, const char *name, const struct bytes *b)
{
	size_t col = 0;

	fprintf(f, "%s = ", name);
	for (size_t i = 0; i < b->len; i++) {
		char tok[16];
		bool last_on_line = i + 1 == b->len || col + 1 >= 96;

		if (b->data[i] == ' ' && (col == 0 || last_on_line))
			snprintf(tok, sizeof(tok), "\\x20");
		else
			payload_escape(&b->data[i], 1, tok, sizeof(tok));
		fputs(tok, f);
		col += strlen(tok);
		if (col >= 96 && i + 1 < b->len) {
			fputs("\n    ", f);
			col = 0;
		}
	}
	fputc('\n', f);
}

static void print_key(FILE *f, const struct key *k, const void *base, bool listener)
{
	const void *field = (const char *)base + k->offset;
	char buf[INET6_ADDRSTRLEN + 8];

	switch (k->type) {
	case KEY_UINT:
		fprintf(f, "%s = %u\n", k->name, *(const unsigned *)field);
		break;
	case KEY_RATE:
		if (*(const unsigned *)field)
			fprintf(f, "%s = %u/s\n", k->name, *(const unsigned *)field);
		else
			fprintf(f, "%s = 0\n", k->name);
		break;
	case KEY_DURATION:
		format_duration(*(const uint64_t *)field, buf, sizeof(buf));
		fprintf(f, "%s = %s\n", k->name, buf);
		break;
	case KEY_BOOL:
		fprintf(f, "%s = %s\n", k->name, *(const bool *)field ? "yes" : "no");
		break;
	case KEY_LEVEL:
		fprintf(f, "%s = %s\n", k->name, log_level_name(*(const int *)field));
		break;
	case KEY_OVERLOAD:
		fprintf(f, "%s = %s\n", k->name, *(const int *)field == OVERLOAD_BUSY ? "busy" : "close");
		break;
	case KEY_PROXY: {
		static const char *const modes[] = { "no", "v1", "v2", "any" };

		fprintf(f, "%s = %s\n", k->name, modes[*(const unsigned *)field & 3]);
		break;
	}
	case KEY_TEXT: {
		const struct service *svc = base;

		if (k->offset == offsetof(struct service, payload) && svc->payload_file)
			break;
		print_text(f, k->name, field);
		break;
	}
	case KEY_FILE: {
		const struct service *svc = base;

		if (svc->payload_file)
			fprintf(f, "%s = %s\n", k->name, svc->payload_file);
		fprintf(f, "# payload: %zu bytes\n", svc->payload.len);
		break;
	}
	case KEY_PREFIXES: {
		const struct prefixes *l = field;

		/* An empty list is printed too: in a listener, so it does not
		 * read back as inheriting the global one. */
		if (l->n == 0)
			fprintf(f, "%s =\n", k->name);
		for (size_t i = 0; i < l->n; i++) {
			prefix_format(&l->v[i], buf, sizeof(buf));
			fprintf(f, "%s = %s\n", k->name, buf);
		}
		break;
	}
	case KEY_ADDRESS:
		for (char **a = *(char **const *)field; a && *a; a++)
			fprintf(f, "%s = %s\n", k->name, *a);
		break;
	case KEY_ENDPOINT: {
		const char *a = *(char *const *)field;

		fprintf(f, "%s =%s%s\n", k->name, a ? " " : "", a ? a : "");
		break;
	}
	}
}

void config_print(const struct config *c, FILE *f)
{
	const char *section = "";
	char name[PATH_MAX];

	fprintf(f, "# poold effective configuration, read from:\n");
	for (char **i = c->files; i && *i; i++)
		fprintf(f, "#   %s\n", payload_escape_name(*i, name, sizeof(name)));
	for (size_t i = 0; i < NKEYS; i++) {
		const struct key *k = &keys[i];

		if (strcmp(section, k->section) != 0) {
			section = k->section;
			fprintf(f, "\n[%s]\n", section);
		}
		print_key(f, k, k->scope == KEY_GLOBAL ? (const void *)c : (const void *)&c->def, false);
	}
	/* Every key of every listener, inherited or not: what it really uses. */
	for (size_t l = 0; l < c->nlisteners; l++) {
		fprintf(f, "\n[listener %s]\n", c->listeners[l]->name);
		for (size_t i = 0; i < NKEYS; i++)
			if (keys[i].scope == KEY_SERVICE)
				print_key(f, &keys[i], c->listeners[l], true);
	}
}
