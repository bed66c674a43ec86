/* modules: metrics log notify util */
/* test_metrics.c - metrics_render(): the text format 0.0.4 a scrape gets,
 * from a snapshot filled by hand (the HTTP side and live counters are
 * tested end to end in tests/integration/test_metrics.py). */
#include "metrics.h"
#include "tests.h"
#include "util.h"

#include <ctype.h>

static char *render(const struct metrics_snapshot *s, const char *version)
{
	char *out = NULL;
	size_t len = 0;

	if (metrics_render(s, version, &out, &len) < 0)
		return NULL;
	if (strlen(out) != len) {
		free(out);
		return NULL;
	}
	return out;
}

/* The value of the sample line that starts with name_and_labels + " ". */
static const char *sample(const char *text, const char *name_and_labels)
{
	size_t n = strlen(name_and_labels);

	for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (strncmp(l, name_and_labels, n) == 0 && l[n] == ' ')
			return l + n + 1;
	return NULL;
}

static bool value_is(const char *text, const char *name_and_labels, const char *value)
{
	const char *v = sample(text, name_and_labels);

	return v && strncmp(v, value, strlen(value)) == 0 && v[strlen(value)] == '\n';
}

static size_t count(const char *text, const char *needle)
{
	size_t n = 0;

	for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

TEST(empty_snapshot_has_every_family_once)
{
	struct metrics_snapshot s = { 0 };
	static const char *const families[] = {
		"poold_build_info gauge",
		"poold_connections_accepted_total counter",
		"poold_connections_refused_total counter",
		"poold_sessions_active gauge",
		"poold_connections_parked gauge",
		"poold_queue_waiting gauge",
		"poold_threads gauge",
		"poold_messages_received_total counter",
		"poold_bytes_received_total counter",
		"poold_bytes_sent_total counter",
		"poold_session_duration_seconds histogram",
		"poold_log_entries_dropped_total counter",
		"poold_reloads_total counter",
		"poold_config_last_reload_success_timestamp_seconds gauge",
		"poold_proxy_headers_total counter",
	};
	_cleanup_free_ char *t = render(&s, "1.2.3");
	char line[256];

	ASSERT(t);
	ASSERT_EQ(count(t, "# TYPE "), ARRAY_SIZE(families));
	ASSERT_EQ(count(t, "# HELP "), ARRAY_SIZE(families));
	for (size_t i = 0; i < ARRAY_SIZE(families); i++) {
		snprintf(line, sizeof(line), "# TYPE %s\n", families[i]);
		ASSERT_EQ(count(t, line), 1);
	}
	ASSERT(value_is(t, "poold_build_info{version=\"1.2.3\"}", "1"));
	ASSERT(value_is(t, "poold_sessions_active", "0"));
	ASSERT(value_is(t, "poold_threads{state=\"busy\"}", "0"));
	ASSERT(value_is(t, "poold_reloads_total{result=\"failure\"}", "0"));
	ASSERT(value_is(t, "poold_proxy_headers_total{result=\"timeout\"}", "0"));
	ASSERT(!strstr(t, "poold_connections_accepted_total{")); /* no listener, no sample */
	ASSERT_EQ(t[strlen(t) - 1], '\n');
}

TEST(values_land_on_their_lines)
{
	struct metrics_listener l[2] = { { .name = "default", .accepted = 7 }, { .name = "banner", .accepted = 2 } };
	struct metrics_snapshot s = {
		.listeners = l,
		.nlisteners = 2,
		.sessions_active = 5,
		.parked = 3,
		.queue_waiting = 1,
		.threads_busy = 2,
		.threads_idle = 6,
		.messages_received = 40,
		.bytes_received = 640,
		.bytes_sent = UINT64_MAX,
		.log_dropped = 9,
		.reloads_success = 4,
		.reloads_failure = 1,
		.last_reload_success_usec = UINT64_C(1700000000500000),
		.proxy_headers = { 10, 11, 12, 13 },
	};
	_cleanup_free_ char *t = NULL;

	l[1].refused[REFUSE_MAX_CONNECTIONS] = 17;
	l[0].refused[REFUSE_PROXY_TIMEOUT] = 1;
	t = render(&s, "0.1.0");
	ASSERT(t);
	ASSERT(value_is(t, "poold_connections_accepted_total{listener=\"default\"}", "7"));
	ASSERT(value_is(t, "poold_connections_accepted_total{listener=\"banner\"}", "2"));
	ASSERT(value_is(t, "poold_connections_refused_total{listener=\"banner\",reason=\"max_connections\"}", "17"));
	ASSERT(value_is(t, "poold_connections_refused_total{listener=\"default\",reason=\"proxy_timeout\"}", "1"));
	ASSERT(value_is(t, "poold_connections_refused_total{listener=\"default\",reason=\"max_connections\"}", "0"));
	ASSERT_EQ(count(t, "\npoold_connections_refused_total{"), 2 * REFUSE_N);
	ASSERT(value_is(t, "poold_sessions_active", "5"));
	ASSERT(value_is(t, "poold_connections_parked", "3"));
	ASSERT(value_is(t, "poold_queue_waiting", "1"));
	ASSERT(value_is(t, "poold_threads{state=\"busy\"}", "2"));
	ASSERT(value_is(t, "poold_threads{state=\"idle\"}", "6"));
	ASSERT(value_is(t, "poold_messages_received_total", "40"));
	ASSERT(value_is(t, "poold_bytes_received_total", "640"));
	ASSERT(value_is(t, "poold_bytes_sent_total", "18446744073709551615"));
	ASSERT(value_is(t, "poold_log_entries_dropped_total", "9"));
	ASSERT(value_is(t, "poold_reloads_total{result=\"success\"}", "4"));
	ASSERT(value_is(t, "poold_reloads_total{result=\"failure\"}", "1"));
	ASSERT(value_is(t, "poold_config_last_reload_success_timestamp_seconds", "1700000000.5"));
	ASSERT(value_is(t, "poold_proxy_headers_total{result=\"proxy\"}", "10"));
	ASSERT(value_is(t, "poold_proxy_headers_total{result=\"local\"}", "11"));
	ASSERT(value_is(t, "poold_proxy_headers_total{result=\"bad\"}", "12"));
	ASSERT(value_is(t, "poold_proxy_headers_total{result=\"timeout\"}", "13"));
}

TEST(histogram_buckets_are_cumulative_in_seconds)
{
	struct metrics_snapshot s = { 0 };
	_cleanup_free_ char *t = NULL;

	s.duration_bucket[0] = 3;         /* <= 1 ms */
	s.duration_bucket[2] = 4;         /* <= 10 ms */
	s.duration_bucket[11] = 1;        /* <= 300 s */
	s.duration_count = 3 + 4 + 1 + 2; /* 2 took longer than the last bound */
	s.duration_sum_usec = UINT64_C(1234567890);
	t = render(&s, "x");
	ASSERT(t);
	ASSERT(value_is(t, "poold_session_duration_seconds_bucket{le=\"0.001\"}", "3"));
	ASSERT(value_is(t, "poold_session_duration_seconds_bucket{le=\"0.005\"}", "3"));
	ASSERT(value_is(t, "poold_session_duration_seconds_bucket{le=\"0.01\"}", "7"));
	ASSERT(value_is(t, "poold_session_duration_seconds_bucket{le=\"1\"}", "7"));
	ASSERT(value_is(t, "poold_session_duration_seconds_bucket{le=\"60\"}", "7"));
	ASSERT(value_is(t, "poold_session_duration_seconds_bucket{le=\"300\"}", "8"));
	ASSERT(value_is(t, "poold_session_duration_seconds_bucket{le=\"+Inf\"}", "10"));
	ASSERT(value_is(t, "poold_session_duration_seconds_count", "10"));
	ASSERT(value_is(t, "poold_session_duration_seconds_sum", "1234.56789"));
	ASSERT_EQ(count(t, "poold_session_duration_seconds_bucket{"), METRICS_DURATION_BUCKETS + 1);
	/* The bucket lines come in order, +Inf last, then _sum and _count. */
	ASSERT(strstr(t, "le=\"0.001\"") < strstr(t, "le=\"0.005\""));
	ASSERT(strstr(t, "le=\"300\"") < strstr(t, "le=\"+Inf\""));
	ASSERT(strstr(t, "le=\"+Inf\"") < strstr(t, "_sum "));
	ASSERT(strstr(t, "_sum ") < strstr(t, "_count "));
}

TEST(bounds_increase)
{
	for (int b = 1; b < METRICS_DURATION_BUCKETS; b++)
		ASSERT(metrics_duration_bounds_usec[b] > metrics_duration_bounds_usec[b - 1]);
}

/* Label values escape backslash, double quote and newline (the text format's
 * three); everything else goes as it is. */
TEST(label_values_are_escaped)
{
	struct metrics_listener l = { .name = "a\"b\\c\nd e" };
	struct metrics_snapshot s = { .listeners = &l, .nlisteners = 1 };
	_cleanup_free_ char *t = render(&s, "1.0\"\\\n");

	ASSERT(t);
	ASSERT(value_is(t, "poold_build_info{version=\"1.0\\\"\\\\\\n\"}", "1"));
	ASSERT(value_is(t, "poold_connections_accepted_total{listener=\"a\\\"b\\\\c\\nd e\"}", "0"));
	ASSERT(value_is(t, "poold_connections_refused_total{listener=\"a\\\"b\\\\c\\nd e\",reason=\"deny\"}", "0"));
	/* No raw newline inside a sample: each line is a comment or a sample. */
	for (const char *line = t; *line; line = strchr(line, '\n') + 1)
		ASSERT(line[0] == '#' || strncmp(line, "poold_", 6) == 0);
}

TEST(every_refusal_has_a_snake_case_reason)
{
	for (int k = 0; k < REFUSE_N; k++) {
		const char *n = metrics_refusal_name(k);

		ASSERT(n && *n);
		for (const char *c = n; *c; c++)
			ASSERT(islower((unsigned char)*c) || *c == '_');
		for (int j = 0; j < k; j++)
			ASSERT(strcmp(n, metrics_refusal_name(j)) != 0);
	}
	ASSERT_STREQ(metrics_refusal_name(REFUSE_DENY), "deny");
	ASSERT_STREQ(metrics_refusal_name(REFUSE_NOT_ALLOWED), "not_allowed");
	ASSERT_STREQ(metrics_refusal_name(REFUSE_NO_FDS), "no_fds");
	ASSERT_STREQ(metrics_refusal_name(REFUSE_PROXY_UNTRUSTED), "proxy_untrusted");
	ASSERT(metrics_refusal_name(REFUSE_N) == NULL);
	ASSERT(metrics_refusal_name(-1) == NULL);
}

TEST(sixty_four_listeners)
{
	struct metrics_listener l[64] = { 0 };
	struct metrics_snapshot s = { .listeners = l, .nlisteners = 64 };
	char names[64][16];
	_cleanup_free_ char *t = NULL;

	for (int i = 0; i < 64; i++) {
		snprintf(names[i], sizeof(names[i]), "l%d", i);
		l[i].name = names[i];
		l[i].accepted = (uint64_t)i;
	}
	t = render(&s, "x");
	ASSERT(t);
	ASSERT(value_is(t, "poold_connections_accepted_total{listener=\"l63\"}", "63"));
	ASSERT_EQ(count(t, "\npoold_connections_refused_total{"), 64 * REFUSE_N);
}
