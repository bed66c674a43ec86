/* main.c - start-up and the ways out: command line, config, logging,
 * sockets (sd_listen_fds() before any thread exists), then the reactor and
 * its threads, the metrics endpoint's HTTP thread (after the signal mask is
 * set: it inherits it), READY=1, and STOPPING=1 on every exit. Exit codes
 * follow sysexits.h so systemd can tell a config error (78, not restarted)
 * from a crash. The only place that may exit the process. */
#include "config.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "reactor.h"
#include "util.h"

#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sysexits.h>

#ifndef POOLD_VERSION
#define POOLD_VERSION "unknown"
#endif

struct options {
	const char *config;
	bool check, print;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: poold [OPTIONS]\n"
		"Serve a payload to every client from a pool of threads (see poold(8)).\n\n"
		"  -c, --config FILE   read FILE and FILE.d/*.conf (default %s)\n"
		"      --check-config  check the configuration and exit (0 valid, 78 invalid)\n"
		"      --print-config  check it and print the effective settings\n"
		"      --version       print the version and exit\n"
		"  -h, --help          show this help and exit\n",
		CONFIG_DEFAULT_PATH);
}

static int parse_args(int argc, char **argv, struct options *o)
{
	enum { OPT_CHECK = 256, OPT_PRINT, OPT_VERSION };
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, OPT_CHECK },
		{ "print-config", no_argument, NULL, OPT_PRINT },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;

	o->config = CONFIG_DEFAULT_PATH;
	while ((c = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			o->config = optarg;
			break;
		case OPT_CHECK:
			o->check = true;
			break;
		case OPT_PRINT:
			o->print = o->check = true;
			break;
		case OPT_VERSION:
			printf("poold %s\n", POOLD_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EX_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "poold: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return EX_USAGE;
	}
	return -1; /* go on */
}

/* Start-up failures only: logged once, STOPPING=1, exit with a sysexits code. */
static int fatal(struct log *log, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fatal(struct log *log, int code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (log)
		log_event(log, LOG_ERR, NULL, NULL, "%s", msg);
	else
		fprintf(stderr, "poold: %s\n", msg);
	notify_status(msg);
	notify_stopping();
	return code;
}

/* systemd hands services a soft fd limit of 1024 and a high hard one; poold
 * never uses select(), so it may take the hard limit. */
static void raise_nofile(struct log *log, unsigned want)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)want + 64)
		log_event(log, LOG_WARNING, NULL, NULL,
			  "max_connections = %u is close to the open file limit %llu: clients past it will be "
			  "refused, ignoring.",
			  want, (unsigned long long)rl.rlim_cur);
}

static int run(int argc, char **argv)
{
	struct options o = { 0 };
	struct config *cfg = NULL;
	struct listeners listeners = { 0 };
	struct reactor *reactor = NULL;
	struct metrics *metrics = NULL;
	struct log *log = NULL;
	char err[1024];
	sigset_t mask;
	int r;

	r = parse_args(argc, argv, &o);
	if (r >= 0)
		return r;

	r = config_load(o.config, &cfg, err, sizeof(err));
	if (o.check) {
		if (r < 0) {
			fprintf(stderr, "%s\n", err);
			return EX_CONFIG;
		}
		/* Only systemd can tell whether a socket of that name exists:
		 * say what a section without addresses depends on. */
		for (size_t i = 0; i < cfg->nlisteners; i++)
			if (!cfg->listeners[i]->listen)
				fprintf(stderr,
					"poold: warning: [listener %s] has no address =: it serves only a socket that "
					"systemd passes with FileDescriptorName=%s\n",
					cfg->listeners[i]->name, cfg->listeners[i]->name);
		if (o.print)
			config_print(cfg, stdout);
		config_unref(cfg);
		return fflush(stdout) == 0 ? 0 : EX_IOERR;
	}

	log = log_new();
	if (!log)
		return fatal(NULL, EX_OSERR, "Failed to set up logging: out of memory");
	if (r < 0) {
		r = fatal(log, EX_CONFIG, "Failed to load configuration: %s", err);
		goto out;
	}
	log_set_level(log, cfg->log_level);

	/* Before any thread: the mask is inherited, and sd_listen_fds() unsets
	 * the environment, which is not thread-safe. */
	handled_signals(&mask);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);

	r = listen_open(cfg, &listeners, err, sizeof(err));
	if (r < 0) {
		r = fatal(log, EX_OSERR, "%s", err);
		goto out;
	}
	raise_nofile(log, cfg->max_connections);
	r = log_start(log);
	if (r < 0) {
		r = fatal(log, EX_OSERR, "Failed to start the log thread: %s", strerror(-r));
		goto out;
	}

	r = reactor_new(o.config, cfg, &listeners, log, &reactor, err, sizeof(err));
	if (r < 0) {
		r = fatal(log, EX_OSERR, "%s", err);
		goto out;
	}
	if (listeners.nmetrics > 0) {
		r = metrics_start(listeners.metrics_fds, listeners.nmetrics, reactor_metrics, reactor, log, &metrics,
				  err, sizeof(err));
		if (r < 0) {
			r = fatal(log, EX_OSERR, "Failed to start the metrics endpoint: %s", err);
			goto out;
		}
	} else if (listeners.activated && cfg->metrics_address) {
		log_event(log, LOG_NOTICE, NULL, NULL,
			  "[metrics] address = %s is not used: systemd passed the sockets and none named %s "
			  "(enable poold-metrics.socket), ignoring.",
			  cfg->metrics_address, LISTEN_METRICS_NAME);
	}
	r = reactor_run(reactor);
	if (r < 0)
		r = fatal(log, EX_OSERR, "Event loop failed: %s", strerror(-r));
	else
		notify_stopping();
out:
	/* Before the reactor: a scrape reads its counters. */
	metrics = metrics_stop(metrics);
	reactor = reactor_free(reactor);
	listen_close(&listeners);
	listen_close_metrics(&listeners);
	config_unref(cfg);
	log = log_free(log);
	return r;
}

int main(int argc, char **argv)
{
	return run(argc, argv);
}
