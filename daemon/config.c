/* SPDX-License-Identifier: MIT */
/*
 * config.c - the bus's INI file, read with libinih and a table of keys.
 *
 *   [bus]              name, shm_dir, socket, limits, logging, admins
 *   [defaults]         publish / subscribe rules for channels that do not
 *                      set their own (and for channels created at run time)
 *   [channel NAME]     geometry, policy, placement, file ownership, rules
 *
 * Each key is one row: section, name, parser, offset of the field.  The
 * first wrong line stops the daemon with "file:line: reason"; checks that
 * involve several keys report the line of the key that breaks them.  A
 * file has exactly one [bus] and at most one [defaults]; a key is set at
 * most once in a section.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <grp.h>
#include <ini.h>
#include <numa.h>
#include <pwd.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "shmbusd.h"
#include "shmbus/group.h"
#include "shmbus/layout.h"
#include "../lib/contract.h"

enum section { S_BUS, S_DEFAULTS, S_CHANNEL, S_REPL, S_NONE };

typedef int (*parse_fn)(const char *v, void *field, char *err, size_t n);

struct key {
	enum section sec;
	const char *name;
	parse_fn parse;
	size_t off;
	size_t line_off;	/* where to note the line, or NO_LINE */
};

#define NO_LINE ((size_t)-1)

/* ---------------------------------------------------------------- parsers */

static int p_string63(const char *v, void *f, char *err, size_t n)
{
	size_t len = strlen(v);

	if (len == 0 || len > 63) {
		snprintf(err, n, "expected a name of 1 to 63 characters");
		return -1;
	}
	/* As the library's (sb_bus_name_ok()): a name clients can find by
	 * its bus file, never a hidden file nor "." or "..". */
	if (v[0] == '.') {
		snprintf(err, n, "'%s': a name may not start with '.'", v);
		return -1;
	}
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)v[i]) && !strchr("._-", v[i])) {
			snprintf(err, n, "'%s': only letters, digits, '.', "
				 "'_' and '-'", v);
			return -1;
		}
	memcpy(f, v, len + 1);
	return 0;
}

static int p_path(const char *v, void *f, char *err, size_t n)
{
	if (v[0] != '/' || strlen(v) >= PATH_MAX) {
		snprintf(err, n, "'%s': expected an absolute path", v);
		return -1;
	}
	strcpy(f, v);
	return 0;
}

static int p_sockpath(const char *v, void *f, char *err, size_t n)
{
	if (v[0] != '/' || strlen(v) >= 108) {
		snprintf(err, n, "'%s': expected an absolute path shorter "
			 "than 108 bytes", v);
		return -1;
	}
	strcpy(f, v);
	return 0;
}

/* A number, or with `suffix` a size (sb_parse_size(), the library's and
 * shmbusctl's rule). */
static int p_u64(const char *v, uint64_t *out, bool suffix, char *err,
		 size_t n)
{
	size_t digits = strspn(v, "0123456789");
	int rc;

	if (digits == 0) {
		snprintf(err, n, "'%s': expected a number", v);
		return -1;
	}
	if (!suffix && v[digits]) {
		snprintf(err, n, "'%s': unexpected '%s'", v, v + digits);
		return -1;
	}
	rc = sb_parse_size(v, out);
	if (rc == -ERANGE) {
		snprintf(err, n, "'%s': too large", v);
		return -1;
	}
	if (rc) {
		snprintf(err, n, "'%s': expected a size such as 4096, 64K, "
			 "1M or 2G", v);
		return -1;
	}
	return 0;
}

static int p_size(const char *v, void *f, char *err, size_t n)
{
	return p_u64(v, f, true, err, n);
}

static int p_size32(const char *v, void *f, char *err, size_t n)
{
	uint64_t x;

	if (p_u64(v, &x, true, err, n))
		return -1;
	if (x > UINT32_MAX) {
		snprintf(err, n, "'%s': too large", v);
		return -1;
	}
	*(uint32_t *)f = (uint32_t)x;
	return 0;
}

/* A number in [lo, hi] into an unsigned; `why` follows the range in the
 * error ("" or " (ms)"...). */
static int p_range(const char *v, void *f, unsigned lo, unsigned hi,
		   const char *why, char *err, size_t n)
{
	uint64_t x;

	if (p_u64(v, &x, false, err, n))
		return -1;
	if (x < lo || x > hi) {
		snprintf(err, n, "'%s': expected %u to %u%s", v, lo, hi, why);
		return -1;
	}
	*(unsigned *)f = (unsigned)x;
	return 0;
}

static int p_count(const char *v, void *f, char *err, size_t n)
{
	return p_range(v, f, 1, 1000000, "", err, n);
}

static int p_count0(const char *v, void *f, char *err, size_t n)
{
	return p_range(v, f, 0, 1000000, "", err, n);
}

static int p_idle_ms(const char *v, void *f, char *err, size_t n)
{
	return p_range(v, f, 10, 3600000, " (ms)", err, n);
}

static int p_reap_ms(const char *v, void *f, char *err, size_t n)
{
	return p_range(v, f, 1, 100, " (ms; repairs must land within "
		       "100 ms)", err, n);
}

static int p_mode(const char *v, void *f, char *err, size_t n)
{
	char *end;
	unsigned long m = strtoul(v, &end, 8);

	if (end == v || *end || m > 0777) {
		snprintf(err, n, "'%s': expected an octal mode such as 0640",
			 v);
		return -1;
	}
	*(unsigned *)f = (unsigned)m;
	return 0;
}

static int p_mode_t(const char *v, void *f, char *err, size_t n)
{
	unsigned m;

	if (p_mode(v, &m, err, n))
		return -1;
	if (!(m & 0600) || (m & 0600) != 0600) {
		snprintf(err, n, "'%s': the owner needs read and write "
			 "(0600 at least)", v);
		return -1;
	}
	*(mode_t *)f = (mode_t)m;
	return 0;
}

static int p_bool(const char *v, void *f, char *err, size_t n)
{
	if (!strcasecmp(v, "yes") || !strcasecmp(v, "true") ||
	    !strcmp(v, "1") || !strcasecmp(v, "on"))
		*(bool *)f = true;
	else if (!strcasecmp(v, "no") || !strcasecmp(v, "false") ||
		 !strcmp(v, "0") || !strcasecmp(v, "off"))
		*(bool *)f = false;
	else {
		snprintf(err, n, "'%s': expected yes or no", v);
		return -1;
	}
	return 0;
}

static int p_level(const char *v, void *f, char *err, size_t n)
{
	int l = sbd_log_level_parse(v);

	if (l < 0) {
		snprintf(err, n, "'%s': expected error, warning, notice, "
			 "info or debug", v);
		return -1;
	}
	*(int *)f = l;
	return 0;
}

static int p_log(const char *v, void *f, char *err, size_t n)
{
	if (!strcmp(v, "syslog"))
		*(bool *)f = true;
	else if (!strcmp(v, "stderr"))
		*(bool *)f = false;
	else {
		snprintf(err, n, "'%s': expected stderr or syslog", v);
		return -1;
	}
	return 0;
}

static int p_policy(const char *v, void *f, char *err, size_t n)
{
	if (!strcmp(v, "block"))
		*(enum shmbus_policy *)f = SHMBUS_BLOCK;
	else if (!strcmp(v, "overwrite"))
		*(enum shmbus_policy *)f = SHMBUS_OVERWRITE;
	else {
		snprintf(err, n, "'%s': expected block or overwrite", v);
		return -1;
	}
	return 0;
}

static int p_producers(const char *v, void *f, char *err, size_t n)
{
	if (!strcmp(v, "single"))
		*(enum shmbus_producers *)f = SHMBUS_SINGLE_PRODUCER;
	else if (!strcmp(v, "multi"))
		*(enum shmbus_producers *)f = SHMBUS_MULTI_PRODUCER;
	else {
		snprintf(err, n, "'%s': expected single or multi", v);
		return -1;
	}
	return 0;
}

static int p_numa(const char *v, void *f, char *err, size_t n)
{
	char *end;
	long node = strtol(v, &end, 10);
	int max = numa_available() < 0 ? 0 : numa_max_node();

	if (end == v || *end || node < -1) {
		snprintf(err, n, "'%s': expected a NUMA node number or -1",
			 v);
		return -1;
	}
	if (node > max || (node >= 0 && numa_available() >= 0 &&
			   !numa_bitmask_isbitset(numa_nodes_ptr,
						  (unsigned)node))) {
		snprintf(err, n, "NUMA node %ld does not exist on this "
			 "machine (nodes 0..%d)", node, max);
		return -1;
	}
	*(int *)f = (int)node;
	return 0;
}

static int id_of(const char *v, bool group, int64_t *out, char *err,
		 size_t n)
{
	char buf[4096], *end;
	unsigned long x = strtoul(v, &end, 10);

	if (end != v && !*end && x <= INT32_MAX) {
		*out = (int64_t)x;
		return 0;
	}
	if (group) {
		struct group g, *gp = NULL;

		if (getgrnam_r(v, &g, buf, sizeof(buf), &gp) == 0 && gp) {
			*out = gp->gr_gid;
			return 0;
		}
	} else {
		struct passwd p, *pp = NULL;

		if (getpwnam_r(v, &p, buf, sizeof(buf), &pp) == 0 && pp) {
			*out = pp->pw_uid;
			return 0;
		}
	}
	snprintf(err, n, "unknown %s '%s'", group ? "group" : "user", v);
	return -1;
}

static int p_user(const char *v, void *f, char *err, size_t n)
{
	return id_of(v, false, f, err, n);
}

static int p_group(const char *v, void *f, char *err, size_t n)
{
	return id_of(v, true, f, err, n);
}

int sbd_rule_parse(const char *text, struct sbd_rule *r, char *err,
		   size_t n)
{
	char buf[SHMBUS_CTL_NAME], *save = NULL, *tok;

	memset(r, 0, sizeof(*r));
	if (strlen(text) >= sizeof(buf)) {
		snprintf(err, n, "rule too long (at most %zu characters)",
			 sizeof(buf) - 1);
		return -1;
	}
	strcpy(buf, text);
	strcpy(r->text, text);
	for (tok = strtok_r(buf, " \t,", &save); tok;
	     tok = strtok_r(NULL, " \t,", &save)) {
		bool group;
		int64_t id;

		if (!strcmp(tok, "*") || !strcmp(tok, "any")) {
			r->any = true;
			continue;
		}
		if (!strcmp(tok, "none"))
			continue;	/* only root and the daemon's user */
		if (!strncmp(tok, "user:", 5) || !strncmp(tok, "uid:", 4))
			group = false;
		else if (!strncmp(tok, "group:", 6) || !strncmp(tok, "gid:", 4))
			group = true;
		else {
			snprintf(err, n, "'%s': expected user:NAME, uid:N, "
				 "group:NAME, gid:N, * or none", tok);
			return -1;
		}
		if (id_of(strchr(tok, ':') + 1, group, &id, err, n))
			return -1;
		if (r->n == SBD_RULE_MAX) {
			snprintf(err, n, "more than %d entries in one rule",
				 SBD_RULE_MAX);
			return -1;
		}
		r->e[r->n].group = group;
		r->e[r->n].id = (uint32_t)id;
		r->n++;
	}
	return 0;
}

static int p_rule(const char *v, void *f, char *err, size_t n)
{
	return sbd_rule_parse(v, f, err, n);
}

bool sbd_rule_allows(const struct sbd_rule *r, uid_t uid, const gid_t *gids,
		     int ngids)
{
	if (r->any)
		return true;
	for (uint32_t i = 0; i < r->n; i++) {
		if (!r->e[i].group) {
			if (r->e[i].id == uid)
				return true;
			continue;
		}
		for (int g = 0; g < ngids; g++)
			if (r->e[i].id == gids[g])
				return true;
	}
	return false;
}

static int p_role(const char *v, void *f, char *err, size_t n)
{
	if (!strcmp(v, "primary"))
		*(int *)f = SBD_ROLE_PRIMARY;
	else if (!strcmp(v, "standby"))
		*(int *)f = SBD_ROLE_STANDBY;
	else {
		snprintf(err, n, "'%s': primary or standby", v);
		return -1;
	}
	return 0;
}

static int p_addr(const char *v, void *f, char *err, size_t n)
{
	const char *c = v[0] == '[' ? strstr(v, "]:") : strrchr(v, ':');
	char *end;
	unsigned long port;

	if (!c || strlen(v) >= 128) {
		snprintf(err, n, "'%s': host:port or [v6]:port", v);
		return -1;
	}
	c += v[0] == '[' ? 2 : 1;
	port = strtoul(c, &end, 10);
	if (!*c || *end || port == 0 || port > 65535) {
		snprintf(err, n, "'%s': a port from 1 to 65535", v);
		return -1;
	}
	strcpy(f, v);
	return 0;
}

static int p_transport(const char *v, void *f, char *err, size_t n)
{
	if (strcmp(v, "tcp")) {
		snprintf(err, n, "'%s': this build has the tcp transport", v);
		return -1;
	}
	strcpy(f, v);
	return 0;
}

static int p_level_ack(const char *v, void *f, char *err, size_t n)
{
	/* Indexed by SHMBUS_ACK_*; "persisted" alone is the journal's
	 * `acknowledge`, not a replication level. */
	static const char *const names[] = {
		"local", "received", "applied", NULL, "standby_persisted",
		"both_persisted",
	};

	if (!strcmp(v, "off")) {
		*(int *)f = -1;
		return 0;
	}
	for (int i = 0; i < 6; i++)
		if (names[i] && !strcmp(v, names[i])) {
			*(int *)f = i;
			return 0;
		}
	snprintf(err, n, "'%s': off, local, received, applied, "
		 "standby_persisted or both_persisted", v);
	return -1;
}

static int p_oos(const char *v, void *f, char *err, size_t n)
{
	if (!strcmp(v, "strict") || !strcmp(v, "degrade")) {
		*(bool *)f = !strcmp(v, "strict");
		return 0;
	}
	snprintf(err, n, "'%s': degrade or strict", v);
	return -1;
}

static int p_sync_ms(const char *v, void *f, char *err, size_t n)
{
	return p_range(v, f, 10, 600000, "", err, n);
}

static int p_nap_us(const char *v, void *f, char *err, size_t n)
{
	return p_range(v, f, 10, 100000, "", err, n);
}

static int p_handover_ms(const char *v, void *f, char *err, size_t n)
{
	return p_range(v, f, 100, 2000, "", err, n);
}

static int p_fsync(const char *v, void *f, char *err, size_t n)
{
	if (!strcmp(v, "batch"))
		*(int *)f = SBD_FSYNC_BATCH;
	else if (!strcmp(v, "interval"))
		*(int *)f = SBD_FSYNC_INTERVAL;
	else if (!strcmp(v, "none"))
		*(int *)f = SBD_FSYNC_NONE;
	else {
		snprintf(err, n, "'%s': batch, interval or none", v);
		return -1;
	}
	return 0;
}

static int p_fsync_ms(const char *v, void *f, char *err, size_t n)
{
	return p_range(v, f, 1, 60000, " (ms)", err, n);
}

/* Milliseconds, 0 for none: at most 2^53 (285,000 years), so that it
 * fits the int64_t milliseconds retention compares it with, with room to
 * spare. */
static int p_ms64(const char *v, void *f, char *err, size_t n)
{
	if (p_u64(v, f, false, err, n))
		return -1;
	if (*(uint64_t *)f > (UINT64_C(1) << 53)) {
		snprintf(err, n, "'%s': too large (at most 2^53 ms)", v);
		return -1;
	}
	return 0;
}

static int p_acknowledge(const char *v, void *f, char *err, size_t n)
{
	if (!strcmp(v, "persisted") || !strcmp(v, "local")) {
		*(bool *)f = !strcmp(v, "persisted");
		return 0;
	}
	snprintf(err, n, "'%s': local or persisted (replicated channels "
		 "say their level with 'replicate')", v);
	return -1;
}

static int p_arbiter(const char *v, void *f, char *err, size_t n)
{
	if (!strcmp(v, "none") || !strcmp(v, "etcd")) {
		strcpy(f, strcmp(v, "none") ? v : "");
		return 0;
	}
	snprintf(err, n, "'%s': none or etcd", v);
	return -1;
}

static int p_endpoints(const char *v, void *f, char *err, size_t n)
{
	if (!*v || strlen(v) >= 1024) {
		snprintf(err, n, "a comma-separated list of http://HOST:PORT "
			 "or unix:/PATH, shorter than 1024 characters");
		return -1;
	}
	strcpy(f, v);
	return 0;
}

static int p_prefix(const char *v, void *f, char *err, size_t n)
{
	if (v[0] != '/' || strlen(v) >= 200 || strchr(v, ' ')) {
		snprintf(err, n, "'%s': a key prefix starting with '/', no "
			 "spaces, under 200 characters", v);
		return -1;
	}
	strcpy(f, v);
	return 0;
}

static int p_lease_ms(const char *v, void *f, char *err, size_t n)
{
	return p_range(v, f, 1000, 60000, " (ms)", err, n);
}

/* cpus = LIST: CPU numbers and ranges (0-3,8), each one this process
 * may run on now. */
static int p_cpus(const char *v, void *f, char *err, size_t n)
{
	uint64_t *set = f;
	cpu_set_t allowed;
	const char *p = v;
	bool any = false;

	memset(set, 0, SBD_CPUS_MAX / 8);
	if (sched_getaffinity(0, sizeof(allowed), &allowed))
		CPU_ZERO(&allowed);
	while (*p) {
		char *end;
		unsigned long lo, hi;

		if (!isdigit((unsigned char)*p))
			goto bad;
		lo = strtoul(p, &end, 10);
		hi = lo;
		if (*end == '-') {
			if (!isdigit((unsigned char)end[1]))
				goto bad;
			hi = strtoul(end + 1, &end, 10);
		}
		if (lo > hi || hi >= SBD_CPUS_MAX)
			goto bad;
		for (unsigned long c = lo; c <= hi; c++) {
			if (c >= CPU_SETSIZE || !CPU_ISSET(c, &allowed)) {
				snprintf(err, n, "'%s': CPU %lu is not one this "
					 "process may run on", v, c);
				return -1;
			}
			set[c / 64] |= UINT64_C(1) << (c % 64);
			any = true;
		}
		p = end;
		if (*p == ',' && p[1])
			p++;
		else if (*p)
			goto bad;
	}
	if (any)
		return 0;
bad:
	snprintf(err, n, "'%s': a list of CPU numbers and ranges (0-3,8) "
		 "below %d", v, SBD_CPUS_MAX);
	return -1;
}

/* consumer_groups: the whole channel entry is the field (groups.c). */
static int p_groups(const char *v, void *f, char *err, size_t n)
{
	return sbd_parse_groups(v, f, err, n);
}

/* ------------------------------------------------------------------ table */

#define B(name, fn, field) \
	{ S_BUS, name, fn, offsetof(struct sbd_conf, field), NO_LINE }
#define BL(name, fn, field, line) \
	{ S_BUS, name, fn, offsetof(struct sbd_conf, field), \
	  offsetof(struct sbd_conf, line) }
#define RP(name, fn, field) \
	{ S_REPL, name, fn, offsetof(struct sbd_conf, repl.field), NO_LINE }
#define D(name, fn, field) \
	{ S_DEFAULTS, name, fn, offsetof(struct sbd_conf, field), NO_LINE }
#define C(name, fn, field) \
	{ S_CHANNEL, name, fn, offsetof(struct sbd_chan_conf, field), NO_LINE }
#define CL(name, fn, field, line) \
	{ S_CHANNEL, name, fn, offsetof(struct sbd_chan_conf, field), \
	  offsetof(struct sbd_chan_conf, line) }

static const struct key keys[] = {
	B("name", p_string63, bus),
	B("shm_dir", p_path, shm_dir),
	B("socket", p_sockpath, socket),
	B("socket_mode", p_mode, socket_mode),
	B("max_channels", p_count, max_channels),
	B("max_clients", p_count, max_clients),
	BL("max_clients_per_uid", p_count, max_clients_per_uid, per_uid_line),
	BL("reserved_clients", p_count0, reserved_clients, reserved_line),
	B("idle_timeout_ms", p_idle_ms, idle_timeout_ms),
	B("reap_interval_ms", p_reap_ms, reap_ms),
	B("log_level", p_level, log_level),
	B("log", p_log, syslog),
	B("remove_on_exit", p_bool, remove_on_exit),
	B("admins", p_rule, admins),
	B("journal_dir", p_path, journal_dir),
	B("journal_min_free", p_size, journal_min_free),
	D("publish", p_rule, def_pub),
	D("subscribe", p_rule, def_sub),
	CL("capacity", p_size, attr.capacity, cap_line),
	CL("max_msg", p_size32, attr.max_msg, msg_line),
	C("policy", p_policy, attr.policy),
	C("producers", p_producers, attr.producers),
	C("numa_node", p_numa, attr.numa_node),
	C("mode", p_mode_t, attr.mode),
	C("owner", p_user, owner),
	C("group", p_group, group),
	C("publish", p_rule, pub),
	C("subscribe", p_rule, sub),
	C("replicate", p_level_ack, repl_level),
	C("out_of_sync", p_oos, repl_strict),
	{ S_CHANNEL, "consumer_groups", p_groups, 0, NO_LINE },
	CL("journal", p_bool, jnl.on, jnl.line),
	C("journal_fsync", p_fsync, jnl.fsync),
	C("journal_fsync_ms", p_fsync_ms, jnl.fsync_ms),
	C("journal_fsync_bytes", p_size, jnl.fsync_bytes),
	CL("journal_segment", p_size, jnl.segment, jnl.seg_line),
	C("journal_retain_ms", p_ms64, jnl.retain_ms),
	C("journal_retain_bytes", p_size, jnl.retain_bytes),
	C("acknowledge", p_acknowledge, jnl.ack),
	RP("role", p_role, role),
	RP("listen", p_addr, listen),
	RP("peer", p_addr, peer),
	RP("transport", p_transport, transport),
	RP("key_file", p_path, key_file),
	RP("state_dir", p_path, state_dir),
	RP("sync_timeout_ms", p_sync_ms, sync_timeout_ms),
	RP("max_lag", p_size, max_lag),
	RP("nap_us", p_nap_us, nap_us),
	RP("handover_ms", p_handover_ms, handover_ms),
	RP("arbiter", p_arbiter, arbiter),
	RP("etcd_endpoints", p_endpoints, etcd_endpoints),
	RP("arbiter_prefix", p_prefix, arbiter_prefix),
	RP("lease_ttl_ms", p_lease_ms, lease_ttl_ms),
	RP("cpus", p_cpus, cpus),
};

/* --------------------------------------------------------------- parsing */

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

struct parse_state {
	struct sbd_conf *c;
	FILE *f;
	int line;		/* the line being parsed */
	int err_line;		/* our first error's line, 0 if none */
	enum section sec;	/* S_NONE before the first header */
	struct sbd_chan_conf *chan;
	bool too_long;
	char sec_name[SHMBUS_CTL_NAME + 16];	/* the header entered */
	int bus_line, defaults_line;	/* of their headers, 0 if none yet */
	int first_section_line;
	int key_line[NKEYS];	/* where the section set each key, or 0 */
};

static void fail(struct parse_state *ps, const char *fmt, const char *a,
		 const char *b)
{
	if (ps->err_line)
		return;
	ps->err_line = ps->line;
	snprintf(ps->c->err, sizeof(ps->c->err), "%s:%d: ", ps->c->path,
		 ps->line);
	snprintf(ps->c->err + strlen(ps->c->err),
		 sizeof(ps->c->err) - strlen(ps->c->err), fmt, a, b);
}

static int enter_section(struct parse_state *ps, const char *section);

/* inih keeps a section's name to its MAX_SECTION - 1 bytes (50 - 1 in
 * every release): longer ones are ours to read (section_line()). */
#define INIH_SECTION_KEPT	49u

/* Sections are entered here, as their line is read, so that a section
 * without keys exists too (inih calls the handler for keys only). */
static void section_line(struct parse_state *ps, const char *line)
{
	char name[SHMBUS_CTL_NAME + 16];
	const char *p = line, *end, *q;
	size_t n;

	/* What inih skips: a UTF-8 BOM on the first line, white space. */
	if (ps->line == 1 && !strncmp(p, "\xEF\xBB\xBF", 3))
		p += 3;
	while (isspace((unsigned char)*p))
		p++;
	if (*p != '[' || ps->err_line)
		return;
	end = strchr(p, ']');
	if (!end)
		return;		/* inih reports it */
	for (q = end + 1; isspace((unsigned char)*q); q++)
		;
	if (*q && *q != ';' && *q != '#') {
		fail(ps, "text after the section's header%s%s", "", "");
		return;
	}
	p++;
	while (*p == ' ')
		p++;
	n = (size_t)(end - p);
	while (n && p[n - 1] == ' ')
		n--;
	if (n >= sizeof(name)) {
		fail(ps, "section name too long%s%s", "", "");
		return;
	}
	memcpy(name, p, n);
	name[n] = 0;
	snprintf(ps->sec_name, sizeof(ps->sec_name), "%s", name);
	enter_section(ps, name);
}

/* Reads a line for inih and counts it: a line longer than inih takes, or
 * with a NUL byte in it (which would hide the rest of it), is an error. */
static char *reader(char *str, int num, void *stream)
{
	struct parse_state *ps = stream;
	int n = 0, ch = 0;
	bool nul = false;

	while (n < num - 1 && (ch = fgetc(ps->f)) != EOF) {
		nul |= ch == 0;
		str[n++] = (char)ch;
		if (ch == '\n')
			break;
	}
	if (n == 0)
		return NULL;
	str[n] = 0;
	ps->line++;
	if (str[n - 1] != '\n' && n == num - 1 &&
	    (ch = fgetc(ps->f)) != EOF && ch != '\n') {
		char most[16];

		snprintf(most, sizeof(most), "%d", num - 1);
		fail(ps, "line too long (at most %s characters)%s", most, "");
		/* The rest of the line is not read: a line that never ends
		 * (a file of zeros) would keep us here. */
		return NULL;
	} else if (nul) {
		fail(ps, "a NUL byte in the line%s%s", "", "");
	} else {
		section_line(ps, str);
		return str;
	}
	str[0] = '#';	/* hand inih a comment instead */
	str[1] = 0;
	return str;
}

/* The library's rule (sb_name_ok()), for a file's name. */
static int valid_channel_name(const char *s)
{
	return sb_name_ok(s, 200);
}

static int enter_section(struct parse_state *ps, const char *section)
{
	struct sbd_conf *c = ps->c;
	struct sbd_chan_conf *cc, *grown;
	int *seen = NULL;

	if (!ps->first_section_line)
		ps->first_section_line = ps->line;
	memset(ps->key_line, 0, sizeof(ps->key_line));
	if (!strcmp(section, "bus"))
		seen = &ps->bus_line;
	else if (!strcmp(section, "defaults"))
		seen = &ps->defaults_line;
	else if (!strcmp(section, "replication"))
		seen = &c->repl.line;
	if (seen) {
		if (*seen) {
			char first[16];

			snprintf(first, sizeof(first), "%d", *seen);
			fail(ps, "a second [%s] section (the first is on "
			     "line %s)", section, first);
			return -1;
		}
		*seen = ps->line;
		ps->sec = seen == &ps->bus_line ? S_BUS :
			  seen == &c->repl.line ? S_REPL : S_DEFAULTS;
		return 0;
	}
	if (strncmp(section, "channel ", 8) != 0) {
		fail(ps, "unknown section [%s] (expected [bus], [defaults], "
		     "[replication] or [channel NAME])%s", section, "");
		return -1;
	}
	section += 8;
	while (*section == ' ')
		section++;
	if (!valid_channel_name(section)) {
		fail(ps, "'%s': a channel name is 1 to 200 letters, digits, "
		     "'.', '_' or '-', not starting with '.'%s", section, "");
		return -1;
	}
	for (size_t i = 0; i < c->nchans; i++)
		if (!strcmp(c->chans[i].name, section)) {
			fail(ps, "channel '%s' is defined twice%s", section,
			     "");
			return -1;
		}
	grown = realloc(c->chans, (c->nchans + 1) * sizeof(*c->chans));
	if (!grown) {
		fail(ps, "out of memory%s%s", "", "");
		return -1;
	}
	c->chans = grown;
	cc = &c->chans[c->nchans++];
	memset(cc, 0, sizeof(*cc));
	cc->repl_level = -1;
	cc->jnl.fsync = SBD_FSYNC_BATCH;
	cc->jnl.fsync_ms = 10;
	cc->jnl.fsync_bytes = 1u << 20;
	strcpy(cc->name, section);
	shmbus_channel_attr_init(&cc->attr);	/* max_msg 0: derived below */
	cc->owner = cc->group = -1;
	cc->line = ps->line;
	ps->chan = cc;
	ps->sec = S_CHANNEL;
	return 0;
}

static int handler(void *user, const char *section, const char *name,
		   const char *value)
{
	struct parse_state *ps = user;
	char err[256];

	if (ps->err_line)
		return 1;	/* report only the first error */
	if (ps->sec == S_NONE || !section[0]) {
		fail(ps, "'%s' outside any section (start with [bus])%s",
		     name, "");
		return 0;
	}
	/* inih's idea of the section must be ours (section_line()), but
	 * for the spaces inside its brackets, which we trim, and for its
	 * length: inih keeps INIH_SECTION_KEPT bytes of it (a channel's
	 * name may be longer), which must then begin ours. */
	bool cut = strlen(section) == INIH_SECTION_KEPT;

	while (*section == ' ')
		section++;
	if (cut ? strncmp(section, ps->sec_name, strlen(section))
		: strncmp(section, ps->sec_name, strlen(ps->sec_name)) ||
		  strspn(section + strlen(ps->sec_name), " ") !=
			  strlen(section + strlen(ps->sec_name))) {
		fail(ps, "a section's header that is not read as written "
		     "([%s])%s", section, "");
		return 0;
	}
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const struct key *k = &keys[i];
		void *base = k->sec == S_CHANNEL ? (void *)ps->chan
						 : (void *)ps->c;

		if (k->sec != ps->sec || strcmp(k->name, name) != 0)
			continue;
		if (ps->key_line[i]) {
			char first[16];

			snprintf(first, sizeof(first), "%d", ps->key_line[i]);
			fail(ps, "%s: set twice in this section (first on "
			     "line %s)", name, first);
			return 0;
		}
		ps->key_line[i] = ps->line;
		if (!value || !*value) {
			fail(ps, "%s: a value is required%s", name, "");
			return 0;
		}
		if (k->parse(value, (char *)base + k->off, err, sizeof(err))) {
			fail(ps, "%s: %s", name, err);
			return 0;
		}
		if (k->line_off != NO_LINE)
			*(int *)((char *)base + k->line_off) = ps->line;
		if (k->sec == S_CHANNEL && k->parse == p_rule)
			*(k->off == offsetof(struct sbd_chan_conf, pub) ?
				  &ps->chan->pub_set : &ps->chan->sub_set) =
				true;
		return 1;
	}
	fail(ps, "unknown key '%s' in [%s]", name, section);
	return 0;
}

/* The connection limits: the reserve leaves room for others, and one uid
 * can be given no more than the places others than root, the daemon's
 * user and admins have. */
static int check_clients(struct sbd_conf *c)
{
	if (!c->reserved_line)
		c->reserved_clients = c->max_clients < 2 ? 0 :
				      c->max_clients / 16 ? c->max_clients / 16
							  : 1;
	if (c->reserved_clients >= c->max_clients) {
		snprintf(c->err, sizeof(c->err), "%s:%d: reserved_clients: "
			 "%u leaves no place for other users (max_clients %u)",
			 c->path, c->reserved_line, c->reserved_clients,
			 c->max_clients);
		return -1;
	}
	if (c->per_uid_line &&
	    c->max_clients_per_uid > c->max_clients - c->reserved_clients) {
		snprintf(c->err, sizeof(c->err), "%s:%d: max_clients_per_uid: "
			 "%u is more than the %u places of max_clients (%u) "
			 "not reserved (reserved_clients %u)", c->path,
			 c->per_uid_line, c->max_clients_per_uid,
			 c->max_clients - c->reserved_clients,
			 c->max_clients, c->reserved_clients);
		return -1;
	}
	return 0;
}

uint64_t sbd_jnl_segment(const struct sbd_jnl_conf *j, uint64_t capacity)
{
	uint64_t seg = UINT64_C(64) << 20;

	if (j->segment)
		return j->segment;
	return seg < capacity ? capacity : seg;
}

/* Checks that involve several keys, once the file is read. */
/* A channel's journal settings, once its capacity is known. */
static int check_journal(struct sbd_conf *c, struct sbd_chan_conf *cc)
{
	struct sbd_jnl_conf *j = &cc->jnl;
	uint64_t seg = j->segment;
	const char *why = NULL;
	int line = j->line;

	if (!j->on) {
		if (j->ack)
			why = "acknowledge = persisted needs journal = on";
		else if (cc->repl_level == SHMBUS_ACK_STANDBY_PERSISTED ||
			 cc->repl_level == SHMBUS_ACK_BOTH_PERSISTED)
			why = "replicate = standby_persisted or both_persisted "
			      "needs journal = on (the same section on both "
			      "hosts)";
	} else if (!seg) {
		seg = sbd_jnl_segment(j, cc->attr.capacity);
		if (seg > (UINT64_C(1) << 30))
			why = "journal = on needs a capacity of at most 1G "
			      "(a segment holds at least one lap)";
	} else if (seg & (seg - 1) || seg < (UINT64_C(64) << 10) ||
		   seg > (UINT64_C(1) << 30) || seg < cc->attr.capacity) {
		why = "journal_segment: a power of two from 64K to 1G, and "
		      "at least the capacity";
		line = j->seg_line;
	}
	if (!why && j->ack && j->fsync == SBD_FSYNC_NONE)
		why = "acknowledge = persisted needs journal_fsync batch or "
		      "interval (with none nothing is ever synced)";
	if (!why && j->on && (cc->repl_level == SHMBUS_ACK_STANDBY_PERSISTED ||
			      cc->repl_level == SHMBUS_ACK_BOTH_PERSISTED)) {
		/* A standby is in sync at these levels while its journal's
		 * synced position moves (docs/replication.md). */
		if (j->fsync == SBD_FSYNC_NONE)
			why = "replicate = standby_persisted or both_persisted "
			      "needs journal_fsync batch or interval (with none "
			      "nothing is ever synced)";
		else if (j->fsync == SBD_FSYNC_INTERVAL &&
			 (uint64_t)j->fsync_ms * 2 > c->repl.sync_timeout_ms)
			why = "replicate = standby_persisted or both_persisted "
			      "with journal_fsync = interval needs "
			      "journal_fsync_ms at most half of "
			      "sync_timeout_ms (else a standby in step is "
			      "judged out of sync between two syncs)";
	}
	if (!why && j->ack && cc->repl_level >= 0)
		why = "acknowledge = persisted on a replicated channel: its "
		      "level is replicate's (both_persisted includes this "
		      "host's journal)";
	if (why) {
		snprintf(c->err, sizeof(c->err), "%s:%d: channel '%s': %s",
			 c->path, line ? line : cc->line, cc->name, why);
		return -1;
	}
	return 0;
}

/* A channel's groups as the library will make them: keyed and
 * single-active on a block channel only (a producer would overwrite a
 * lane's next message), and the group's and the channel's names short
 * enough for the group's file.  A dead-letter channel in this file must
 * be multi-producer: shmbusd publishes into it beside the channel's own
 * producers.  One made at run time is checked when first used. */
static int check_groups(struct sbd_conf *c, const struct sbd_chan_conf *cc)
{
	for (uint32_t g = 0; g < cc->ngroups; g++) {
		const struct sbd_group_conf *gc = &cc->groups[g];
		size_t len = strlen(cc->name) + strlen(gc->name);
		char why[160] = "";

		if (gc->attr.mode != SHMBUS_GROUP_SHARED &&
		    cc->attr.policy == SHMBUS_OVERWRITE)
			snprintf(why, sizeof(why), "keyed and single_active "
				 "groups need policy = block (on an overwrite "
				 "channel a producer could overwrite a lane's "
				 "next message)");
		else if (len > SHMBUS_GROUP_NAMES_MAX)
			snprintf(why, sizeof(why), "its name and the "
				 "channel's are %zu bytes together, at most %u "
				 "(they name the group's file)", len,
				 SHMBUS_GROUP_NAMES_MAX);
		if (why[0]) {
			snprintf(c->err, sizeof(c->err), "%s:%d: channel '%s': "
				 "group %s: %s", c->path, cc->line, cc->name,
				 gc->name, why);
			return -1;
		}
	}
	for (uint32_t g = 0; g < cc->ngroups; g++)
		for (size_t j = 0; j < c->nchans; j++) {
			const char *dl = cc->groups[g].dead_letter;

			if (!dl[0] || strcmp(c->chans[j].name, dl) ||
			    c->chans[j].attr.producers ==
				    SHMBUS_MULTI_PRODUCER)
				continue;
			snprintf(c->err, sizeof(c->err), "%s:%d: channel '%s': "
				 "group %s's dead_letter '%s' is a "
				 "single-producer channel; it must be multi",
				 c->path, cc->line, cc->name,
				 cc->groups[g].name, dl);
			return -1;
		}
	return 0;
}

static int check(struct sbd_conf *c)
{
	unsigned nrepl = 0;

	if (check_clients(c))
		return -1;
	for (size_t i = 0; i < c->nchans; i++) {
		struct sbd_chan_conf *cc = &c->chans[i];
		char why[256];
		int rc;

		/* The library's rule, and its words for what is wrong. */
		rc = shmbus_channel_attr_check(&cc->attr, why, sizeof(why));
		if (rc) {
			int line = rc == -EMSGSIZE ? cc->msg_line :
				   cc->cap_line ? cc->cap_line : cc->line;

			snprintf(c->err, sizeof(c->err), "%s:%d: channel "
				 "'%s': %s", c->path, line, cc->name, why);
			return -1;
		}
		/* What the library makes of max_msg 0, spelt out so that a
		 * reload compares like with like. */
		cc->attr.max_msg = sb_attr_max_msg(&cc->attr);
		if (cc->repl_level >= 0 && !c->repl.line) {
			snprintf(c->err, sizeof(c->err), "%s:%d: channel '%s' "
				 "is replicated, and the file has no "
				 "[replication] section", c->path, cc->line,
				 cc->name);
			return -1;
		}
		/* Held at load, so that a reload cannot accept what the next
		 * start would refuse. */
		if (cc->repl_level >= 0 && ++nrepl > SBD_REPL_CHANNELS_MAX) {
			snprintf(c->err, sizeof(c->err), "%s:%d: channel '%s': "
				 "more than %u replicated channels", c->path,
				 cc->line, cc->name, SBD_REPL_CHANNELS_MAX);
			return -1;
		}
		if (check_journal(c, cc) || check_groups(c, cc))
			return -1;
		if (!cc->pub_set)
			cc->pub = c->def_pub;
		if (!cc->sub_set)
			cc->sub = c->def_sub;
	}
	if (c->repl.line) {
		const char *miss = !c->repl.role ? "role" :
				   !c->repl.listen[0] ? "listen" :
				   !c->repl.peer[0] ? "peer" :
				   !c->repl.key_file[0] ? "key_file" : NULL;

		if (miss) {
			snprintf(c->err, sizeof(c->err), "%s:%d: [replication] "
				 "needs '%s'", c->path, c->repl.line, miss);
			return -1;
		}
		if (!c->repl.state_dir[0])
			snprintf(c->repl.state_dir, sizeof(c->repl.state_dir),
				 "/var/lib/shmbus/%s", c->bus);
		if (c->repl.arbiter[0] && !c->repl.etcd_endpoints[0]) {
			snprintf(c->err, sizeof(c->err), "%s:%d: [replication] "
				 "arbiter = etcd needs etcd_endpoints",
				 c->path, c->repl.line);
			return -1;
		}
		if (!c->repl.arbiter_prefix[0])
			snprintf(c->repl.arbiter_prefix,
				 sizeof(c->repl.arbiter_prefix), "/shmbus/%s",
				 c->bus);
		if (!c->repl.lease_ttl_ms)
			c->repl.lease_ttl_ms = 3000;
	}
	if (!c->journal_dir[0])
		snprintf(c->journal_dir, sizeof(c->journal_dir),
			 "/var/lib/shmbus/%s/journal", c->bus);
	if (c->nchans > c->max_channels) {
		snprintf(c->err, sizeof(c->err), "%s: %zu channels, more than "
			 "max_channels (%u)", c->path, c->nchans,
			 c->max_channels);
		return -1;
	}
	return 0;
}

int sbd_conf_load(const char *path, struct sbd_conf *c)
{
	struct parse_state ps = { .c = c, .sec = S_NONE };
	const char *base;
	int rc;

	memset(c, 0, sizeof(*c));
	snprintf(c->path, sizeof(c->path), "%s", path);
	c->max_channels = 256;
	c->max_clients = 1024;
	c->max_clients_per_uid = 64;
	c->idle_timeout_ms = 5000;
	c->reap_ms = 20;
	c->journal_min_free = UINT64_C(64) << 20;
	c->socket_mode = 0666;
	c->log_level = SBD_INFO;
	strcpy(c->repl.transport, "tcp");
	c->repl.sync_timeout_ms = 1000;
	c->repl.nap_us = 1000;
	c->repl.handover_ms = 2000;
	{
		struct stat st;
		/* Not blocking: a FIFO would wait here for a writer. */
		int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

		if (fd < 0) {
			snprintf(c->err, sizeof(c->err), "%s: %s", path,
				 strerror(errno));
			return -1;
		}
		/* A directory opens, and reads as an empty file; a device
		 * (/dev/zero) never ends. */
		if (fstat(fd, &st)) {
			snprintf(c->err, sizeof(c->err), "%s: %s", path,
				 strerror(errno));
			close(fd);
			return -1;
		}
		if (!S_ISREG(st.st_mode)) {
			snprintf(c->err, sizeof(c->err), "%s: %s", path,
				 S_ISDIR(st.st_mode) ? strerror(EISDIR) :
				 "not a regular file");
			close(fd);
			return -1;
		}
		ps.f = fdopen(fd, "r");
		if (!ps.f) {
			snprintf(c->err, sizeof(c->err), "%s: %s", path,
				 strerror(errno));
			close(fd);
			return -1;
		}
	}
	ini_allow_multiline = false;	/* a stray indent is an error */
	rc = ini_parse_stream(reader, &ps, handler, &ps);
	fclose(ps.f);
	if (rc != 0 || ps.err_line) {
		if (!ps.err_line || (rc > 0 && rc < ps.err_line))
			snprintf(c->err, sizeof(c->err),
				 "%s:%d: syntax error: expected [section], "
				 "key = value, or a comment", path, rc);
		sbd_conf_free(c);
		return -1;
	}
	if (!c->bus[0]) {
		/* The file's name up to its first dot, /etc/shmbus/<bus>.conf,
		 * under the rule of the name key. */
		char name[256], why[160];

		base = strrchr(path, '/');
		base = base ? base + 1 : path;
		snprintf(name, sizeof(name), "%.*s",
			 (int)(strcspn(base, ".") < 255 ? strcspn(base, ".")
							: 255), base);
		if (p_string63(name, c->bus, why, sizeof(why))) {
			snprintf(c->err, sizeof(c->err), "%s:%d: [bus] has no "
				 "name, and the file's name up to its first dot "
				 "is no bus name: %s", path,
				 ps.bus_line ? ps.bus_line : 1, why);
			sbd_conf_free(c);
			return -1;
		}
	}
	/* The bus's own directory: channel files apart from other programs'
	 * files in /dev/shm, and from another bus's channel of the same
	 * name. */
	if (!c->shm_dir[0])
		snprintf(c->shm_dir, sizeof(c->shm_dir), "%s%s",
			 SB_DEFAULT_SHM_PREFIX, c->bus);
	if (!c->socket[0])
		snprintf(c->socket, sizeof(c->socket), "%s/%s.sock",
			 SB_DEFAULT_RUN_DIR, c->bus);
	strcpy(c->file_shm_dir, c->shm_dir);
	strcpy(c->file_socket, c->socket);
	if (check(c)) {
		sbd_conf_free(c);
		return -1;
	}
	/* Last: a file without [bus] that has another error reports that. */
	if (!ps.bus_line) {
		snprintf(c->err, sizeof(c->err), "%s:%d: no [bus] section "
			 "(%s)", path,
			 ps.first_section_line ? ps.first_section_line : 1,
			 ps.first_section_line ? "a config starts with [bus]" :
			 "the file has no section at all");
		sbd_conf_free(c);
		return -1;
	}
	return 0;
}

void sbd_conf_free(struct sbd_conf *c)
{
	free(c->chans);
	c->chans = NULL;
	c->nchans = 0;
}
