/* SPDX-License-Identifier: MIT */
/*
 * busstat_groups.c - busstat's consumer groups: each channel's groups
 * (its ".CHANNEL@GROUP.group" files), read-only, as a table below the
 * channels', a "groups" array in each channel's JSON object, and the
 * shmbus_group_* metrics.  A group file that cannot be read or validated
 * is shown as such, never skipped and never a crash: the library reads
 * it as untrusted input (sb_group_inspect()).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "busstat_groups.h"

#define NMEMBERS (sizeof(((struct group_row *)0)->m) / \
		  sizeof(((struct group_row *)0)->m[0]))

/* The walk over one channel's groups. */
struct walk {
	struct group_rows *gs;
	shmbus_channel *ch;
	const char *dir, *chan;
	int err;
};

static int one_group(const char *group, void *arg)
{
	struct walk *w = arg;
	struct group_rows *gs = w->gs;
	struct group_row *g;
	unsigned long faults;
	void *p = grow(gs->g, &gs->cap, gs->n, sizeof(*gs->g));

	if (!p) {
		w->err = -ENOMEM;
		return 1;
	}
	gs->g = p;
	g = &gs->g[gs->n];
	memset(g, 0, sizeof(*g));
	snprintf(g->chan, sizeof(g->chan), "%s", w->chan);
	snprintf(g->name, sizeof(g->name), "%s", group);
	g->n = NMEMBERS;
	faults = sb_sigbus_faults(NULL);
	g->err = sb_group_inspect(w->ch, w->dir, group, &g->st, g->m, &g->n);
	/* Its file cut short while it was read: what was cut read as zeros
	 * (lib/sigbus.c), which are not the group's figures. */
	if (!g->err && sb_sigbus_faults(NULL) != faults)
		g->err = -EBADMSG;
	if (g->err == -ENOENT)
		return 0;	/* deleted since it was listed */
	if (g->n > NMEMBERS)
		g->n = NMEMBERS;
	gs->n++;
	return 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct group_row *)a)->name,
		      ((const struct group_row *)b)->name);
}

/* The directory's groups, read once for every channel of a sample (and
 * again only once the directory changed): a directory of N channels is
 * not read N times. */
static struct {
	char dir[4096];
	int64_t ns;
	bool read;
	struct listed {
		char chan[256], group[64];
	} *e;
	int n, cap;
} dl;

static int list_one(const char *chan, const char *group, void *arg)
{
	void *p = grow(dl.e, &dl.cap, dl.n, sizeof(*dl.e));

	if (!p) {
		*(bool *)arg = true;	/* partial: read again next time */
		return 1;
	}
	dl.e = p;
	snprintf(dl.e[dl.n].chan, sizeof(dl.e[dl.n].chan), "%s", chan);
	snprintf(dl.e[dl.n].group, sizeof(dl.e[dl.n].group), "%s", group);
	dl.n++;
	return 0;
}

static void list_dir(const char *dir)
{
	bool partial = false, settled;
	int64_t t;

	if (sb_dir_time(dir, &t, &settled)) {
		dl.n = 0;
		dl.read = false;
		return;
	}
	if (dl.read && t == dl.ns && !strcmp(dl.dir, dir))
		return;
	dl.n = 0;
	/* Kept only if whole, and if its time can be trusted. */
	dl.read = sb_group_list_all(dir, list_one, &partial) >= 0 &&
		  !partial && settled;
	dl.ns = t;
	snprintf(dl.dir, sizeof(dl.dir), "%s", dir);
}

int groups_sample(struct group_rows *gs, shmbus_channel *ch, const char *dir,
		  const char *chan)
{
	struct walk w = { .gs = gs, .ch = ch, .dir = dir, .chan = chan };
	int first = gs->n;

	/* A directory that cannot be listed now (it was just read) has
	 * no group to show. */
	list_dir(dir);
	for (int i = 0; i < dl.n; i++)
		if (!strcmp(dl.e[i].chan, chan) && one_group(dl.e[i].group, &w))
			break;
	if (gs->n - first > 1)
		qsort(gs->g + first, (size_t)(gs->n - first), sizeof(*gs->g),
		      by_name);
	return w.err;
}

bool groups_bad(const struct group_rows *gs)
{
	for (int i = 0; i < gs->n; i++)
		if (gs->g[i].err)
			return true;
	return false;
}

static const char *mode_word(enum shmbus_group_mode m)
{
	return m == SHMBUS_GROUP_KEYED ? "keyed" :
	       m == SHMBUS_GROUP_SINGLE_ACTIVE ? "single_active" : "shared";
}

/* The status of a group, as a channel's: ok, or why it is not shown. */
static const char *status_word(int err)
{
	switch (-err) {
	case 0:
		return "ok";
	case EACCES:
	case EPERM:
		return "no-permission";
	case EPROTONOSUPPORT:
		return "incompatible";
	case EBADMSG:
	case EPROTO:
		return "corrupt";
	default:
		return "unreadable";
	}
}

/* Why, in words, for the table and JSON. */
static const char *why_word(int err)
{
	switch (-err) {
	case EBADMSG:
	case EPROTO:
		return "the group's file does not validate";
	case EPROTONOSUPPORT:
		return "the group's file has another layout version";
	default:
		return strerror(-err);
	}
}

/* head - floor; a floor past head (untrusted) is no lag. */
static uint64_t lag_of(const struct shmbus_group_stats *st)
{
	return st->head > st->floor ? st->head - st->floor : 0;
}

/* ------------------------------------------------------------- the table */

static void table_header(void)
{
	printf("%-16s %-16s %-13s %5s %5s %12s %7s %7s %7s %9s %6s %6s %7s "
	       "%s\n", "GROUP", "CHANNEL", "MODE", "MEMB", "INFL", "FLOOR",
	       "LAGB", "REDELIV", "EXPIRED", "DEAD+DROP", "WFULL", "LOST",
	       "OLDEST", "OWNER");
}

/* "name/pid" of the oldest lease's member, or "-". */
static const char *owner_word(const struct shmbus_group_stats *st,
			      char *buf, size_t len)
{
	char safe[TEXT_MAX];

	if (!st->in_flight)
		return "-";
	snprintf(buf, len, "%s/%u", text(st->oldest_member, safe),
		 st->oldest_pid);
	return buf;
}

static void table_members(const struct group_row *g)
{
	char name[TEXT_MAX], comm[TEXT_MAX];

	for (unsigned i = 0; i < g->n; i++) {
		const struct sb_member_info *m = &g->m[i];

		printf("  member %s: pid %u (%s), %s, delivered %llu, acked "
		       "%llu, stale %llu\n", text(m->name, name), m->pid,
		       text(m->comm, comm), m->alive ? "alive" : "dead",
		       (unsigned long long)m->delivered,
		       (unsigned long long)m->acked,
		       (unsigned long long)m->stale);
	}
}

static void table_row(const struct group_row *g)
{
	const struct shmbus_group_stats *s = &g->st;
	char name[TEXT_MAX], chan[TEXT_MAX], own[TEXT_MAX + 16], memb[24],
	     dead[40], a[16], b[16], c[16], d[16], e[16], f[16], h[16];

	text(g->name, name);
	text(g->chan, chan);
	if (g->err) {
		printf("%-16s %-16s %s (%s)\n", name, chan,
		       status_word(g->err), why_word(g->err));
		return;
	}
	snprintf(memb, sizeof(memb), "%u/%u", s->members, g->n);
	snprintf(dead, sizeof(dead), "%s+%s",
		 human(a, sizeof(a), (double)s->dead_lettered),
		 human(b, sizeof(b), (double)s->dropped));
	printf("%-16s %-16s %-13s %5s %5u %12llu %7s %7s %7s %9s %6s %6s %7s "
	       "%s\n", name, chan, mode_word(s->mode), memb, s->in_flight,
	       (unsigned long long)s->floor,
	       human_bytes(c, sizeof(c), (double)lag_of(s)),
	       human(d, sizeof(d), (double)s->redelivered),
	       human(e, sizeof(e), (double)s->expired), dead,
	       human(f, sizeof(f), (double)s->window_full),
	       human(h, sizeof(h), (double)s->lost),
	       s->in_flight ? seconds_word(a, sizeof(a),
					   (uint64_t)s->oldest_ns) : "-",
	       owner_word(s, own, sizeof(own)));
	table_members(g);
}

void groups_print_table(const struct group_rows *gs, const char *chan)
{
	int any = 0;

	for (int i = 0; i < gs->n; i++) {
		if (chan && strcmp(gs->g[i].chan, chan))
			continue;
		if (!any++)
			table_header();
		table_row(&gs->g[i]);
	}
}

/* ----------------------------------------------------------------- JSON */

static void json_members(const struct group_row *g)
{
	printf(",\"members_alive\":%u,\"members\":[", g->st.members);
	for (unsigned i = 0; i < g->n; i++) {
		const struct sb_member_info *m = &g->m[i];

		printf("%s{\"name\":", i ? "," : "");
		json_str(m->name);
		printf(",\"pid\":%u,\"process\":", m->pid);
		json_str(m->comm);
		printf(",\"alive\":%s,\"delivered\":%llu,\"acked\":%llu,"
		       "\"stale\":%llu}", m->alive ? "true" : "false",
		       (unsigned long long)m->delivered,
		       (unsigned long long)m->acked,
		       (unsigned long long)m->stale);
	}
	printf("]");
}

static void json_counters(const struct shmbus_group_stats *s)
{
	printf(",\"delivered\":%llu,\"redelivered\":%llu,\"acked\":%llu,"
	       "\"nacked\":%llu,\"expired\":%llu,\"released\":%llu,"
	       "\"dead_lettered\":%llu,\"dropped\":%llu,\"window_full\":%llu,"
	       "\"lost\":%llu,\"lost_bytes\":%llu,\"lane_moves\":%llu",
	       (unsigned long long)s->delivered,
	       (unsigned long long)s->redelivered,
	       (unsigned long long)s->acked, (unsigned long long)s->nacked,
	       (unsigned long long)s->expired,
	       (unsigned long long)s->released,
	       (unsigned long long)s->dead_lettered,
	       (unsigned long long)s->dropped,
	       (unsigned long long)s->window_full,
	       (unsigned long long)s->lost,
	       (unsigned long long)s->lost_bytes,
	       (unsigned long long)s->lane_moves);
}

static void json_oldest(const struct shmbus_group_stats *s)
{
	printf(",\"oldest_lease_seconds\":%.6f,\"oldest_lease_member\":",
	       s->in_flight ? (double)s->oldest_ns / 1e9 : 0.0);
	if (!s->in_flight) {
		printf("null,\"oldest_lease_pid\":null");
		return;
	}
	json_str(s->oldest_member);
	printf(",\"oldest_lease_pid\":%u", s->oldest_pid);
}

static void json_group(const struct group_row *g)
{
	const struct shmbus_group_stats *s = &g->st;

	printf("{\"name\":");
	json_str(g->name);
	printf(",\"status\":\"%s\"", status_word(g->err));
	if (g->err) {
		printf(",\"error\":");
		json_str(why_word(g->err));
		printf("}");
		return;
	}
	printf(",\"mode\":\"%s\",\"window\":%u,\"lanes\":%u",
	       mode_word(s->mode), s->window, s->lanes);
	json_members(g);
	printf(",\"in_flight\":%u,\"floor\":%llu,\"lag_bytes\":%llu",
	       s->in_flight, (unsigned long long)s->floor,
	       (unsigned long long)lag_of(s));
	if (s->mode == SHMBUS_GROUP_SHARED)
		printf(",\"claim\":%llu", (unsigned long long)s->claim);
	else
		printf(",\"claim\":null");
	json_counters(s);
	json_oldest(s);
	printf("}");
}

void groups_print_json(const struct group_rows *gs, const char *chan)
{
	int k = 0;

	printf(",\"groups\":[");
	for (int i = 0; i < gs->n; i++) {
		if (strcmp(gs->g[i].chan, chan))
			continue;
		if (k++)
			putchar(',');
		json_group(&gs->g[i]);
	}
	printf("]");
}

/* ----------------------------------------------------------- Prometheus */

enum gvalue {
	GV_U64,			/* the uint64_t at `off` in the stats */
	GV_UP, GV_MEMBERS, GV_IN_FLIGHT, GV_LAG, GV_OLDEST, GV_OLDEST_PID,
};

struct gmetric {
	const char *name, *type, *help;
	enum gvalue v;
	size_t off;
};

#define ST(f) offsetof(struct shmbus_group_stats, f)

static const struct gmetric gmetrics[] = {
	{ "shmbus_group_up", "gauge", "1 if the group's file could be read "
	  "and validated, else 0.", GV_UP, 0 },
	{ "shmbus_group_members", "gauge", "Members joined and alive.",
	  GV_MEMBERS, 0 },
	{ "shmbus_group_in_flight", "gauge", "Leases held (shared) or lanes "
	  "owned (keyed, single_active).", GV_IN_FLIGHT, 0 },
	{ "shmbus_group_acknowledged_position", "gauge", "The group's floor: "
	  "every message below this position is acknowledged.", GV_U64,
	  ST(floor) },
	{ "shmbus_group_lag_bytes", "gauge", "Bytes between head and the "
	  "group's floor.", GV_LAG, 0 },
	{ "shmbus_group_oldest_lease_seconds", "gauge", "Age of the oldest "
	  "lease held, 0 if none.", GV_OLDEST, 0 },
	{ "shmbus_group_oldest_lease_pid", "gauge", "Pid of the member that "
	  "holds the oldest lease, 0 if none.", GV_OLDEST_PID, 0 },
	{ "shmbus_group_delivered_total", "counter", "Deliveries to members, "
	  "repeated ones included.", GV_U64, ST(delivered) },
	{ "shmbus_group_redelivered_total", "counter", "Deliveries that were "
	  "repeated (a dead member, an expired lease, a nack).", GV_U64,
	  ST(redelivered) },
	{ "shmbus_group_acked_total", "counter", "Acknowledgements.", GV_U64,
	  ST(acked) },
	{ "shmbus_group_nacked_total", "counter", "Messages given back by "
	  "members (nack).", GV_U64, ST(nacked) },
	{ "shmbus_group_expired_total", "counter", "Leases taken back when "
	  "their term passed.", GV_U64, ST(expired) },
	{ "shmbus_group_released_total", "counter", "Leases taken back from "
	  "members that left or died.", GV_U64, ST(released) },
	{ "shmbus_group_dead_lettered_total", "counter", "Poison messages "
	  "copied to the dead-letter channel.", GV_U64, ST(dead_lettered) },
	{ "shmbus_group_dropped_total", "counter", "Poison messages dropped "
	  "(no dead-letter channel).", GV_U64, ST(dropped) },
	{ "shmbus_group_window_full_total", "counter", "Polls that found the "
	  "window of leases in flight full.", GV_U64, ST(window_full) },
	{ "shmbus_group_messages_lost_total", "counter", "Messages "
	  "overwritten before the group took them (overwrite policy).",
	  GV_U64, ST(lost) },
};

/* The sample's value: integers exactly, seconds as a fraction. */
static void prom_value(const struct gmetric *gm, const struct group_row *g)
{
	const struct shmbus_group_stats *s = &g->st;
	uint64_t v;

	switch (gm->v) {
	case GV_OLDEST:
		printf(" %.17g\n", s->in_flight ? (double)s->oldest_ns / 1e9
						: 0.0);
		return;
	case GV_UP: v = !g->err; break;
	case GV_MEMBERS: v = s->members; break;
	case GV_IN_FLIGHT: v = s->in_flight; break;
	case GV_LAG: v = lag_of(s); break;
	case GV_OLDEST_PID: v = s->in_flight ? s->oldest_pid : 0; break;
	default: memcpy(&v, (const char *)s + gm->off, sizeof(v)); break;
	}
	printf(" %llu\n", (unsigned long long)v);
}

/* {channel="...",group="..." (the caller closes the brace). */
static void prom_labels(const struct group_row *g)
{
	printf("{channel=\"");
	escaped(g->chan, false);
	printf("\",group=\"");
	escaped(g->name, false);
	putchar('"');
}

/* One family: its HELP and TYPE, then a sample per group (the readable
 * ones, but for shmbus_group_up). */
static void prom_family(const struct gmetric *gm, const struct group_rows *gs)
{
	int shown = 0;

	for (int i = 0; i < gs->n; i++) {
		const struct group_row *g = &gs->g[i];

		if (g->err && gm->v != GV_UP)
			continue;
		if (!shown++)
			printf("# HELP %s %s\n# TYPE %s %s\n", gm->name,
			       gm->help, gm->name, gm->type);
		printf("%s", gm->name);
		prom_labels(g);
		putchar('}');
		prom_value(gm, g);
	}
}

/* shmbus_group_info{channel,group,mode} 1: the mode, as a label. */
static void prom_info(const struct group_rows *gs)
{
	int shown = 0;

	for (int i = 0; i < gs->n; i++) {
		const struct group_row *g = &gs->g[i];

		if (g->err)
			continue;
		if (!shown++)
			printf("# HELP shmbus_group_info The group's mode, as "
			       "a label (value 1).\n"
			       "# TYPE shmbus_group_info gauge\n");
		printf("shmbus_group_info");
		prom_labels(g);
		printf(",mode=\"%s\"} 1\n", mode_word(g->st.mode));
	}
}

void groups_print_prom(const struct group_rows *gs)
{
	prom_info(gs);
	for (size_t k = 0; k < sizeof(gmetrics) / sizeof(gmetrics[0]); k++)
		prom_family(&gmetrics[k], gs);
}
