/* notify.c - the sd_notify() protocol. Called from the reactor thread only,
 * so STATUS= lines come in order. RELOADING=1 carries MONOTONIC_USEC as
 * systemd 253+ expects; systemd 252 ignores it harmlessly. A status quoting a
 * file name or a client's string has its control characters escaped
 * (log_escape()): a newline would end STATUS= and start another assignment. */
#include "notify.h"
#include "log.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>

void notify_ready(void)
{
	sd_notify(0, "READY=1");
}

void notify_reloading(void)
{
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, now_usec());
}

void notify_stopping(void)
{
	sd_notify(0, "STOPPING=1");
}

void notify_status(const char *status)
{
	char buf[4096]; /* a longer status is cut */

	log_escape(status, buf, sizeof(buf));
	sd_notifyf(0, "STATUS=%s", buf);
}

void notify_watchdog(void)
{
	sd_notify(0, "WATCHDOG=1");
}

/* The keep-alive interval systemd asked for (WatchdogSec=), 0 if none. */
uint64_t notify_watchdog_usec(void)
{
	uint64_t usec = 0;

	if (sd_watchdog_enabled(0, &usec) <= 0)
		return 0;
	return usec;
}
