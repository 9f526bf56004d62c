/* SPDX-License-Identifier: MIT */
/*
 * shmbusctl - administer a bus through its daemon's control socket.
 *
 *   shmbusctl [-b BUS] list
 *   shmbusctl [-b BUS] describe NAME
 *   shmbusctl [-b BUS] create NAME [--capacity SIZE] [--max-msg SIZE]
 *                      [--policy block|overwrite] [--producers single|multi]
 *                      [--numa NODE] [--mode OCTAL]
 *   shmbusctl [-b BUS] delete NAME
 *   shmbusctl [-b BUS] delete-group CHANNEL GROUP
 *   shmbusctl [-b BUS] status
 *   shmbusctl [-b BUS] promote [--force] | demote [--force] | switchover
 *   shmbusctl [-b BUS] journal dump|verify CHANNEL|DIR [--dir JOURNAL_DIR]
 *                      [--from POS | --since TIME]
 *   shmbusctl quarantine FILE
 *
 *   shmbusctl --help | --version
 *
 * BUS is a bus name, found as shmbus_connect() finds it (the bus file
 * $SHMBUS_RUN_DIR/BUS.bus that shmbusd writes, else $SHMBUS_RUN_DIR/BUS.sock),
 * or a socket path; the default is $SHMBUS_BUS, else "default".
 * Exit codes, as every shmbus tool: 0 done, 1 the daemon refused (its
 * reason is printed), 2 bad usage; and 3 no daemon to talk to.  The
 * journal and quarantine commands read the files themselves, with or
 * without a daemon: 4 means the file is damaged (where and why are
 * printed), 1 that it cannot be read.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
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
#include "shmbus/quarantine.h"
#include "../lib/contract.h"
#include "../lib/journal.h"

#define EXIT_REFUSED	1
#define EXIT_USAGE	2
#define EXIT_NODAEMON	3
#define EXIT_DAMAGED	4

static shmbus_bus *bus;		/* for the daemon's reasons */

static void usage(FILE *f)
{
	fprintf(f,
"usage: shmbusctl [-b BUS] list\n"
"       shmbusctl [-b BUS] describe NAME\n"
"       shmbusctl [-b BUS] create NAME [--capacity SIZE] [--max-msg SIZE]\n"
"                 [--policy block|overwrite] [--producers single|multi]\n"
"                 [--numa NODE] [--mode OCTAL]\n"
"       shmbusctl [-b BUS] delete NAME\n"
"       shmbusctl [-b BUS] delete-group CHANNEL GROUP\n"
"       shmbusctl [-b BUS] status\n"
"       shmbusctl [-b BUS] promote [--force] | demote [--force] | switchover\n"
"       shmbusctl [-b BUS] journal dump|verify CHANNEL|DIR [--dir DIR]\n"
"                 [--from POS | --since TIME]\n"
"       shmbusctl quarantine FILE\n"
"       shmbusctl --help | --version\n"
"SIZE: bytes, or with K, M, G (KiB, MiB, GiB).\n"
"BUS: a bus name or the daemon's socket path (default $SHMBUS_BUS or\n"
"\"default\").  Exit: 0 done, 1 refused, 2 usage, 3 no daemon, 4 a\n"
"journal or quarantine file is damaged.\n");
}

/* The config file's rule (sb_parse_size()). */
static int parse_size(const char *s, uint64_t *out)
{
	return sb_parse_size(s, out) ? -1 : 0;
}

static const char *policy_name(enum shmbus_policy p)
{
	return p == SHMBUS_OVERWRITE ? "overwrite" : "block";
}

static const char *prod_name(enum shmbus_producers p)
{
	return p == SHMBUS_MULTI_PRODUCER ? "multi" : "single";
}

static int print_row(const struct shmbus_bus_channel *c, uint32_t flags,
		     void *arg)
{
	(void)arg;
	printf("%-24s %10llu %8u %-9s %-6s %4u %4u %12llu %s\n", c->name,
	       (unsigned long long)c->capacity, c->max_msg,
	       policy_name(c->policy), prod_name(c->producers), c->subscribers,
	       c->producers_active, (unsigned long long)c->published,
	       flags & SHMBUS_F_DAMAGED ? "damaged" : "ok");
	return 0;
}

/* A refusal and its reason. */
static int refused_why(const char *what, const char *name, const char *why)
{
	fprintf(stderr, "shmbusctl: %s%s%s: %s\n", what, name ? " " : "",
		name ? name : "", why);
	return EXIT_REFUSED;
}

/* The daemon's reason, or what the errno means. */
static int refused(const char *what, const char *name, int rc)
{
	return refused_why(what, name, shmbus_bus_strerror(bus, rc));
}

/* A --max-msg past the request's 32 bits: refused here, with the reason
 * the daemon gives for one the capacity cannot carry (or for the
 * capacity, if that is wrong too). */
static int max_msg_refused(const char *name, uint64_t max_msg,
			   struct shmbus_channel_attr a)
{
	uint32_t lim = shmbus_max_msg(a.capacity);
	char why[256];

	a.max_msg = 0;
	if (!lim && shmbus_channel_attr_check(&a, why, sizeof(why)))
		return refused_why("create", name, why);
	snprintf(why, sizeof(why), "max_msg %llu is too large for capacity "
		 "%llu: at most %u (capacity/2 - 32)",
		 (unsigned long long)max_msg, (unsigned long long)a.capacity,
		 lim);
	return refused_why("create", name, why);
}

/* create's options, read before the daemon is reached: 0, or the exit
 * status after a message.  *name is the channel's. */
static int create_parse(int argc, char **argv, struct shmbus_channel_attr *ap,
			const char **name)
{
	static const struct option opts[] = {
		{ "capacity", required_argument, NULL, 'c' },
		{ "max-msg", required_argument, NULL, 'm' },
		{ "policy", required_argument, NULL, 'p' },
		{ "producers", required_argument, NULL, 'P' },
		{ "numa", required_argument, NULL, 'n' },
		{ "mode", required_argument, NULL, 'o' },
		{ 0 },
	};
	struct shmbus_channel_attr a;
	uint64_t max_msg = 0;
	long numa;
	char *end;
	int opt;

	/* max_msg 0: the daemon applies the default for the capacity.  An
	 * explicit --max-msg is sent as given: the daemon refuses one the
	 * capacity cannot carry, and says what it allows. */
	shmbus_channel_attr_init(&a);
	optind = 1;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			if (parse_size(optarg, &a.capacity))
				goto bad;
			break;
		case 'm':
			if (parse_size(optarg, &max_msg))
				goto bad;
			break;
		case 'p':
			if (!strcmp(optarg, "block"))
				a.policy = SHMBUS_BLOCK;
			else if (!strcmp(optarg, "overwrite"))
				a.policy = SHMBUS_OVERWRITE;
			else
				goto bad;
			break;
		case 'P':
			if (!strcmp(optarg, "single"))
				a.producers = SHMBUS_SINGLE_PRODUCER;
			else if (!strcmp(optarg, "multi"))
				a.producers = SHMBUS_MULTI_PRODUCER;
			else
				goto bad;
			break;
		case 'n':
			errno = 0;
			numa = strtol(optarg, &end, 10);
			if (end == optarg || *end || errno || numa < -1 ||
			    numa > INT_MAX)
				goto bad;
			a.numa_node = (int)numa;
			break;
		case 'o': {
			unsigned long m;

			errno = 0;
			m = strtoul(optarg, &end, 8);
			/* As the config's `mode`: the owner reads and
			 * writes. */
			if (end == optarg || *end || errno || m > 0777 ||
			    (m & 0600) != 0600)
				goto bad;
			a.mode = (mode_t)m;
			break;
		}
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (max_msg > UINT32_MAX)
		return max_msg_refused(argv[optind], max_msg, a);
	a.max_msg = (uint32_t)max_msg;
	*ap = a;
	*name = argv[optind];
	return 0;
bad:
	fprintf(stderr, "shmbusctl: create: bad value '%s'\n", optarg);
	return EXIT_USAGE;
}

static int cmd_create(const char *name, struct shmbus_channel_attr a)
{
	struct shmbus_bus_channel c;
	int rc = shmbus_bus_create(bus, name, &a);

	if (rc)
		return refused("create", name, rc);
	/* What the daemon made, as it says. */
	if (shmbus_bus_describe(bus, name, &c) == 0)
		a.capacity = c.capacity, a.max_msg = c.max_msg;
	printf("created %s: %llu bytes, max message %u, %s, %s producer\n",
	       name, (unsigned long long)a.capacity, a.max_msg,
	       policy_name(a.policy), prod_name(a.producers));
	return 0;
}

static int cmd_describe(const char *name)
{
	struct shmbus_bus_channel c;
	int rc = shmbus_bus_describe(bus, name, &c);

	if (rc)
		return refused("describe", name, rc);
	printf("channel       %s (%s)\n", c.name,
	       c.configured ? "from the config file" : "created at run time");
	printf("capacity      %llu bytes, max message %u bytes\n",
	       (unsigned long long)c.capacity, c.max_msg);
	printf("policy        %s, %s producer\n", policy_name(c.policy),
	       prod_name(c.producers));
	printf("numa node     %d\n", c.numa_node);
	printf("file mode     %04o\n", c.mode);
	printf("publish       %s\n", c.publish);
	printf("subscribe     %s\n", c.subscribe);
	printf("producers     %u active\n", c.producers_active);
	printf("subscribers   %u active\n", c.subscribers);
	printf("clients       %u connected\n", c.clients);
	printf("published     %llu messages, %llu bytes, head %llu\n",
	       (unsigned long long)c.published, (unsigned long long)c.bytes,
	       (unsigned long long)c.head);
	printf("backpressure  %llu\n", (unsigned long long)c.backpressure);
	printf("repairs       %llu claims padded, %llu dead slots released\n",
	       (unsigned long long)c.repairs, (unsigned long long)c.reaped);
	return 0;
}

/* The pair: this host's role and epoch, and per replicated channel what
 * shmbusd's replication words say. */
static int cmd_repl(const char *cmd, bool force)
{
	struct shmbus_ctl_repl_reply r;
	uint32_t op = !strcmp(cmd, "status") ? SHMBUS_REPL_OP_STATUS :
		      !strcmp(cmd, "promote") ? SHMBUS_REPL_OP_PROMOTE :
		      !strcmp(cmd, "demote") ? SHMBUS_REPL_OP_DEMOTE :
					       SHMBUS_REPL_OP_SWITCHOVER;
	int rc = sb_bus_repl(bus, op, force ? SHMBUS_REPL_FORCE : 0, &r);

	if (rc)
		return refused(cmd, NULL, rc);
	if (op == SHMBUS_REPL_OP_STATUS)
		printf("%s\n", r.text);
	else
		printf("%s: %s (%.1f ms)\n", cmd, r.text,
		       (double)r.duration_ns / 1e6);
	return 0;
}

/* ------------------------------------------------------------ journal */

/* TIME: seconds since the epoch (fractions allowed), or UTC
 * YYYY-MM-DDTHH:MM:SS. */
static int parse_time(const char *s, int64_t *ns)
{
	struct tm tm = { 0 };
	char *end;
	double sec;

	if (strchr(s, 'T')) {
		time_t t;

		end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
		if (!end || *end)
			return -1;
		/* The nanoseconds of an int64_t: before 2262. */
		t = timegm(&tm);
		if (t < 0 || t > (time_t)(INT64_MAX / 1000000000))
			return -1;
		*ns = (int64_t)t * 1000000000;
		return 0;
	}
	sec = strtod(s, &end);
	if (end == s || *end || !(sec >= 0 && sec <= 9.2e9))
		return -1;	/* NaN fails both */
	*ns = (int64_t)(sec * 1e9);
	return 0;
}

static void print_rec(const struct sb_jrec *r)
{
	static const char *const types[] = { "msg", "pad", "skip", "gap" };
	bool word_only = SHMBUS_REC_WORD_ONLY(r->type);

	printf("%16llu %12llu %-4s %8u", (unsigned long long)r->pos,
	       word_only ? 0ull : (unsigned long long)r->seq,
	       types[r->type < 4 ? r->type : 0], r->len);
	if (r->type == SHMBUS_REC_MSG) {
		printf("  ");
		for (uint32_t i = 0; i < r->len && i < 16; i++)
			printf("%02x", r->data[i]);
		if (r->len > 16)
			printf("...");
	}
	printf("\n");
}

/* journal's options: 0, or the exit status after a message. */
static int journal_opts(int argc, char **argv, const char **jdir,
			uint64_t *from, int64_t *since, bool *have_since)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "from", required_argument, NULL, 'f' },
		{ "since", required_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	/* ":": a missing value is told apart, and getopt says nothing. */
	optind = 3;
	while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		if (c == 'd') {
			*jdir = optarg;
		} else if (c == 'f') {
			if (parse_size(optarg, from)) {
				fprintf(stderr, "shmbusctl: journal: --from "
					"'%s': not a position (bytes, or with "
					"K, M, G)\n", optarg);
				return EXIT_USAGE;
			}
		} else if (c == 's') {
			if (parse_time(optarg, since)) {
				fprintf(stderr, "shmbusctl: journal: --since "
					"'%s': expected seconds since the epoch "
					"or UTC YYYY-MM-DDTHH:MM:SS, from 1970 "
					"to 2262\n", optarg);
				return EXIT_USAGE;
			}
			*have_since = true;
		} else {
			fprintf(stderr, "shmbusctl: journal: %s: %s\n",
				argv[optind - 1], c == ':' ? "needs a value"
							   : "unknown option");
			return EXIT_USAGE;
		}
	}
	if (*from != UINT64_MAX && *have_since) {
		fprintf(stderr, "shmbusctl: journal: --from and --since "
			"exclude each other\n");
		return EXIT_USAGE;
	}
	if (optind != argc) {
		fprintf(stderr, "shmbusctl: journal: unexpected '%s'\n",
			argv[optind]);
		return EXIT_USAGE;
	}
	return 0;
}

/* Where a walk that stopped short of a position stopped: the journal's
 * end (unwritten space, or no segment after the newest). */
static bool journal_ended(const struct sb_jreader *r, uint64_t last_base)
{
	return r->pos >= last_base &&
	       (r->stop == SB_JSTOP_UNWRITTEN ||
		r->stop == SB_JSTOP_NO_SEGMENT);
}

/*
 * Positions r at --from: a record must start there, which a walk from
 * its segment's start finds (from the newest segment's, for a position
 * past it).  0; -errno, to be reported as any failed read; or
 * EXIT_REFUSED after saying why no record starts at `from`.
 */
static int journal_seek_from(struct sb_jreader *r, const char *dir,
			     uint64_t from, uint64_t last_base)
{
	uint64_t seg, at = UINT64_MAX, size = 0;
	struct sb_jrec rec;
	const char *why = NULL;
	char text[320];
	int rc;

	if (from % SHMBUS_REC_ALIGN) {
		why = "records start at multiples of 8";
		goto refused;
	}
	if (from < r->start) {
		fprintf(stderr, "shmbusctl: journal %s: %llu is older than its "
			"oldest position %llu\n", dir, (unsigned long long)from,
			(unsigned long long)r->start);
		return EXIT_REFUSED;
	}
	seg = from & ~(r->g.seg_size - 1);
	rc = sb_jreader_seek(r, seg < last_base ? seg : last_base);
	if (rc == -ENOENT) {
		why = "no segment of the journal holds it";
		goto refused;
	}
	if (rc)
		return rc;
	r->why[0] = 0;
	while (r->pos < from &&
	       (rc = sb_jreader_next(r, UINT64_MAX, &rec)) == 1) {
		at = rec.pos;
		size = rec.size;
	}
	if (rc < 0)
		return rc;
	if (r->pos == from)
		return 0;
	if (r->pos > from)
		snprintf(text, sizeof(text), "it is inside the record at %llu "
			 "(%llu bytes)", (unsigned long long)at,
			 (unsigned long long)size);
	else if (journal_ended(r, last_base))
		snprintf(text, sizeof(text), "past the journal's end at %llu",
			 (unsigned long long)r->pos);
	else
		snprintf(text, sizeof(text), "the walk from its segment's "
			 "start stopped at %llu: %s", (unsigned long long)r->pos,
			 r->why);
	why = text;
refused:
	fprintf(stderr, "shmbusctl: journal %s: no record starts at %llu: "
		"%s\n", dir, (unsigned long long)from, why);
	return EXIT_REFUSED;
}

/*
 * Walks a channel's journal from --from (or --since, or its start),
 * checking every header and record.  The journal ends cleanly at
 * unwritten space in its newest segment; any other stop is damage.
 */
static int cmd_journal(int argc, char **argv, const char *bus_name)
{
	const char *what = argv[1], *target = argv[2], *jdir = NULL;
	uint64_t from = UINT64_MAX, *bases, msgs = 0, recs = 0;
	uint64_t first = UINT64_MAX, last_base;
	bool dump = !strcmp(what, "dump"), have_since = false;
	struct sb_jreader r;
	struct sb_jrec rec;
	char dir[PATH_MAX];
	int64_t since = 0;
	size_t k;
	int rc;

	if (strcmp(what, "dump") && strcmp(what, "verify")) {
		fprintf(stderr, "shmbusctl: journal: unknown command '%s' "
			"(dump or verify)\n", what);
		return EXIT_USAGE;
	}
	rc = journal_opts(argc, argv, &jdir, &from, &since, &have_since);
	if (rc)
		return rc;
	if (strchr(target, '/'))
		rc = snprintf(dir, sizeof(dir), "%s", target);
	else if (jdir)
		rc = snprintf(dir, sizeof(dir), "%s/%s", jdir, target);
	else
		rc = snprintf(dir, sizeof(dir), "/var/lib/shmbus/%s/journal/%s",
			      bus_name && *bus_name ? bus_name : "default",
			      target);
	if (rc < 0 || (size_t)rc >= sizeof(dir)) {
		fprintf(stderr, "shmbusctl: journal: path too long\n");
		return EXIT_USAGE;
	}
	rc = sb_jlist(dir, &bases, &k);
	if (rc || !k) {
		fprintf(stderr, "shmbusctl: journal %s: %s\n", dir,
			rc ? strerror(-rc) : "no segments");
		free(bases);
		return EXIT_REFUSED;
	}
	last_base = bases[k - 1];
	if (have_since) {
		rc = sb_jtime_find(dir, since, &from);
		if (rc) {
			fprintf(stderr, "shmbusctl: journal %s: nothing at or "
				"after that time\n", dir);
			free(bases);
			return EXIT_REFUSED;
		}
	}
	sb_jreader_init(&r, dir, NULL);
	rc = sb_jreader_seek(&r, bases[0]);
	/* A time's index entry always names a record. */
	if (rc == 0 && have_since)
		rc = sb_jreader_seek(&r, from);
	else if (rc == 0 && from != UINT64_MAX)
		rc = journal_seek_from(&r, dir, from, last_base);
	if (rc > 0) {
		sb_jreader_close(&r);
		free(bases);
		return rc;
	}
	free(bases);
	if (dump && rc == 0)
		printf("%16s %12s %-4s %8s  %s\n", "POSITION", "SEQ", "TYPE",
		       "LENGTH", "PAYLOAD");
	/* r.why: the reason of this walk's last step only (a seek refused
	 * is that step: its reason stays). */
	if (rc == 0)
		r.why[0] = 0;
	while (rc == 0 && (rc = sb_jreader_next(&r, UINT64_MAX, &rec)) == 1) {
		if (first == UINT64_MAX)
			first = rec.pos;
		recs++;
		msgs += rec.type == SHMBUS_REC_MSG;
		if (dump)
			print_rec(&rec);
		rc = 0;
		r.why[0] = 0;
	}
	if (rc < 0) {
		/* A file that cannot be read names itself (open_seg()). */
		fprintf(stderr, "shmbusctl: journal %s: %s\n", dir,
			rc == -EBADMSG || rc == -EXDEV || r.why[0] ? r.why
								   : strerror(-rc));
		sb_jreader_close(&r);
		/* A segment that is a symbolic link is no segment, as one
		 * that is a directory or a FIFO (-EBADMSG) is not. */
		return rc == -EBADMSG || rc == -EXDEV || rc == -ELOOP ?
		       EXIT_DAMAGED : EXIT_REFUSED;
	}
	/* Where the walk stopped: unwritten space in the newest segment is
	 * the end; anything else is damage. */
	if (r.pos < last_base || (r.pos < last_base + r.g.seg_size &&
				  (r.stop != SB_JSTOP_UNWRITTEN ||
				   /* verify: offline; a dump may race the
				    * writer at the live end */
				   (!dump && sb_jreader_written_after(&r))))) {
		printf("damaged: segment %016llx, position %llu (file offset "
		       "%llu): %s\n",
		       (unsigned long long)(r.pos & ~(r.g.seg_size - 1)),
		       (unsigned long long)r.pos,
		       (unsigned long long)(SHMBUS_JSEG_HDR +
					    (r.pos & (r.g.seg_size - 1))),
		       r.why);
		sb_jreader_close(&r);
		return EXIT_DAMAGED;
	}
	printf("%s: %s, channel %s: %llu records (%llu messages) in "
	       "[%llu, %llu)%s\n", dir, dump ? "end" : "ok", r.g.channel,
	       (unsigned long long)recs, (unsigned long long)msgs,
	       (unsigned long long)(first == UINT64_MAX ? r.pos : first),
	       (unsigned long long)r.pos,
	       r.skipped ? ", past gaps" : "");
	sb_jreader_close(&r);
	return 0;
}

/* ---------------------------------------------------------- quarantine */

/* The damage in a quarantine file q (shmbus/quarantine.h) of `size`
 * bytes, or NULL. */
static const char *quar_bad_header(const struct shmbus_quar_hdr *q,
				   uint64_t size)
{
	if (q->magic != SHMBUS_QUAR_MAGIC)
		return "not a quarantine file (magic)";
	if (q->version != SHMBUS_QUAR_VERSION ||
	    q->hdr_size != SHMBUS_QUAR_HDR)
		return "another format version";
	if (q->hdr_crc != sb_crc32c(0, q, offsetof(struct shmbus_quar_hdr,
						   hdr_crc)))
		return "the header's checksum";
	if (q->capacity < SHMBUS_MIN_CAPACITY ||
	    q->capacity > SHMBUS_MAX_CAPACITY ||
	    (q->capacity & (q->capacity - 1)) || q->from > q->to ||
	    q->to - q->from > q->capacity || q->from % SHMBUS_REC_ALIGN ||
	    q->to % SHMBUS_REC_ALIGN || q->max_msg > SHMBUS_MAX_MSG_LIMIT ||
	    memchr(q->channel, 0, sizeof(q->channel)) == NULL)
		return "impossible geometry in the header";
	/* Printed: a name no channel can have is damage, never text for
	 * the terminal. */
	if (!sb_name_ok(q->channel, 200))
		return "a channel name that no channel can have";
	if (size != SHMBUS_QUAR_HDR + (q->to - q->from))
		return "the file's size does not match its range";
	return NULL;
}

/* Lists the records a returning primary cut off its ring, checking
 * every one: 0 intact, 4 damaged, 1 unreadable. */
static int cmd_quarantine(const char *path)
{
	struct shmbus_quar_hdr q;
	uint64_t size, n = 0, p;
	const char *bad;
	uint8_t *data = NULL;
	/* Not blocking on a FIFO or a device: only a file is read. */
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	FILE *f = NULL;
	struct stat st;
	long sz = -1;

	if (fd >= 0 && fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
		fprintf(stderr, "shmbusctl: %s: not a regular file\n", path);
		close(fd);
		return EXIT_REFUSED;
	}
	if (fd >= 0 && !(f = fdopen(fd, "rb")))
		close(fd);
	if (f && fseek(f, 0, SEEK_END) == 0)
		sz = ftell(f);
	if (sz < 0 || fseek(f, 0, SEEK_SET)) {
		fprintf(stderr, "shmbusctl: %s: %s\n", path, strerror(errno));
		if (f)
			fclose(f);
		return EXIT_REFUSED;
	}
	size = (uint64_t)sz;
	if (fread(&q, 1, sizeof(q), f) != sizeof(q)) {
		bad = "shorter than its header";
		goto damaged;
	}
	bad = quar_bad_header(&q, size);
	if (bad)
		goto damaged;
	data = malloc(q.to - q.from + 1);
	if (!data || fread(data, 1, q.to - q.from, f) != q.to - q.from) {
		bad = data ? "short read" : "out of memory";
		goto damaged;
	}
	if (q.data_crc != sb_crc32c(0, data, q.to - q.from)) {
		bad = "the records' checksum";
		goto damaged;
	}
	printf("channel %s: positions %llu..%llu, written in epoch %llu and "
	       "cut at %llu for epoch %llu\n", q.channel,
	       (unsigned long long)q.from, (unsigned long long)q.to,
	       (unsigned long long)q.epoch, (unsigned long long)q.cut,
	       (unsigned long long)q.new_epoch);
	printf("%16s %12s %-4s %8s  %s\n", "POS", "SEQ", "TYPE", "LEN",
	       "DATA");
	for (p = q.from; p < q.to;) {
		const uint8_t *r = data + (p - q.from);
		struct sb_jrec rec = { .pos = p };
		uint64_t w, size_rec;

		if (q.to - p < 8) {
			bad = "a record cut short";
			goto damaged;
		}
		memcpy(&w, r, 8);
		rec.type = (uint32_t)(w >> SHMBUS_LEN_BITS) & 7;
		rec.len = (uint32_t)(w & SHMBUS_LEN_MASK);
		if ((uint32_t)(w >> 32) !=
		    (uint32_t)(p / q.capacity + 1)) {
			bad = "a record's lap tag does not match its position";
			goto damaged;
		}
		if (SHMBUS_REC_WORD_ONLY(rec.type)) {
			size_rec = SHMBUS_REC_ALIGN + rec.len;
			if (rec.len % SHMBUS_REC_ALIGN) {
				bad = "padding or a gap of an odd length";
				goto damaged;
			}
		} else if (rec.type == SHMBUS_REC_MSG ||
			   rec.type == SHMBUS_REC_SKIP) {
			size_rec = SHMBUS_REC_HDR + ((uint64_t)rec.len + 7) / 8 * 8;
			if (rec.len > q.max_msg) {
				bad = "a record longer than max_msg";
				goto damaged;
			}
			if (size_rec > q.to - p) {
				bad = "a record runs past the range";
				goto damaged;
			}
			memcpy(&rec.seq, r + 8, 8);
			rec.data = r + SHMBUS_REC_HDR;
			n += rec.type == SHMBUS_REC_MSG;
		} else {
			bad = "a record of an unknown type";
			goto damaged;
		}
		if (size_rec > q.to - p ||
		    (p & (q.capacity - 1)) + size_rec > q.capacity) {
			bad = "a record crosses the ring's end or the range's";
			goto damaged;
		}
		print_rec(&rec);
		p += size_rec;
	}
	printf("%llu messages\n", (unsigned long long)n);
	free(data);
	fclose(f);
	return 0;
damaged:
	fprintf(stderr, "shmbusctl: %s: damaged: %s\n", path, bad);
	free(data);
	fclose(f);
	return EXIT_DAMAGED;
}

/* --help and --version, in place of a command: whether arg is one
 * (then done). */
static bool help_or_version(const char *arg)
{
	if (!strcmp(arg, "-h") || !strcmp(arg, "--help"))
		usage(stdout);
	else if (!strcmp(arg, "--version"))
		printf("shmbusctl (shmbus) %s\n", shmbus_version());
	else
		return false;
	return true;
}

int main(int argc, char **argv)
{
	const char *bus_name = getenv("SHMBUS_BUS");
	struct shmbus_channel_attr attr;
	const char *cmd, *name = NULL;
	int i = 1, rc;

	if (argc > 1 && (!strcmp(argv[1], "-b") || !strcmp(argv[1], "--bus"))) {
		if (argc < 3 || !argv[2][0]) {
			fprintf(stderr, "shmbusctl: %s needs a bus name or a "
				"socket path\n", argv[1]);
			return EXIT_USAGE;
		}
		bus_name = argv[2];
		i = 3;
	}
	if (i >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	cmd = argv[i];
	if (help_or_version(cmd))
		return 0;
	if (!strcmp(cmd, "quarantine")) {
		if (argc - i != 2) {
			usage(stderr);
			return EXIT_USAGE;
		}
		return cmd_quarantine(argv[i + 1]);
	}
	if (!strcmp(cmd, "journal")) {
		if (argc - i < 3) {
			usage(stderr);
			return EXIT_USAGE;
		}
		return cmd_journal(argc - i, argv + i, bus_name);
	}
	bool repl = !strcmp(cmd, "status") || !strcmp(cmd, "promote") ||
		    !strcmp(cmd, "demote") || !strcmp(cmd, "switchover");
	bool force = repl && argc - i == 2 && !strcmp(argv[i + 1], "--force") &&
		     (!strcmp(cmd, "demote") || !strcmp(cmd, "promote"));

	if (strcmp(cmd, "list") && strcmp(cmd, "describe") &&
	    strcmp(cmd, "create") && strcmp(cmd, "delete") &&
	    strcmp(cmd, "delete-group") && !repl) {
		fprintf(stderr, "shmbusctl: unknown command '%s'\n", cmd);
		usage(stderr);
		return EXIT_USAGE;
	}
	if ((!strcmp(cmd, "list") && argc - i != 1) ||
	    ((!strcmp(cmd, "describe") || !strcmp(cmd, "delete")) &&
	     argc - i != 2) || (!strcmp(cmd, "create") && argc - i < 2) ||
	    (!strcmp(cmd, "delete-group") && argc - i != 3) ||
	    (repl && argc - i != 1 + force)) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(cmd, "create") &&
	    (rc = create_parse(argc - i, argv + i, &attr, &name)))
		return rc;
	bus = shmbus_connect(bus_name && *bus_name ? bus_name : "default");
	if (!bus && errno == EINVAL) {
		fprintf(stderr, "shmbusctl: '%s' is not a bus name (1 to 63 "
			"letters, digits, '.', '_' or '-'; a path names a "
			"socket)\n", bus_name);
		return EXIT_USAGE;
	}
	if (!bus) {
		fprintf(stderr, "shmbusctl: cannot reach shmbusd of bus '%s': "
			"%s\n", bus_name && *bus_name ? bus_name : "default",
			shmbus_strerror(errno));
		return EXIT_NODAEMON;
	}
	if (!strcmp(cmd, "list")) {
		printf("%-24s %10s %8s %-9s %-6s %4s %4s %12s %s\n",
		       "CHANNEL", "CAPACITY", "MAXMSG", "POLICY", "PROD", "SUBS",
		       "PUBS", "PUBLISHED", "STATE");
		rc = sb_bus_list(bus, print_row, NULL);
		rc = rc < 0 ? refused("list", NULL, rc) : 0;
	} else if (repl) {
		rc = cmd_repl(cmd, force);
	} else if (!strcmp(cmd, "describe")) {
		rc = cmd_describe(argv[i + 1]);
	} else if (!strcmp(cmd, "delete-group")) {
		rc = sb_bus_group_delete(bus, argv[i + 1], 0, argv[i + 2]);
		if (rc)
			rc = refused("delete-group", argv[i + 2], rc);
		else
			printf("deleted group %s of %s\n", argv[i + 2],
			       argv[i + 1]);
	} else if (!strcmp(cmd, "delete")) {
		rc = shmbus_bus_delete(bus, argv[i + 1]);
		if (rc)
			rc = refused("delete", argv[i + 1], rc);
		else
			printf("deleted %s\n", argv[i + 1]);
	} else {
		rc = cmd_create(name, attr);
	}
	shmbus_disconnect(bus);
	return rc;
}
