/* standalone.c - runs a fuzz target over files without libFuzzer, for
 * compilers that lack it (gcc, or clang without libclang-rt): each argument
 * is a file or a directory of files, fed once to LLVMFuzzerTestOneInput().
 * Build it with -fsanitize=address,undefined so a regression still crashes. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (!f) {
		perror(path);
		return 1;
	}
	do {
		if (len == cap) {
			cap = cap ? cap * 2 : 4096;
			buf = realloc(buf, cap);
			if (!buf)
				abort();
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
	} while (n > 0);
	fclose(f);
	LLVMFuzzerTestOneInput(buf, len);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	int failed = 0, runs = 0;

	for (int i = 1; i < argc; i++) {
		struct stat st;

		if (argv[i][0] == '-')
			continue; /* libFuzzer flags such as -runs=0 */
		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			struct dirent **list;
			int n = scandir(argv[i], &list, NULL, alphasort);

			for (int j = 0; j < n; j++) {
				char p[4096];

				if (list[j]->d_name[0] != '.') {
					snprintf(p, sizeof(p), "%s/%s", argv[i], list[j]->d_name);
					failed += run_file(p);
					runs++;
				}
				free(list[j]);
			}
			free(n >= 0 ? list : NULL);
		} else {
			failed += run_file(argv[i]);
			runs++;
		}
	}
	printf("standalone: %d inputs, %d unreadable\n", runs, failed);
	return failed ? 1 : 0;
}
