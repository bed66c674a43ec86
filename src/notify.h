/* notify.h - what poold tells systemd: readiness, status, reload, stop and
 * watchdog keep-alives. Every call is a no-op outside systemd. */
#ifndef POOLD_NOTIFY_H
#define POOLD_NOTIFY_H

#include <stdint.h>

void notify_ready(void);
void notify_reloading(void);
void notify_stopping(void);
void notify_status(const char *status);
void notify_watchdog(void);
uint64_t notify_watchdog_usec(void);

#endif
