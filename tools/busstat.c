/* SPDX-License-Identifier: MIT */
/*
 * busstat - the operator's view of every channel of a bus, and of the
 * channels' consumer groups (busstat_groups.c); the full-screen view is
 * busstat_watch.c.
 *
 * It maps each channel read-only (shmbus_channel_open_ro) and needs
 * nothing else: it works when the daemon is down and for any user allowed
 * to read the files.  A channel it cannot read or validate is shown as
 * such, never skipped silently and never a crash.  A file that is not a
 * channel (another program's, in a shared directory) is skipped: one
 * without the shmbus magic and without a channel's data file beside it.
 *
 *   busstat [BUS | -b BUS | -d DIR] [--json | --prometheus] [INTERVAL [COUNT]]
 *   busstat [BUS | -b BUS | -d DIR] -c CHANNEL [--json]
 *   busstat [BUS | -b BUS | -d DIR] -w [INTERVAL]   full screen, by lag
 *
 * A bus name is found with shmbus_bus_dir() (shmbusd's bus file, else
 * /dev/shm/shmbus-BUS); -d names the directory itself.  --prometheus
 * writes the text exposition format (for node_exporter's textfile
 * collector): one HELP and TYPE line per metric family, then one sample
 * per channel, labelled channel="NAME": each of busstat's samples is a
 * whole exposition of its own.  Rates are measured between two samples:
 * without an interval, over a first sample FIRST_SAMPLE_S long.
 *
 * Exit codes, as every shmbus tool: 0 all channels healthy; 1 failure (no
 * such bus or channel, no terminal for -w); 2 usage; and 3 a channel could
 * not be read (permission) or is corrupt or incompatible.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shmbus.h"
#include "shmbus/layout.h"
#include "busstat.h"

/*
 * Names and process names come from the directory and from shared memory
 * that any subscriber writes: never to the terminal as they are.  In text,
 * a byte that is not printable ASCII becomes \xNN, and a backslash \\.
 * `out` holds 4 * strlen(s) + 1 bytes: TEXT_MAX for any name, TEXT_PATH
 * for a directory.
 */
const char *text(const char *s, char *out)
{
	char *o = out;

	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '\\') {
			*o++ = '\\';
			*o++ = '\\';
		} else if (ch < 0x20 || ch >= 0x7f) {
			o += sprintf(o, "\\x%02x", ch);
		} else {
			*o++ = (char)ch;
		}
	}
	*o = 0;
	return out;
}

/* The length of the UTF-8 sequence at s if it is valid, shortest form, not
 * a surrogate, and not a C1 control (U+0080 to U+009F, which a terminal
 * may act on); else 0. */
static int utf8_len(const unsigned char *s)
{
	unsigned char c = s[0];
	int n;
	unsigned char lo = 0x80, hi = 0xbf;

	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (c == 0xc2)
		lo = 0xa0;	/* not C1 */
	else if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (int i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

const char *err_word(int err)
{
	switch (-err) {
	case EACCES:
	case EPERM:
		return "no-permission";
	case EPROTONOSUPPORT:
		return "incompatible";
	default:		/* EPROTO too: list() keeps channels only */
		return "corrupt";
	}
}

/* Sizes: powers of 1024, Ki, Mi, Gi... with one decimal below 10
 * ("64Ki", "1.5Mi"). */
const char *human_bytes(char *buf, size_t len, double v)
{
	static const char *const units[] = { "", "Ki", "Mi", "Gi", "Ti", "Pi" };
	int u = 0;

	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%.0f", v);
	else
		snprintf(buf, len, v < 10 && v != (double)(long)v ? "%.1f%s"
								  : "%.0f%s",
			 v, units[u]);
	return buf;
}

/* Counts: K, M, G (powers of 1000) with one decimal below 10. */
const char *human(char *buf, size_t len, double v)
{
	static const char units[] = " KMGTP";
	int u = 0;

	while (v >= 1000 && u < 5) {
		v /= 1000;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%.0f", v);
	else
		snprintf(buf, len, v < 10 ? "%.1f%c" : "%.0f%c", v, units[u]);
	return buf;
}

/* Samples channel r and its groups (into gs); 0, GONE, or -ENOMEM.  A
 * file cut short while it is read (a SIGBUS the guard took: what was cut
 * read as zeros) makes the channel corrupt, not a healthy one with
 * zeros. */
#define GONE 1
static int sample(const char *dir, struct row *r, struct group_rows *gs)
{
	unsigned long faults = sb_sigbus_faults(NULL);
	shmbus_channel *ch = shmbus_channel_open_ro(dir, r->name);
	int rc;

	if (!ch) {
		/* Deleted since it was listed: its name leads nowhere (a
		 * data file missing under a control file is EBADMSG). */
		if (errno == ENOENT)
			return GONE;
		r->err = -errno;
		return 0;
	}
	shmbus_channel_info(ch, &r->in);
	shmbus_channel_replication(ch, &r->rp);
	sb_jnl_read(ch, &r->jv);
	r->fill = 0;
	for (unsigned i = 0; i < NSUB; i++) {
		struct shmbus_sub_info si;

		if (shmbus_channel_subscriber(ch, i, &si))
			continue;
		/* A dead process's slot, until shmbusd or the next opener
		 * frees it, is not counted; its lag is (it holds a block
		 * channel's producers back until then). */
		r->subs += si.alive != 0;
		r->lost += si.lost;
		if (si.lag_msgs > r->lag_msgs)
			r->lag_msgs = si.lag_msgs;
		if (si.lag_bytes > r->lag_bytes)
			r->lag_bytes = si.lag_bytes;
	}
	for (unsigned i = 0; i < NPROD; i++) {
		struct shmbus_prod_info pi;

		r->pubs += shmbus_channel_producer(ch, i, &pi) == 0 &&
			   pi.alive;
	}
	r->fill = r->lag_bytes > r->in.capacity ? r->in.capacity : r->lag_bytes;
	if (sb_sigbus_faults(NULL) != faults) {
		r->err = -EBADMSG;
		shmbus_channel_close(ch);
		return 0;
	}
	rc = groups_sample(gs, ch, dir, r->name);
	shmbus_channel_close(ch);
	return rc;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct row *)a)->name,
		      ((const struct row *)b)->name);
}

/* The channel name in a data file's name (".NAME.<16 hex>.data", see
 * SHMBUS_DATA_NAME_FMT), or 0 if it is not one; `out` holds 256 bytes. */
static bool data_file_of(const char *f, char *out)
{
	size_t n = strlen(f);

	if (n < 1 + 1 + 1 + 16 + 5 || f[0] != '.' ||
	    strcmp(f + n - 5, ".data") || f[n - 22] != '.' ||
	    n - 22 - 1 >= 256)
		return false;
	for (size_t i = n - 21; i < n - 5; i++)
		if (!strchr("0123456789abcdef", f[i]))
			return false;
	memcpy(out, f + 1, n - 23);
	out[n - 23] = 0;
	return true;
}

/* The names of the channels' data files seen in a directory. */
struct names {
	char (*v)[256];
	int n, cap;
};

/*
 * Whether `name` in the directory is a shmbus channel: its first 8 bytes
 * are the shmbus magic (a damaged channel keeps it, and is reported), or,
 * when they cannot be read or are not, a channel's data file with its
 * name is beside it (a channel whose control file was damaged at the
 * start, or that this user may not read).  Anything else is another
 * program's file.
 */
static bool is_channel(int dfd, const char *name, const struct names *data)
{
	uint64_t magic = 0;
	struct stat st;
	int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW |
				   O_NONBLOCK);

	if (fd >= 0) {
		bool reg = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
		bool ours = reg && pread(fd, &magic, sizeof(magic), 0) ==
					   (ssize_t)sizeof(magic) &&
			    magic == SHMBUS_MAGIC;

		close(fd);
		if (!reg)
			return false;
		if (ours)
			return true;
	}
	for (int i = 0; i < data->n; i++)
		if (!strcmp(data->v[i], name))
			return true;
	return false;
}

/* The array v of *cap elements of `size` bytes, with room for element n:
 * v, or v moved and grown (*cap updated); NULL when out of memory (v
 * stays as it was). */
void *grow(void *v, int *cap, int n, size_t size)
{
	void *p;
	int c;

	if (n < *cap)
		return v;
	if (*cap > INT_MAX / 2)
		return NULL;
	c = *cap ? 2 * *cap : 64;
	p = realloc(v, (size_t)c * size);
	if (p)
		*cap = c;
	return p;
}

/*
 * Lists the channels of `dir` into out, sorted by name; n, or -errno: the
 * bus itself missing, or -ENOMEM (nothing is ever left out silently).
 * Two passes: the data files first, then every other name judged as it is
 * read, so that only channels are kept, however many other files there
 * are.
 */
static int list(const char *dir, struct rows *out)
{
	static struct names data;
	struct dirent *e;
	int dfd, rc = 0;
	DIR *d = opendir(dir);
	void *p;

	if (!d)
		return -errno;
	dfd = dirfd(d);
	data.n = 0;
	out->n = 0;
	while ((e = readdir(d))) {
		if (e->d_name[0] != '.')
			continue;
		p = grow(data.v, &data.cap, data.n, sizeof(*data.v));
		if (!p) {
			rc = -ENOMEM;
			goto out;
		}
		data.v = p;
		data.n += data_file_of(e->d_name, data.v[data.n]);
	}
	rewinddir(d);
	while ((e = readdir(d))) {
		struct row *r;

		if (e->d_name[0] == '.' ||
		    strlen(e->d_name) >= sizeof(r->name) ||
		    (e->d_type != DT_REG && e->d_type != DT_UNKNOWN) ||
		    !is_channel(dfd, e->d_name, &data))
			continue;
		p = grow(out->r, &out->cap, out->n, sizeof(*out->r));
		if (!p) {
			rc = -ENOMEM;
			goto out;
		}
		out->r = p;
		r = &out->r[out->n++];
		memset(r, 0, sizeof(*r));
		strcpy(r->name, e->d_name);
	}
	if (out->n > 1)
		qsort(out->r, (size_t)out->n, sizeof(*out->r), by_name);
out:
	closedir(d);
	return rc ? rc : out->n;
}

double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Rates between the previous sample and this one, dt seconds apart; a
 * channel new since then (or whose counters went back: recreated) has
 * none yet. */
void rates(struct row *cur, int n, const struct row *prev, int pn,
		  double dt)
{
	for (int i = 0; i < n; i++) {
		const struct row *p = NULL;

		for (int j = 0; j < pn && !p; j++)
			if (!strcmp(prev[j].name, cur[i].name) && !prev[j].err)
				p = &prev[j];
		if (cur[i].err)
			continue;
		if (p && dt > 0 && cur[i].in.published >= p->in.published &&
		    cur[i].in.bytes >= p->in.bytes) {
			cur[i].msg_rate = (cur[i].in.published - p->in.published) / dt;
			cur[i].byte_rate = (cur[i].in.bytes - p->in.bytes) / dt;
		}
	}
}

/* Lists and samples every channel of dir, and their groups, into rows;
 * n or -errno. */
int sample_all(const char *dir, struct rows *rows)
{
	int n = list(dir, rows), k = 0;

	rows->groups.n = 0;
	for (int i = 0; i < n; i++) {
		int rc = sample(dir, &rows->r[i], &rows->groups);

		if (rc < 0)
			return -ENOMEM;
		if (rc == GONE)
			continue;	/* left out, as a group deleted */
		if (k != i)
			rows->r[k] = rows->r[i];
		k++;
	}
	if (n > 0)
		rows->n = k;
	return n < 0 ? n : k;
}

static const char *level_word(uint32_t l)
{
	return l == SHMBUS_ACK_BOTH_PERSISTED ? "both_persisted" :
	       l == SHMBUS_ACK_STANDBY_PERSISTED ? "standby_persisted" :
	       l == SHMBUS_ACK_APPLIED ? "applied" :
	       l == SHMBUS_ACK_RECEIVED ? "received" : "local";
}

static const char *role_word(const struct shmbus_repl_info *p)
{
	return p->standby ? "standby" : "primary";
}

/* A lag in seconds, "0" for none, "?" for unknown (UINT64_MAX). */
const char *seconds_word(char *buf, size_t len, uint64_t ns)
{
	if (!ns)
		snprintf(buf, len, "0");
	else if (ns == UINT64_MAX)
		snprintf(buf, len, "?");
	else
		snprintf(buf, len, ns < 10000000000ull ? "%.2fs" : "%.0fs",
			 (double)ns / 1e9);
	return buf;
}

/* The replicated channels, below the main table. */
static void print_repl_table(const struct row *r, int n)
{
	char a[16], b[16], c[16], name[TEXT_MAX];
	int any = 0;

	for (int i = 0; i < n; i++, r++) {
		if (r->err || !r->rp.replicated)
			continue;
		if (!any++)
			printf("%-20s %-7s %5s %-17s %-4s %-8s %12s %7s %7s %7s "
			       "%5s %5s\n", "REPLICATED", "ROLE", "EPOCH",
			       "LEVEL", "LINK", "SYNC", "ACKED", "LAGB",
			       "LAGMSG", "LAGT", "GAPS", "BAD");
		printf("%-20s %-7s %5llu %-17s %-4s %-8s %12llu %7s %7s %7s "
		       "%5llu %5llu\n", text(r->name, name), role_word(&r->rp),
		       (unsigned long long)r->rp.epoch, level_word(r->rp.level),
		       r->rp.linked ? "up" : "down",
		       r->rp.standby ? "-" : r->rp.out_of_sync ?
		       (r->rp.strict ? "OUT/hold" : "OUT/degr") : "in",
		       (unsigned long long)r->rp.acknowledged,
		       r->rp.standby ? "-" : human_bytes(a, sizeof(a),
						(double)r->rp.lag_bytes),
		       r->rp.standby ? "-" : r->rp.lag_messages == UINT64_MAX ?
		       "?" : human(b, sizeof(b), (double)r->rp.lag_messages),
		       r->rp.standby ? "-" : seconds_word(c, sizeof(c),
							  r->rp.lag_ns),
		       (unsigned long long)r->rp.gaps,
		       (unsigned long long)r->rp.bad_frames);
	}
}

/* ------------------------------------------------------------ journal */

static const char *keep_word(uint32_t k)
{
	return k == SHMBUS_JKEEP_READER ? "reader" :
	       k == SHMBUS_JKEEP_GROUP ? "group" :
	       k == SHMBUS_JKEEP_STANDBY ? "standby" : "rule";
}

static const char *jstate_word(const struct sb_jnl_view *v)
{
	return v->state & SHMBUS_JNL_DISK_FULL ? "disk_full" :
	       v->state & SHMBUS_JNL_ERROR ? "error" : "ok";
}

/* Bytes of records the journal has not synced. */
static uint64_t jlag(const struct sb_jnl_view *v)
{
	return v->head > v->persisted ? v->head - v->persisted : 0;
}

/* The journaled channels, below the main table. */
static void print_jnl_table(const struct row *r, int n)
{
	char a[16], b[16], name[TEXT_MAX];
	int any = 0;

	for (int i = 0; i < n; i++, r++) {
		const struct sb_jnl_view *v = &r->jv;

		if (r->err || !(v->state & SHMBUS_JNL_ON))
			continue;
		if (!any++)
			printf("%-20s %14s %14s %7s %7s %14s %-7s %5s %-9s\n",
			       "JOURNAL", "WRITTEN", "SYNCED", "LAGB", "SIZE",
			       "OLDEST", "KEPT", "GAPS", "STATE");
		printf("%-20s %14llu %14llu %7s %7s %14llu %-7s %5llu %-9s\n",
		       text(r->name, name), (unsigned long long)v->written,
		       (unsigned long long)v->persisted,
		       human_bytes(a, sizeof(a), (double)jlag(v)),
		       human_bytes(b, sizeof(b), (double)v->bytes),
		       (unsigned long long)v->oldest, keep_word(v->keep),
		       (unsigned long long)v->gaps, jstate_word(v));
	}
}

/* ,"journal":{...} or null: docs/busstat.1 lists the fields. */
static void print_json_jnl(const struct sb_jnl_view *v)
{
	if (!(v->state & SHMBUS_JNL_ON)) {
		printf(",\"journal\":null");
		return;
	}
	printf(",\"journal\":{\"dir\":");
	json_str(v->dir);
	printf(",\"written\":%llu,\"persisted\":%llu,\"lag_bytes\":%llu,"
	       "\"bytes\":%llu,\"oldest\":%llu,\"kept_by\":\"%s\","
	       "\"syncs\":%llu,\"gaps\":%llu,\"gap_bytes\":%llu,"
	       "\"state\":\"%s\"}",
	       (unsigned long long)v->written,
	       (unsigned long long)v->persisted, (unsigned long long)jlag(v),
	       (unsigned long long)v->bytes, (unsigned long long)v->oldest,
	       keep_word(v->keep), (unsigned long long)v->syncs,
	       (unsigned long long)v->gaps, (unsigned long long)v->gap_bytes,
	       jstate_word(v));
}

/* The journal metrics, for journaled channels only. */
static void print_prom_jnl(const struct row *rows, int n)
{
	static const struct {
		const char *name, *type, *help;
	} m[] = {
		{ "shmbus_journal_persisted_position", "gauge", "Records "
		  "below it are synced to the journal." },
		{ "shmbus_journal_lag_bytes", "gauge", "Bytes committed to the "
		  "ring and not yet synced to the journal." },
		{ "shmbus_journal_bytes", "gauge", "Bytes of the journal's "
		  "segment files." },
		{ "shmbus_journal_syncs_total", "counter", "fdatasync calls." },
		{ "shmbus_journal_gaps_total", "counter", "Ranges the journal "
		  "never had (lapped, or turned on late)." },
		{ "shmbus_journal_disk_full", "gauge", "1 while the journal's "
		  "filesystem is below journal_min_free." },
	};

	for (size_t k = 0; k < sizeof(m) / sizeof(m[0]); k++) {
		int shown = 0;

		for (int i = 0; i < n; i++) {
			const struct sb_jnl_view *v = &rows[i].jv;
			double x;

			if (rows[i].err || !(v->state & SHMBUS_JNL_ON))
				continue;
			if (!shown++)
				printf("# HELP %s %s\n# TYPE %s %s\n", m[k].name,
				       m[k].help, m[k].name, m[k].type);
			switch (k) {
			case 0: x = (double)v->persisted; break;
			case 1: x = (double)jlag(v); break;
			case 2: x = (double)v->bytes; break;
			case 3: x = (double)v->syncs; break;
			case 4: x = (double)v->gaps; break;
			default:
				x = !!(v->state & SHMBUS_JNL_DISK_FULL);
				break;
			}
			printf("%s{channel=\"", m[k].name);
			escaped(rows[i].name, false);
			printf("\"} %.17g\n", x);
		}
	}
}

static void print_jnl_detail(const struct sb_jnl_view *v)
{
	char safe[TEXT_MAX];

	printf("journal: in %s, written %llu, synced %llu (%llu bytes "
	       "behind), %llu bytes from %llu (oldest kept by %s), %llu "
	       "syncs, %llu gaps (%llu bytes)%s\n", text(v->dir, safe),
	       (unsigned long long)v->written,
	       (unsigned long long)v->persisted, (unsigned long long)jlag(v),
	       (unsigned long long)v->bytes, (unsigned long long)v->oldest,
	       keep_word(v->keep), (unsigned long long)v->syncs,
	       (unsigned long long)v->gaps, (unsigned long long)v->gap_bytes,
	       v->state & SHMBUS_JNL_DISK_FULL ? ", DISK FULL: not "
	       "acknowledging" : v->state & SHMBUS_JNL_ERROR ?
	       ", WRITE ERRORS: retrying" : "");
}

static void print_table(const struct row *r, int n, int header, double dt)
{
	char a[16], b[16], c[16], d[16], e[16], f[16], g[16], h[16], k[16],
	     m[16], name[TEXT_MAX];

	if (header)
		printf("# MSG/S and B/S: rates over the last %.2f s\n"
		       "%-20s %-9s %6s %5s %3s %3s %7s %7s %7s %7s %7s %7s %7s "
		       "%7s %5s\n", dt,
		       "CHANNEL", "POLICY", "CAP", "FILL", "PUB", "SUB",
		       "MSG/S", "B/S", "LAGMSG", "LAGB", "LOST", "STALLS",
		       "REPAIRS", "REAPED", "STUCK");
	for (int i = 0; i < n; i++, r++) {
		if (r->err) {
			printf("%-20s %-9s %s\n", text(r->name, name), "-",
			       err_word(r->err));
			continue;
		}
		printf("%-20s %-9s %6s %4.0f%% %3u %3u %7s %7s %7s %7s %7s %7s %7s %7s %5s\n",
		       text(r->name, name),
		       r->in.policy == SHMBUS_OVERWRITE ? "overwrite" : "block",
		       human_bytes(a, sizeof(a), (double)r->in.capacity),
		       100.0 * (double)r->fill / (double)r->in.capacity,
		       r->pubs, r->subs, human(b, sizeof(b), r->msg_rate),
		       human_bytes(c, sizeof(c), r->byte_rate),
		       human(d, sizeof(d), (double)r->lag_msgs),
		       human_bytes(e, sizeof(e), (double)r->lag_bytes),
		       human(f, sizeof(f), (double)r->lost),
		       human(g, sizeof(g), (double)r->in.backpressure),
		       human(h, sizeof(h), (double)r->in.repairs),
		       human(m, sizeof(m), (double)r->in.reaped),
		       human(k, sizeof(k), (double)r->in.stuck));
	}
}

/*
 * Writes s escaped for a JSON string or a Prometheus label value.  Channel
 * names are [A-Za-z0-9._-] (the library refuses others), but the directory
 * and the slots may hold anything: the output is valid UTF-8 and prints
 * nothing a terminal acts on.  Both escape backslash and double quote;
 * printable ASCII and valid UTF-8 (but C1 controls) pass.  Any other byte
 * is \u00XX in JSON; in a label, a newline is \n, as the format says, and
 * any other byte the four characters \xNN (its backslash escaped).
 */
void escaped(const char *s, bool json)
{
	while (*s) {
		const unsigned char *u = (const unsigned char *)s;
		int n = *u >= 0x80 ? utf8_len(u) : 0;

		if (n) {
			fwrite(s, 1, (size_t)n, stdout);
			s += n;
			continue;
		}
		if (*u == '"' || *u == '\\')
			printf("\\%c", *u);
		else if (*u >= 0x20 && *u < 0x7f)
			putchar(*u);
		else if (json)
			printf("\\u%04x", *u);
		else if (*u == '\n')
			printf("\\n");
		else
			printf("\\\\x%02x", *u);
		s++;
	}
}

void json_str(const char *s)
{
	putchar('"');
	escaped(s, true);
	putchar('"');
}

/* ,"replication":{...} or null: docs/busstat.1 lists the fields. */
static void print_json_repl(const struct shmbus_repl_info *p)
{
	if (!p->replicated) {
		printf(",\"replication\":null");
		return;
	}
	printf(",\"replication\":{\"role\":\"%s\",\"epoch\":%llu,"
	       "\"level\":\"%s\",\"linked\":%s,\"in_sync\":%s,"
	       "\"strict\":%s,\"fenced\":%s,\"acknowledged\":%llu,"
	       "\"received\":%llu,\"applied\":%llu,\"lag_bytes\":%llu,",
	       role_word(p), (unsigned long long)p->epoch,
	       level_word(p->level), p->linked ? "true" : "false",
	       p->standby ? "null" : p->out_of_sync ? "false" : "true",
	       p->strict ? "true" : "false", p->fenced ? "true" : "false",
	       (unsigned long long)p->acknowledged,
	       (unsigned long long)p->received,
	       (unsigned long long)p->applied,
	       (unsigned long long)p->lag_bytes);
	if (p->lag_messages == UINT64_MAX)
		printf("\"lag_messages\":null,");
	else
		printf("\"lag_messages\":%llu,",
		       (unsigned long long)p->lag_messages);
	if (p->lag_ns == UINT64_MAX)
		printf("\"lag_seconds\":null,");
	else
		printf("\"lag_seconds\":%.6f,", (double)p->lag_ns / 1e9);
	printf("\"frames\":%llu,\"bad_frames\":%llu,"
	       "\"gaps\":%llu,\"gap_bytes\":%llu,"
	       "\"out_of_sync_events\":%llu}", (unsigned long long)p->frames,
	       (unsigned long long)p->bad_frames, (unsigned long long)p->gaps,
	       (unsigned long long)p->gap_bytes,
	       (unsigned long long)p->out_of_sync_events);
}

static void print_json(const char *dir, const struct rows *rows, double dt)
{
	const struct row *r = rows->r;
	int n = rows->n;

	printf("{\"time\":%.3f,\"dir\":", now_s());
	json_str(dir);
	printf(",\"rate_interval\":%.3f,\"channels\":[", dt);
	for (int i = 0; i < n; i++, r++) {
		printf(i ? ",{" : "{");
		printf("\"name\":");
		json_str(r->name);
		if (r->err) {
			printf(",\"status\":\"%s\"}", err_word(r->err));
			continue;
		}
		printf(",\"status\":\"ok\",\"policy\":\"%s\",\"producers_mode\":\"%s\","
		       "\"capacity\":%llu,\"max_msg\":%u,\"fill_bytes\":%llu,"
		       "\"publishers\":%u,\"subscribers\":%u,\"head\":%llu,"
		       "\"messages_published\":%llu,\"bytes_published\":%llu,"
		       "\"messages_per_second\":%.1f,\"bytes_per_second\":%.1f,"
		       "\"max_lag_messages\":%llu,\"max_lag_bytes\":%llu,"
		       "\"messages_lost\":%llu,\"backpressure_events\":%llu,"
		       "\"wakeups\":%llu,\"aborts\":%llu,\"repairs\":%llu,"
		       "\"slots_reaped\":%llu,\"stuck\":%llu",
		       r->in.policy == SHMBUS_OVERWRITE ? "overwrite" : "block",
		       r->in.producers == SHMBUS_MULTI_PRODUCER ? "multi" : "single",
		       (unsigned long long)r->in.capacity, r->in.max_msg,
		       (unsigned long long)r->fill, r->pubs, r->subs,
		       (unsigned long long)r->in.head,
		       (unsigned long long)r->in.published,
		       (unsigned long long)r->in.bytes, r->msg_rate, r->byte_rate,
		       (unsigned long long)r->lag_msgs,
		       (unsigned long long)r->lag_bytes,
		       (unsigned long long)r->lost,
		       (unsigned long long)r->in.backpressure,
		       (unsigned long long)r->in.wakeups,
		       (unsigned long long)r->in.aborts,
		       (unsigned long long)r->in.repairs,
		       (unsigned long long)r->in.reaped,
		       (unsigned long long)r->in.stuck);
		print_json_repl(&r->rp);
		print_json_jnl(&r->jv);
		groups_print_json(&rows->groups, r->name);
		printf("}");
	}
	printf("]}\n");
}


struct prom_metric {
	const char *name, *type, *help;
	size_t off;		/* of a uint64_t, or (size_t)-1 for special */
	int special;
};

#define IN(f) offsetof(struct row, in) + offsetof(struct shmbus_channel_info, f)
#define RW(f) offsetof(struct row, f)

static const struct prom_metric prom_metrics[] = {
	{ "shmbus_messages_published_total", "counter",
	  "Messages published on the channel.", IN(published), 0 },
	{ "shmbus_bytes_published_total", "counter",
	  "Payload bytes published on the channel.", IN(bytes), 0 },
	{ "shmbus_messages_lost_total", "counter",
	  "Messages lost by lapped subscribers (overwrite policy), summed.",
	  RW(lost), 0 },
	{ "shmbus_backpressure_events_total", "counter",
	  "Claims refused or delayed because a reader was behind.",
	  IN(backpressure), 0 },
	{ "shmbus_wakeups_total", "counter",
	  "Futex wake calls made by producers.", IN(wakeups), 0 },
	{ "shmbus_aborts_total", "counter", "Claims aborted by producers.",
	  IN(aborts), 0 },
	{ "shmbus_repairs_total", "counter",
	  "Claims of dead producers repaired.", IN(repairs), 0 },
	{ "shmbus_slots_reaped_total", "counter",
	  "Slots of dead processes released by shmbusd.", IN(reaped), 0 },
	{ "shmbus_stuck_total", "counter",
	  "Times shmbusd found subscribers waiting on a position that no live "
	  "producer covers.", IN(stuck), 0 },
	{ "shmbus_capacity_bytes", "gauge", "Data capacity of the channel.",
	  IN(capacity), 0 },
	{ "shmbus_fill_bytes", "gauge",
	  "Bytes the slowest subscriber has not read yet.", RW(fill), 0 },
	{ "shmbus_max_lag_messages", "gauge",
	  "Messages the slowest subscriber has not read yet.", RW(lag_msgs), 0 },
	{ "shmbus_max_lag_bytes", "gauge",
	  "Bytes between head and the slowest subscriber.", RW(lag_bytes), 0 },
	{ "shmbus_subscribers", "gauge", "Active subscribers.", 0, 1 },
	{ "shmbus_publishers", "gauge", "Active publishers.", 0, 2 },
	{ "shmbus_channel_up", "gauge",
	  "1 if the channel could be read and validated, else 0.", 0, 3 },
};

/* The replication metrics, for replicated channels only. */
static void print_prom_repl(const struct row *rows, int n)
{
	static const struct {
		const char *name, *type, *help;
	} m[] = {
		{ "shmbus_repl_epoch", "gauge", "The epoch of the channel's "
		  "newest records." },
		{ "shmbus_repl_standby", "gauge", "1 if this host is the "
		  "channel's standby." },
		{ "shmbus_repl_linked", "gauge", "1 if the link to the peer is "
		  "up." },
		{ "shmbus_repl_in_sync", "gauge", "Primary: 1 if the standby is "
		  "in sync." },
		{ "shmbus_repl_acknowledged_position", "gauge", "The "
		  "watermark: records below it are acknowledged." },
		{ "shmbus_repl_lag_bytes", "gauge", "Primary: bytes the standby "
		  "lacks at the channel's level." },
		{ "shmbus_repl_lag_seconds", "gauge", "Primary: seconds since "
		  "the standby last had everything." },
		{ "shmbus_repl_frames_total", "counter", "Frames shipped "
		  "(primary) or applied (standby)." },
		{ "shmbus_repl_bad_frames_total", "counter", "Frames refused "
		  "(CRC, position, epoch)." },
		{ "shmbus_repl_gaps_total", "counter", "Times the standby went "
		  "on past a gap." },
		{ "shmbus_repl_gap_bytes_total", "counter", "Bytes skipped by "
		  "such gaps." },
		{ "shmbus_repl_out_of_sync_total", "counter", "Times the "
		  "standby fell out of sync." },
	};

	for (size_t k = 0; k < sizeof(m) / sizeof(m[0]); k++) {
		int shown = 0;

		for (int i = 0; i < n; i++) {
			const struct shmbus_repl_info *p = &rows[i].rp;
			double v;

			if (rows[i].err || !p->replicated)
				continue;
			if (!shown++)
				printf("# HELP %s %s\n# TYPE %s %s\n", m[k].name,
				       m[k].help, m[k].name, m[k].type);
			switch (k) {
			case 0: v = (double)p->epoch; break;
			case 1: v = p->standby; break;
			case 2: v = p->linked; break;
			case 3: v = !p->standby && !p->out_of_sync; break;
			case 4: v = (double)p->acknowledged; break;
			case 5: v = (double)p->lag_bytes; break;
			case 6: v = p->lag_ns == UINT64_MAX ? NAN :
				    (double)p->lag_ns / 1e9; break;
			case 7: v = (double)p->frames; break;
			case 8: v = (double)p->bad_frames; break;
			case 9: v = (double)p->gaps; break;
			case 10: v = (double)p->gap_bytes; break;
			default: v = (double)p->out_of_sync_events; break;
			}
			printf("%s{channel=\"", m[k].name);
			escaped(rows[i].name, false);
			if (isnan(v))
				printf("\"} NaN\n");	/* unknown */
			else
				printf("\"} %.17g\n", v);
		}
	}
}

static void print_prom(const struct row *rows, int n)
{
	for (size_t m = 0; m < sizeof(prom_metrics) / sizeof(prom_metrics[0]);
	     m++) {
		const struct prom_metric *pm = &prom_metrics[m];

		printf("# HELP %s %s\n# TYPE %s %s\n", pm->name, pm->help,
		       pm->name, pm->type);
		for (int i = 0; i < n; i++) {
			const struct row *r = &rows[i];
			unsigned long long v;

			if (r->err && pm->special != 3)
				continue;
			switch (pm->special) {
			case 1: v = r->subs; break;
			case 2: v = r->pubs; break;
			case 3: v = !r->err; break;
			default:
				memcpy(&v, (const char *)r + pm->off, sizeof(v));
			}
			printf("%s{channel=\"", pm->name);
			escaped(r->name, false);
			printf("\"} %llu\n", v);
		}
	}
}

static const char *wait_word(enum shmbus_wait w)
{
	return w == SHMBUS_WAIT_SLEEP ? "sleep" : w == SHMBUS_WAIT_YIELD ? "yield"
									: "spin";
}

/* busstat -c CHANNEL: every subscriber and producer. */
static void print_repl_detail(const struct shmbus_repl_info *p)
{
	printf("replication: %s at epoch %llu, level %s, link %s", role_word(p),
	       (unsigned long long)p->epoch, level_word(p->level),
	       p->linked ? "up" : "down");
	if (!p->standby)
		printf(", standby %s", p->out_of_sync ?
		       (p->strict ? "out of sync (sync waiters held)" :
				    "out of sync (acknowledging locally)") :
		       "in sync");
	printf("%s\n", p->fenced ? ", producers refused" : "");
	printf("  acknowledged %llu, received %llu, applied %llu",
	       (unsigned long long)p->acknowledged,
	       (unsigned long long)p->received,
	       (unsigned long long)p->applied);
	if (!p->standby) {
		printf(", lag %llu bytes, ", (unsigned long long)p->lag_bytes);
		if (p->lag_messages == UINT64_MAX)
			printf("? messages");
		else
			printf("%llu messages",
			       (unsigned long long)p->lag_messages);
		if (p->lag_ns == UINT64_MAX)
			printf(", ? s");
		else
			printf(", %.3f s", (double)p->lag_ns / 1e9);
	}
	printf("\n  frames %llu, refused %llu, gaps %llu (%llu bytes), out of "
	       "sync %llu times\n", (unsigned long long)p->frames,
	       (unsigned long long)p->bad_frames, (unsigned long long)p->gaps,
	       (unsigned long long)p->gap_bytes,
	       (unsigned long long)p->out_of_sync_events);
}

/* -c: the channel's groups, after its producers; 0, or the exit status
 * a group that cannot be read calls for. */
static int detail_groups(shmbus_channel *ch, const char *dir,
			 const char *name, enum format fmt)
{
	static struct group_rows gs;

	gs.n = 0;
	if (groups_sample(&gs, ch, dir, name)) {
		fprintf(stderr, "busstat: %s\n", strerror(ENOMEM));
		return EXIT_FAIL;
	}
	if (fmt == JSON)
		groups_print_json(&gs, name);
	else
		groups_print_table(&gs, name);
	return groups_bad(&gs) ? EXIT_BADCH : 0;
}

/* -c --json: the object's first fields, its status as in the channels'
 * array of the other JSON output. */
static void detail_json_head(const char *dir, const char *name,
			     const char *status)
{
	printf("{\"time\":%.3f,\"dir\":", now_s());
	json_str(dir);
	printf(",\"name\":");
	json_str(name);
	printf(",\"status\":\"%s\"", status);
}

static int detail(const char *dir, const char *name, enum format fmt)
{
	static struct shmbus_sub_info subs[NSUB];
	static struct shmbus_prod_info prods[NPROD];
	static bool has_sub[NSUB], has_prod[NPROD];
	unsigned long faults = sb_sigbus_faults(NULL);
	shmbus_channel *ch = shmbus_channel_open_ro(dir, name);
	struct shmbus_repl_info rp;
	struct shmbus_channel_info in;
	struct sb_jnl_view jv;
	char safe[TEXT_MAX];
	int first = 1, status;
	int err = ch ? 0 : errno;

	if (ch) {
		/* Everything read before anything is printed: a file cut
		 * short meanwhile (its cut part read as zeros, see sample())
		 * is reported as such, not shown with those zeros. */
		shmbus_channel_info(ch, &in);
		shmbus_channel_replication(ch, &rp);
		sb_jnl_read(ch, &jv);
		for (unsigned i = 0; i < NSUB; i++)
			has_sub[i] = !shmbus_channel_subscriber(ch, i,
								&subs[i]);
		for (unsigned i = 0; i < NPROD; i++)
			has_prod[i] = !shmbus_channel_producer(ch, i,
							       &prods[i]);
		if (sb_sigbus_faults(NULL) != faults) {
			shmbus_channel_close(ch);
			ch = NULL;
			err = EBADMSG;
		}
	}
	if (!ch) {
		fprintf(stderr, "busstat: %s/%s: %s\n", dir, name,
			err == EBADMSG && faults != sb_sigbus_faults(NULL) ?
			"its file was cut short while it was read" :
			shmbus_strerror(err));
		/* A name no channel can have is no such channel. */
		if (err == ENOENT || err == EINVAL)
			return EXIT_FAIL;
		if (fmt == JSON) {
			detail_json_head(dir, name, err_word(-err));
			printf("}\n");
		}
		return EXIT_BADCH;
	}
	if (fmt == JSON) {
		detail_json_head(dir, name, "ok");
		printf(",\"head\":%llu,\"messages_published\":%llu",
		       (unsigned long long)in.head,
		       (unsigned long long)in.published);
		print_json_repl(&rp);
		print_json_jnl(&jv);
		printf(",\"subscribers\":[");
	} else {
		printf("channel %s: head %llu, %llu messages published\n",
		       text(name, safe),
		       (unsigned long long)in.head,
		       (unsigned long long)in.published);
		if (rp.replicated)
			print_repl_detail(&rp);
		if (jv.state & SHMBUS_JNL_ON)
			print_jnl_detail(&jv);
		printf("%-5s %-8s %-16s %-6s %12s %10s %10s %10s %10s %-5s\n",
		       "SLOT", "PID", "NAME", "STATE", "POSITION", "LAGMSG",
		       "LAGB", "DELIVERED", "LOST", "WAIT");
	}
	for (unsigned i = 0; i < NSUB; i++) {
		const struct shmbus_sub_info si = subs[i];

		if (!has_sub[i])
			continue;
		if (fmt == JSON) {
			printf("%s{\"slot\":%u,\"pid\":%d,\"process\":", first ? "" : ",",
			       i, (int)si.pid);
			json_str(si.comm);
			printf(",\"alive\":%s,\"position\":%llu,\"lag_messages\":%llu,"
			       "\"lag_bytes\":%llu,\"delivered\":%llu,\"lost\":%llu,"
			       "\"wait\":\"%s\",\"sleeping\":%s}",
			       si.alive ? "true" : "false",
			       (unsigned long long)si.pos,
			       (unsigned long long)si.lag_msgs,
			       (unsigned long long)si.lag_bytes,
			       (unsigned long long)si.delivered,
			       (unsigned long long)si.lost, wait_word(si.wait),
			       si.sleeping ? "true" : "false");
		} else {
			printf("%-5u %-8d %-16s %-6s %12llu %10llu %10llu %10llu %10llu %-5s\n",
			       i, (int)si.pid, text(si.comm, safe),
			       si.alive ? "alive" : "dead",
			       (unsigned long long)si.pos,
			       (unsigned long long)si.lag_msgs,
			       (unsigned long long)si.lag_bytes,
			       (unsigned long long)si.delivered,
			       (unsigned long long)si.lost, wait_word(si.wait));
		}
		first = 0;
	}
	first = 1;
	if (fmt == JSON)
		printf("],\"producers\":[");
	else
		printf("%-5s %-8s %-16s %-6s %12s\n", "PSLOT", "PID", "NAME",
		       "STATE", "PUBLISHED");
	for (unsigned i = 0; i < NPROD; i++) {
		const struct shmbus_prod_info pi = prods[i];

		if (!has_prod[i])
			continue;
		if (fmt == JSON) {
			printf("%s{\"slot\":%u,\"pid\":%d,\"process\":", first ? "" : ",",
			       i, (int)pi.pid);
			json_str(pi.comm);
			printf(",\"alive\":%s,\"published\":%llu}",
			       pi.alive ? "true" : "false",
			       (unsigned long long)pi.published);
		} else {
			printf("%-5u %-8d %-16s %-6s %12llu\n", i, (int)pi.pid,
			       text(pi.comm, safe), pi.alive ? "alive" : "dead",
			       (unsigned long long)pi.published);
		}
		first = 0;
	}
	if (fmt == JSON)
		printf("]");
	status = detail_groups(ch, dir, name, fmt);
	if (fmt == JSON)
		printf("}\n");
	shmbus_channel_close(ch);
	return status;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: busstat [BUS | -b BUS | -d DIR] [--json|--prometheus] "
		   "[INTERVAL [COUNT]]\n"
		   "       busstat [BUS | -b BUS | -d DIR] -w [INTERVAL]\n"
		   "       busstat [BUS | -b BUS | -d DIR] -c CHANNEL [--json]\n"
		   "       busstat --help | --version\n"
		   "BUS: a bus name, its directory from shmbusd's bus file "
		   "($SHMBUS_RUN_DIR/BUS.bus),\n"
		   "else /dev/shm/shmbus-BUS.  Default: -d $SHMBUS_DIR if set, "
		   "else the bus\n"
		   "$SHMBUS_BUS, else \"default\".  Without INTERVAL, rates "
		   "are over %.2f s.\n"
		   "Exit: 0 healthy, 1 no such bus or channel, 2 usage, 3 a "
		   "channel unreadable or damaged.\n", FIRST_SAMPLE_S);
}

/* A positive number of seconds, all of s. */
/* Sleeps for s seconds (under 1e6: seconds()), resuming after a
 * signal. */
static void sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) *
						 1e9) };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static bool seconds(const char *s, double *out)
{
	char *end;

	errno = 0;
	*out = strtod(s, &end);
	return end != s && !*end && !errno && *out > 0 && *out < 1e6;
}

/* The directory of bus `bus`; 0, or the exit status after a message. */
static int bus_dir(const char *bus, char *dir, size_t len)
{
	int rc = shmbus_bus_dir(bus, dir, len);

	if (rc >= 0)
		return 0;
	if (rc == -EINVAL)
		fprintf(stderr, "busstat: '%s' is not a bus name (1 to 63 "
			"letters, digits, '.', '_' or '-'; -d DIR names a "
			"directory)\n", bus);
	else
		fprintf(stderr, "busstat: bus '%s': its bus file in %s: %s\n",
			bus, getenv("SHMBUS_RUN_DIR") ? getenv("SHMBUS_RUN_DIR")
						      : "/run/shmbus",
			rc == -EBADMSG ? "not a valid bus file"
				       : strerror(-rc));
	return rc == -EINVAL ? EXIT_USAGE : EXIT_FAIL;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "bus", required_argument, NULL, 'b' },
		{ "dir", required_argument, NULL, 'd' },
		{ "channel", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "prometheus", no_argument, NULL, 'p' },
		{ "watch", no_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	static struct rows rows[2];
	static char dirbuf[PATH_MAX];
	const char *dir = NULL, *bus = NULL, *chan = NULL;
	enum format fmt = TABLE;
	double interval = 0, t_prev;
	long count = 1;
	int opt, n_prev = 0, status = 0, formats = 0;

	/* A channel's or a group's file cut short under us (any subscriber
	 * may) reads as zeros, which show as damage, instead of ending us
	 * with SIGBUS: busstat only reads. */
	sb_sigbus_guard();
	while ((opt = getopt_long(argc, argv, "b:d:c:jpwh", opts, NULL)) != -1) {
		switch (opt) {
		case 'b': bus = optarg; break;
		case 'd': dir = optarg; break;
		case 'c': chan = optarg; break;
		case 'j': fmt = JSON; formats++; break;
		case 'p': fmt = PROM; formats++; break;
		case 'w': fmt = WATCH; formats++; break;
		case 'h': usage(stdout); return 0;
		case 'V':
			printf("busstat (shmbus) %s\n", shmbus_version());
			return 0;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	/* One output at a time: --json, --prometheus and -w choose it. */
	if (formats > 1 || (chan && (fmt == PROM || fmt == WATCH))) {
		fprintf(stderr, "busstat: --json, --prometheus and -w exclude "
			"one another (and -c shows a table or --json)\n");
		usage(stderr);
		return EXIT_USAGE;
	}
	/* BUS, then INTERVAL [COUNT]: a first word that is not a number is
	 * a bus name. */
	if (optind < argc && !seconds(argv[optind], &interval)) {
		if (bus || dir) {
			fprintf(stderr, "busstat: '%s': not an interval (the "
				"bus is given already)\n", argv[optind]);
			usage(stderr);
			return EXIT_USAGE;
		}
		bus = argv[optind++];
	}
	if (bus && dir) {
		fprintf(stderr, "busstat: a bus or a directory, not both\n");
		return EXIT_USAGE;
	}
	interval = 0;
	if (optind < argc) {
		if (!seconds(argv[optind++], &interval)) {
			usage(stderr);
			return EXIT_USAGE;
		}
		count = -1;
	}
	if (optind < argc) {
		char *end;

		count = strtol(argv[optind++], &end, 10);
		/* Watch mode has an interval, no count. */
		if (*end || count <= 0 || optind < argc || fmt == WATCH) {
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (!bus && !dir) {
		dir = getenv("SHMBUS_DIR");
		if (!dir || !*dir) {
			dir = NULL;
			bus = getenv("SHMBUS_BUS");
			if (!bus || !*bus)
				bus = "default";
		}
	}
	if (bus) {
		status = bus_dir(bus, dirbuf, sizeof(dirbuf));
		if (status)
			return status;
		dir = dirbuf;
	}
	if (chan) {
		/* Once, or every interval (count times, or for ever). */
		for (long k = 0;; k++) {
			status = detail(dir, chan, fmt);
			if (status == EXIT_FAIL || !(interval > 0) ||
			    (count > 0 && k + 1 >= count))
				return status;
			fflush(stdout);
			sleep_s(interval);
		}
	}
	if (fmt == WATCH)
		return watch(dir, interval > 0 ? interval : 1.0);

	/* Rates need two samples: the first, FIRST_SAMPLE_S before the
	 * first line (Prometheus has no rates: it needs none). */
	t_prev = now_s();
	if (fmt != PROM) {
		n_prev = sample_all(dir, &rows[1]);
		if (n_prev < 0) {
			fprintf(stderr, "busstat: %s: %s\n", dir,
				strerror(-n_prev));
			return EXIT_FAIL;
		}
		usleep((useconds_t)(FIRST_SAMPLE_S * 1e6));
	}
	for (long k = 0; count < 0 || k < count; k++) {
		int n = sample_all(dir, &rows[k % 2]);
		struct row *cur = rows[k % 2].r, *prev = rows[(k + 1) % 2].r;
		double t = now_s();

		if (n < 0) {
			fprintf(stderr, "busstat: %s: %s\n", dir, strerror(-n));
			return EXIT_FAIL;
		}
		rates(cur, n, prev, n_prev, t - t_prev);
		status = groups_bad(&rows[k % 2].groups) ? EXIT_BADCH : 0;
		for (int i = 0; i < n; i++)
			if (cur[i].err)
				status = EXIT_BADCH;
		if (fmt == JSON)
			print_json(dir, &rows[k % 2], t - t_prev);
		else if (fmt == PROM) {
			print_prom(cur, n);
			print_prom_repl(cur, n);
			print_prom_jnl(cur, n);
			groups_print_prom(&rows[k % 2].groups);
		}
		else {
			print_table(cur, n, k % 20 == 0, t - t_prev);
			print_repl_table(cur, n);
			print_jnl_table(cur, n);
			groups_print_table(&rows[k % 2].groups, NULL);
		}
		fflush(stdout);
		n_prev = n;
		t_prev = t;
		if (count < 0 || k + 1 < count)
			sleep_s(interval);
	}
	return status;
}
