/* SPDX-License-Identifier: MIT */
/*
 * busstat_groups.h - busstat's view of consumer groups
 * (busstat_groups.c), and the helpers of busstat.c that it shares.
 *
 * A sample reads every group of every channel it shows into a
 * struct group_rows (through lib/contract.h: sb_group_list() and
 * sb_group_inspect(), on the channel busstat has open read-only); the
 * printers then write them as the table, JSON or Prometheus output.
 */
#ifndef BUSSTAT_GROUPS_H
#define BUSSTAT_GROUPS_H

#include <stdbool.h>
#include <stddef.h>

#include "shmbus.h"
#include "../lib/contract.h"

/* A name in text: 4 * 256 + 1 bytes hold any (see text()). */
#define TEXT_MAX (4 * 256 + 1)

/* One consumer group of a channel, one sample. */
struct group_row {
	char chan[256];
	char name[64];
	int err;		/* 0, or why its file could not be read */
	struct shmbus_group_stats st;
	unsigned n;		/* members joined, alive or not */
	struct sb_member_info m[64];
};

/* The groups of one sample, channel by channel, each channel's sorted
 * by name; the array grows. */
struct group_rows {
	struct group_row *g;
	int n, cap;
};

/* Reads the groups of channel `chan` (open read-only as ch) of
 * directory dir into gs, after what is there.  Returns 0 or -ENOMEM. */
int groups_sample(struct group_rows *gs, shmbus_channel *ch, const char *dir,
		  const char *chan);

/* Whether a group of the sample could not be read (busstat exits 3). */
bool groups_bad(const struct group_rows *gs);

/* The groups table, below the channels' (nothing if there is no group);
 * chan: only that channel's, NULL: all. */
void groups_print_table(const struct group_rows *gs, const char *chan);

/* ,"groups":[...] for channel chan. */
void groups_print_json(const struct group_rows *gs, const char *chan);

/* The shmbus_group_* metric families (none if there is no group). */
void groups_print_prom(const struct group_rows *gs);

/* busstat.c's helpers (see there). */
const char *text(const char *s, char *out);
void escaped(const char *s, bool json);
void json_str(const char *s);
const char *human(char *buf, size_t len, double v);
const char *human_bytes(char *buf, size_t len, double v);
const char *seconds_word(char *buf, size_t len, uint64_t ns);
void *grow(void *v, int *cap, int n, size_t size);

#endif /* BUSSTAT_GROUPS_H */
