/* reactor.h - the event loop: accepts clients, parks idle ones, enforces
 * limits and timeouts, and handles signals (reload, stop). */
#ifndef POOLD_REACTOR_H
#define POOLD_REACTOR_H

#include "listen.h"

struct reactor;
struct config;
struct log;

#include <stddef.h>

int reactor_new(const char *config_path, struct config *cfg, struct listeners *l, struct log *log, struct reactor **ret,
		char *err, size_t errlen);
int reactor_run(struct reactor *r);
struct reactor *reactor_free(struct reactor *r);

struct metrics_snapshot;
void reactor_metrics(void *reactor, struct metrics_snapshot *ret);

#endif
