/* config.c - parses /etc/poold/poold.conf and its poold.conf.d/ drop-ins with
 * inih into a fresh struct config, driven by one table of keys (name, type,
 * default, range). Nothing is applied until every file parsed cleanly; the
 * caller swaps configs. Errors come back as "FILE:LINE: message" and are never
 * logged here. Long lines are caught by our own line reader before inih sees
 * them: Debian's inih (INI_MAX_LINE 200) would silently split them. A config is
 * immutable once loaded; connections hold references (config_ref()), so a
 * reload never changes what an in-flight client is served. */
#include "config.h"
#include "log.h"
#include "payload.h"
#include "util.h"

#include <ctype.h>
#include <dirent.h>
#include <ini.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/syslog.h>

#define CONFIG_FILE_MAX ((size_t)1 << 20)  /* bytes per config file */
#define LINE_MAX_BYTES  (INI_MAX_LINE - 2) /* inih needs room for "\n\0" */
#define LISTEN_MAX      64
#define NAME_SHOWN      1024 /* bytes of an escaped file name in a message */

enum key_type { KEY_UINT, KEY_DURATION, KEY_BOOL, KEY_LEVEL, KEY_OVERLOAD, KEY_TEXT, KEY_FILE, KEY_ADDRESS };

struct key {
	const char *section, *name;
	enum key_type type;
	size_t offset;
	const char *def; /* default, in config syntax; NULL: none */
	uint64_t min, max;
};

#define OFF(f) offsetof(struct config, f)
#define MS     USEC_PER_MSEC
#define S      USEC_PER_SEC

/* The one list of keys: parsing, defaults, --print-config and the man page's
 * list all follow it. */
static const struct key keys[] = {
	{ "pool", "threads", KEY_UINT, OFF(threads), "4", 1, 1024 },
	{ "pool", "queue_max", KEY_UINT, OFF(queue_max), "1024", 1, 1048576 },
	{ "payload", "text", KEY_TEXT, OFF(payload), "(lp0\\nI1\\naI2\\naI7\\naI9\\naI0\\na.", 0, 0 },
	{ "payload", "file", KEY_FILE, OFF(payload), NULL, 0, 0 },
	{ "session", "max_messages", KEY_UINT, OFF(max_messages), "10", 0, 1000000 },
	{ "session", "message_size", KEY_UINT, OFF(message_size), "1024", 1, 1048576 },
	{ "session", "idle_timeout", KEY_DURATION, OFF(idle_usec), "10s", 10 * MS, 24 * 3600 * S },
	{ "session", "session_timeout", KEY_DURATION, OFF(session_usec), "60s", 10 * MS, 24 * 3600 * S },
	{ "session", "shutdown_timeout", KEY_DURATION, OFF(shutdown_usec), "10s", 0, 3600 * S },
	{ "session", "lingering_time", KEY_DURATION, OFF(linger_usec), "30s", 0, 3600 * S },
	{ "session", "lingering_timeout", KEY_DURATION, OFF(linger_idle_usec), "5s", 10 * MS, 3600 * S },
	{ "session", "lingering_bytes", KEY_UINT, OFF(linger_bytes), "1048576", 0, 1073741824 },
	{ "limits", "max_connections", KEY_UINT, OFF(max_connections), "4096", 1, 1048576 },
	{ "limits", "per_source", KEY_UINT, OFF(per_source), "0", 0, 1048576 },
	{ "limits", "overload", KEY_OVERLOAD, OFF(overload), "close", 0, 0 },
	{ "limits", "busy_message", KEY_TEXT, OFF(busy_message), "busy\\n", 0, 0 },
	{ "limits", "send_buffer", KEY_UINT, OFF(send_buffer), "0", 0, 67108864 },
	{ "listen", "address", KEY_ADDRESS, OFF(listen), "[::]:2727", 0, 0 },
	{ "log", "level", KEY_LEVEL, OFF(log_level), "info", 0, 0 },
	{ "log", "messages", KEY_BOOL, OFF(log_messages), "yes", 0, 0 },
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

	unsigned seen[ARRAY_SIZE(keys)]; /* line where this file set each key */
	const struct key *last;          /* key an indented line continues; NULL after [section] */
	bool payload_set;                /* this file chose the payload source */
	bool listen_set;                 /* this file replaced the inherited addresses */
};

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

static int set_text(struct parse *p, const struct key *k, const char *value, bool append)
{
	struct bytes *b = (struct bytes *)((char *)p->c + k->offset);
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

static int set_file(struct parse *p, const char *value)
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
	free(p->c->payload.data);
	p->c->payload.data = data;
	data = NULL;
	p->c->payload.len = len;
	free(p->c->payload_file);
	p->c->payload_file = path;
	path = NULL;
	return 0;
}

static int set_value(struct parse *p, const struct key *k, const char *value)
{
	void *field = (char *)p->c + k->offset;
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
	case KEY_OVERLOAD:
		if (strcmp(value, "close") == 0)
			*(int *)field = OVERLOAD_CLOSE;
		else if (strcmp(value, "busy") == 0)
			*(int *)field = OVERLOAD_BUSY;
		else
			return fail(p, -EINVAL, "%s: \"%s\" is not close or busy", k->name, value);
		return 0;
	case KEY_TEXT:
		r = set_text(p, k, value, false);
		if (r == 0 && k->offset == OFF(payload)) {
			free(p->c->payload_file);
			p->c->payload_file = NULL;
		}
		return r;
	case KEY_FILE:
		return set_file(p, value);
	case KEY_ADDRESS: {
		char host[256], port[128];
		size_t n = 0;

		if (config_split_address(value, host, sizeof(host), port, sizeof(port)) < 0)
			return fail(p, -EINVAL,
				    "%s: \"%s\" is not host:port, [ipv6]:port or an absolute unix socket path", k->name,
				    value);
		if (!p->listen_set) {
			strv_free(p->c->listen);
			p->c->listen = NULL;
			p->listen_set = true;
		}
		while (p->c->listen && p->c->listen[n])
			n++;
		if (n >= LISTEN_MAX)
			return fail(p, -E2BIG, "%s: more than %d addresses", k->name, LISTEN_MAX);
		if (strv_push(&p->c->listen, value) < 0)
			return fail(p, -ENOMEM, "out of memory");
		return 0;
	}
	}
	return fail(p, -EINVAL, "internal error: unknown key type");
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
	struct parse *p = user;
	const struct key *k = NULL;
	bool known_section = false;
	size_t i;

	if (p->r < 0)
		return 0;
	if (p->indented && p->last && strcmp(p->last->name, name) == 0 && strcmp(p->last->section, section) == 0) {
		/* inih hands us an indented line as more of the previous key. */
		if (p->last->type == KEY_TEXT)
			return set_text(p, p->last, value, true) == 0;
		fail(p, -EINVAL, "%s: indented line continues a key that takes a single value (remove the indentation)",
		     name);
		return 0;
	}
	for (i = 0; i < ARRAY_SIZE(keys); i++) {
		if (strcmp(keys[i].section, section) != 0)
			continue;
		known_section = true;
		if (strcmp(keys[i].name, name) == 0) {
			k = &keys[i];
			break;
		}
	}
	if (section[0] == '\0')
		return fail(p, -EINVAL, "%s: key outside a section (add [section] above it)", name), 0;
	if (!known_section)
		return fail(p, -EINVAL, "unknown section [%s]", section), 0;
	if (!k)
		return fail(p, -EINVAL, "unknown key \"%s\" in section [%s]", name, section), 0;
	p->last = k;
	if (k->offset == OFF(payload)) {
		if (p->payload_set) {
			for (size_t j = 0; j < ARRAY_SIZE(keys); j++)
				if (keys[j].offset == OFF(payload) && p->seen[j])
					return fail(p, -EINVAL,
						    "%s: duplicate payload source (payload %s already set at line %u)",
						    name, keys[j].name, p->seen[j]),
					       0;
		}
		p->payload_set = true;
	} else if (p->seen[i] && k->type != KEY_ADDRESS) {
		return fail(p, -EINVAL, "%s: duplicate key (already set at line %u)", name, p->seen[i]), 0;
	}
	p->seen[i] = p->line;
	return set_value(p, k, value) == 0;
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
	p->payload_set = false;
	p->listen_set = false;
	memset(p->seen, 0, sizeof(p->seen));
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
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		if (!keys[i].def)
			continue;
		p->listen_set = false;
		if (set_value(p, &keys[i], keys[i].def) < 0)
			return p->r;
	}
	return 0;
}

/* Makes the parsed payload bytes c's immutable blob: prev's, when they are
 * the same bytes, so that however many configs clients still hold after
 * reloads, an unchanged payload is in memory once. */
static int share_payload(struct config *c, const struct config *prev)
{
	struct blob *b;

	if (prev && prev->payload_blob && prev->payload.len == c->payload.len &&
	    memcmp(prev->payload.data, c->payload.data, c->payload.len) == 0) {
		b = blob_ref(prev->payload_blob);
		free(c->payload.data);
	} else {
		b = blob_new(c->payload.data, c->payload.len);
		if (!b)
			return -ENOMEM;
	}
	c->payload_blob = b;
	c->payload.data = b->data;
	return 0;
}

/* A first load: config_reload() with no previous config to share with. */
int config_load(const char *path, struct config **ret, char *err, size_t errlen)
{
	return config_reload(path, NULL, ret, err, errlen);
}

/* Loads path and then path.d/ *.conf in byte order into a new config, which
 * shares its payload with prev (may be NULL) when the bytes are the same.
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
		r = share_payload(p.c, prev);
	if (r < 0)
		goto fail;
	*ret = p.c;
	return 0;
fail:
	if (err[0] == '\0')
		snprintf(err, errlen, "%s: %s", payload_escape_name(path, name, sizeof(name)), strerror(-r));
	config_unref(p.c);
	return r;
}

struct config *config_ref(struct config *c)
{
	if (c)
		atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
	return c;
}

struct config *config_unref(struct config *c)
{
	if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
		return NULL;
	if (c->payload_blob)
		blob_unref(c->payload_blob);
	else
		free(c->payload.data); /* a load that failed before share_payload() */
	free(c->payload_file);
	free(c->busy_message.data);
	strv_free(c->listen);
	strv_free(c->files);
	free(c);
	return NULL;
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

void config_print(const struct config *c, FILE *f)
{
	const char *section = "";
	char name[PATH_MAX];

	fprintf(f, "# poold effective configuration, read from:\n");
	for (char **i = c->files; i && *i; i++)
		fprintf(f, "#   %s\n", payload_escape_name(*i, name, sizeof(name)));
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		const struct key *k = &keys[i];
		const void *field = (const char *)c + k->offset;
		char buf[32];

		if (strcmp(section, k->section) != 0) {
			section = k->section;
			fprintf(f, "\n[%s]\n", section);
		}
		switch (k->type) {
		case KEY_UINT:
			fprintf(f, "%s = %u\n", k->name, *(const unsigned *)field);
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
		case KEY_TEXT:
			if (k->offset == OFF(payload) && c->payload_file)
				break;
			print_text(f, k->name, field);
			break;
		case KEY_FILE:
			if (c->payload_file)
				fprintf(f, "%s = %s\n", k->name, c->payload_file);
			fprintf(f, "# payload: %zu bytes\n", c->payload.len);
			break;
		case KEY_ADDRESS:
			for (char **a = c->listen; a && *a; a++)
				fprintf(f, "%s = %s\n", k->name, *a);
			break;
		}
	}
}
