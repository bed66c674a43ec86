/* fuzz_config.c - libFuzzer target for the config parser (config.c over
 * inih, with payload.c and util.c). Each input is written to a private temp
 * file and loaded with config_load(). A config that loads must also print
 * (config_print) to text that loads back to the very same settings: that is
 * what --print-config promises an operator. */
#include "config.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64], path[96], path2[96], blob[96];

static void cleanup(void)
{
	unlink(path);
	unlink(path2);
	unlink(blob);
	rmdir(dir);
}

/* One private directory per fuzzing process, removed at exit. */
static void setup(void)
{
	FILE *f;

	if (dir[0])
		return;
	strcpy(dir, "/tmp/fuzz-config-XXXXXX");
	if (!mkdtemp(dir))
		abort();
	snprintf(path, sizeof(path), "%s/poold.conf", dir);
	snprintf(path2, sizeof(path2), "%s/printed.conf", dir);
	snprintf(blob, sizeof(blob), "%s/p.bin", dir);
	/* A payload file that a relative "file = p.bin" can name. */
	f = fopen(blob, "w");
	if (!f)
		abort();
	fwrite("\0payload\xff", 1, 9, f);
	fclose(f);
	atexit(cleanup);
}

static void write_file(const char *p, const void *data, size_t size)
{
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0)
		abort();
	for (size_t off = 0; off < size;) {
		ssize_t n = write(fd, (const char *)data + off, size - off);

		if (n <= 0)
			abort();
		off += (size_t)n;
	}
	close(fd);
}

/* config_print() minus its "read from" header, which names the files. */
static char *print_body(const struct config *c, size_t *len)
{
	char *buf = NULL, *body;
	size_t n = 0;
	FILE *f = open_memstream(&buf, &n);

	if (!f)
		abort();
	config_print(c, f);
	fclose(f);
	body = strstr(buf, "\n\n");
	if (!body)
		abort();
	body = strdup(body);
	free(buf);
	*len = strlen(body);
	return body;
}

static void check_round_trip(const struct config *c)
{
	struct config *c2 = NULL;
	char err[1024];
	char *text = NULL, *text2;
	size_t len = 0, len2;
	FILE *f = open_memstream(&text, &len);

	if (!f)
		abort();
	config_print(c, f);
	fclose(f);
	write_file(path2, text, len);
	if (config_load(path2, &c2, err, sizeof(err)) < 0) {
		fprintf(stderr, "printed config does not load back: %s\n---\n%s---\n", err, text);
		abort();
	}
	free(text);
	text = print_body(c, &len);
	text2 = print_body(c2, &len2);
	if (len != len2 || memcmp(text, text2, len) != 0 || c->def.payload.len != c2->def.payload.len ||
	    memcmp(c->def.payload.data, c2->def.payload.data, c->def.payload.len) != 0 ||
	    c->def.busy_message.len != c2->def.busy_message.len ||
	    memcmp(c->def.busy_message.data, c2->def.busy_message.data, c->def.busy_message.len) != 0) {
		fprintf(stderr, "printed config reads back differently:\n---\n%s---\n%s---\n", text, text2);
		abort();
	}
	free(text);
	free(text2);
	config_unref(c2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *c = NULL;
	char err[1024];
	int r;

	setup();
	write_file(path, data, size);
	r = config_load(path, &c, err, sizeof(err));
	if (r < 0) {
		/* Every error names the file (and usually the line). */
		if (strncmp(err, path, strlen(path)) != 0 || !memchr(err, '\0', sizeof(err))) {
			fprintf(stderr, "bad error message for r=%d: %s\n", r, err);
			abort();
		}
		return 0;
	}
	if (c->threads < 1 || c->threads > 1024 || c->def.message_size < 1 || c->def.message_size > 1048576 ||
	    c->def.idle_usec < 10000 || c->def.session_usec < 10000 || !c->def.listen || !c->def.listen[0]) {
		fprintf(stderr, "config out of range after a successful load\n");
		abort();
	}
	check_round_trip(c);
	config_unref(c);
	return 0;
}
