/* SPDX-License-Identifier: MIT */
/*
 * groups_conf.c - a channel's consumer_groups line in shmbusd's config:
 * "NAME key=value ...; NAME ..." (docs/groups.md §4), checked by the
 * library's own rule for a group's settings.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/contract.h"
#include "shmbusd.h"

/* One "NAME key=value ..." of a channel's consumer_groups line. */
static int parse_one(char *s, struct sbd_group_conf *g, char *err, size_t n)
{
	char *save = NULL, *tok = strtok_r(s, " \t", &save);

	if (!tok || !sb_name_ok(tok, 63)) {
		snprintf(err, n, "'%s': a group name is 1 to 63 letters, "
			 "digits, '.', '_' or '-'", tok ? tok : "");
		return -1;
	}
	snprintf(g->name, sizeof(g->name), "%s", tok);
	shmbus_group_attr_init(&g->attr);
	while ((tok = strtok_r(NULL, " \t", &save))) {
		char *v = strchr(tok, '=');
		char *end = NULL;
		unsigned long long x = 0;

		if (!v) {
			snprintf(err, n, "'%s': expected key=value", tok);
			return -1;
		}
		*v++ = 0;
		if (strcmp(tok, "mode") && strcmp(tok, "start") &&
		    strcmp(tok, "dead_letter") && strcmp(tok, "window") &&
		    strcmp(tok, "lanes") && strcmp(tok, "max_deliveries") &&
		    strcmp(tok, "lease_ms")) {
			snprintf(err, n, "'%s': unknown group setting (mode, "
				 "window, lanes, max_deliveries, lease_ms, "
				 "dead_letter, start)", tok);
			return -1;
		}
		if (strcmp(tok, "mode") && strcmp(tok, "start") &&
		    strcmp(tok, "dead_letter")) {
			errno = 0;
			x = strtoull(v, &end, 10);
			if (errno || end == v || *end || x > UINT32_MAX) {
				snprintf(err, n, "%s='%s': expected a number",
					 tok, v);
				return -1;
			}
		}
		if (!strcmp(tok, "mode")) {
			if (!strcmp(v, "shared"))
				g->attr.mode = SHMBUS_GROUP_SHARED;
			else if (!strcmp(v, "keyed"))
				g->attr.mode = SHMBUS_GROUP_KEYED;
			else if (!strcmp(v, "single_active"))
				g->attr.mode = SHMBUS_GROUP_SINGLE_ACTIVE;
			else {
				snprintf(err, n, "mode='%s': expected shared, "
					 "keyed or single_active", v);
				return -1;
			}
		} else if (!strcmp(tok, "start")) {
			if (!strcmp(v, "newest"))
				g->attr.start = SHMBUS_START_NEWEST;
			else if (!strcmp(v, "oldest"))
				g->attr.start = SHMBUS_START_OLDEST;
			else {
				snprintf(err, n, "start='%s': expected newest "
					 "or oldest", v);
				return -1;
			}
		} else if (!strcmp(tok, "dead_letter")) {
			if (!sb_name_ok(v, 63)) {
				snprintf(err, n, "dead_letter='%s': a "
					 "dead-letter channel's name is 1 to 63 "
					 "letters, digits, '.', '_' or '-'", v);
				return -1;
			}
			snprintf(g->dead_letter, sizeof(g->dead_letter), "%s",
				 v);
			g->attr.dead_letter = NULL;	/* set when used */
		} else if (!strcmp(tok, "window")) {
			g->attr.window = (uint32_t)x;
		} else if (!strcmp(tok, "lanes")) {
			g->attr.lanes = (uint32_t)x;
		} else if (!strcmp(tok, "max_deliveries")) {
			g->attr.max_deliveries = x ? (uint32_t)x : UINT32_MAX;
		} else {	/* lease_ms */
			if (!x) {
				snprintf(err, n, "lease_ms=0: at least 1");
				return -1;
			}
			g->attr.lease_ns = (int64_t)x * 1000000;
		}
	}
	{
		struct shmbus_group_attr chk;

		if (sb_group_settings(&g->attr, &chk)) {
			snprintf(err, n, "group '%s': window must be a power "
				 "of two up to 65536, lanes 1 to 64, "
				 "max_deliveries at most 65535, lease_ms at "
				 "most 86400000", g->name);
			return -1;
		}
	}
	return 0;
}

int sbd_parse_groups(const char *v, struct sbd_chan_conf *cc, char *err,
		     size_t n)
{
	char buf[1024], *save = NULL, *one;

	if (strlen(v) >= sizeof(buf)) {
		snprintf(err, n, "too long (at most %zu bytes)",
			 sizeof(buf) - 1);
		return -1;
	}
	snprintf(buf, sizeof(buf), "%s", v);
	cc->ngroups = 0;
	for (one = strtok_r(buf, ";", &save); one;
	     one = strtok_r(NULL, ";", &save)) {
		if (cc->ngroups == SBD_MAX_GROUPS) {
			snprintf(err, n, "at most %d groups per channel",
				 SBD_MAX_GROUPS);
			return -1;
		}
		if (parse_one(one, &cc->groups[cc->ngroups], err, n))
			return -1;
		for (uint32_t i = 0; i < cc->ngroups; i++)
			if (!strcmp(cc->groups[i].name,
				    cc->groups[cc->ngroups].name)) {
				snprintf(err, n, "group '%s' named twice",
					 cc->groups[i].name);
				return -1;
			}
		cc->ngroups++;
	}
	return 0;
}

