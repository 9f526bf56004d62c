/* SPDX-License-Identifier: MIT */
/*
 * log.c - one logging call with a level and an errno, to stderr (with a
 * timestamp and the level) or to syslog; and a rate limit for events a
 * client can cause at will.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>

#include "shmbusd.h"
#include "../lib/contract.h"

/* Set by the main thread (at start, and at a reload), read by every
 * thread that logs: atomics, relaxed (a line logged under the old
 * setting around a reload is no harm). */
static int max_level = SBD_INFO;
static bool use_syslog;

static const char *const names[] = { "error", "warning", "notice", "info",
				     "debug" };
static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO,
			    LOG_DEBUG };

void sbd_log_setup(int level, bool sys)
{
	bool was = __atomic_load_n(&use_syslog, __ATOMIC_RELAXED);

	__atomic_store_n(&max_level, level, __ATOMIC_RELAXED);
	if (sys && !was)
		openlog("shmbusd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
	__atomic_store_n(&use_syslog, sys, __ATOMIC_RELAXED);
	if (!sys && was)
		closelog();
}

int sbd_log_level_parse(const char *s)
{
	for (int i = 0; i <= SBD_DEBUG; i++)
		if (strcasecmp(s, names[i]) == 0)
			return i;
	return -1;
}

/* Up to n lines a second: the first opens a second's window. */
static bool allow_n(struct sbd_ratelimit *rl, unsigned n,
		    unsigned long *missed)
{
	uint64_t now = (uint64_t)sb_now_ns();

	if (now < rl->next_ns) {
		if (rl->used < n) {
			rl->used++;
			*missed = 0;
			return true;
		}
		rl->missed++;
		return false;
	}
	rl->next_ns = now + 1000000000u;
	rl->used = 1;
	*missed = rl->missed;
	rl->missed = 0;
	return true;
}

bool sbd_log_allow(struct sbd_ratelimit *rl, unsigned long *missed)
{
	return allow_n(rl, 1, missed);
}

void sbd_log(int level, int err, const char *fmt, ...)
{
	char msg[1024];
	size_t n;
	va_list ap;

	if (level > __atomic_load_n(&max_level, __ATOMIC_RELAXED))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (err) {
		n = strlen(msg);
		snprintf(msg + n, sizeof(msg) - n, ": %s",
			 shmbus_strerror(err < 0 ? err : -err));
	}
	if (__atomic_load_n(&use_syslog, __ATOMIC_RELAXED)) {
		syslog(prio[level], "%s", msg);
		return;
	}
	{
		struct timespec ts;
		struct tm tm;
		char when[32];

		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
		fprintf(stderr, "%s.%03ld shmbusd[%s]: %s\n", when,
			ts.tv_nsec / 1000000, names[level], msg);
	}
}

static void limited(struct sbd_ratelimit *rl, unsigned n, int level,
		    unsigned long total, const char *what, const char *fmt,
		    va_list ap)
{
	unsigned long missed;
	char msg[512];

	if (!allow_n(rl, n, &missed))
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (missed)
		sbd_log(level, 0, "%s [%lu more %s since the last line, %lu in "
			"all]", msg, missed, what, total);
	else
		sbd_log(level, 0, "%s [%lu %s in all]", msg, total, what);
}

void sbd_log_limited(struct sbd_ratelimit *rl, int level,
		     unsigned long total, const char *what, const char *fmt,
		     ...)
{
	va_list ap;

	va_start(ap, fmt);
	limited(rl, 1, level, total, what, fmt, ap);
	va_end(ap);
}

void sbd_log_burst(struct sbd_ratelimit *rl, unsigned n, int level,
		   unsigned long total, const char *what, const char *fmt,
		   ...)
{
	va_list ap;

	va_start(ap, fmt);
	limited(rl, n, level, total, what, fmt, ap);
	va_end(ap);
}
