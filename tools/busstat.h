/* SPDX-License-Identifier: MIT */
/*
 * busstat.h - what busstat.c shares with its full-screen view
 * (busstat_watch.c): one sample of the channels, and the words and
 * numbers every view prints.
 */
#ifndef BUSSTAT_H
#define BUSSTAT_H

#include <limits.h>
#include <stdint.h>

#include "shmbus.h"
#include "shmbus/layout.h"
#include "busstat_groups.h"

#define EXIT_FAIL 1		/* no such bus or channel, no terminal */
#define EXIT_USAGE 2
#define EXIT_BADCH 3
#define FIRST_SAMPLE_S 0.25	/* rates without an interval: over this */
#define NSUB 64u
#define NPROD 16u

enum format { TABLE, JSON, PROM, WATCH };

/* One channel, one sample. */
struct row {
	char name[256];
	int err;		/* 0, or why it could not be shown */
	struct shmbus_channel_info in;
	uint32_t subs, pubs;
	uint64_t lag_msgs, lag_bytes;	/* slowest subscriber */
	uint64_t lost;			/* sum over subscribers */
	uint64_t fill;			/* bytes not yet read by the slowest */
	double msg_rate, byte_rate;	/* per second */
	struct shmbus_repl_info rp;	/* replication, if any */
	struct sb_jnl_view jv;		/* the journal, if any */
};

/* The channels of one sample, as many as the directory holds: the array
 * grows (bounded by memory only); and their consumer groups. */
struct rows {
	struct row *r;
	int n, cap;
	struct group_rows groups;
};

/* A directory in text (see text()); TEXT_MAX: busstat_groups.h. */
#define TEXT_PATH (4 * PATH_MAX + 1)

/* Why a channel could not be shown, in a word or two. */
const char *err_word(int err);
/* Seconds on the monotonic clock. */
double now_s(void);
/* cur's rates from prev (matched by name), dt seconds apart. */
void rates(struct row *cur, int n, const struct row *prev, int pn,
	   double dt);
/* Every channel of dir, sampled into rows: how many, or -errno. */
int sample_all(const char *dir, struct rows *rows);

/* busstat -w (busstat_watch.c): the full-screen view; an exit status. */
int watch(const char *dir, double interval);

#endif /* BUSSTAT_H */
