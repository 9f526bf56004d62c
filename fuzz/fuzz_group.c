/* SPDX-License-Identifier: MIT */
/*
 * fuzz_group.c - a consumer group's file as its members see it.
 *
 * At start-up the harness makes, in a private directory in /dev/shm, a
 * block-policy channel "feed" with three groups (shared, keyed with 8
 * lanes, single-active), an overwrite channel "ring" with a shared group,
 * and a dead-letter channel "dlq"; it publishes a few messages (keyed
 * ones on "feed") and keeps two images of each group's file, both made
 * by the library: fresh (no member has read yet) and used (a member
 * joined, took messages, acked one, nacked one and holds one, still
 * joined when the image was taken; on "ring" the group was then lapped).
 * Every group file is 64 lease slots long (20 KiB).
 *
 * Before each input the channels' files and every group's file are
 * restored to what they were after start-up, so inputs do not depend on
 * one another.  The input is then laid over one group's file:
 *
 *   byte 0   bits 0-1  the group: 0 shared, 1 keyed, 2 single-active (on
 *                      "feed"), 3 shared on "ring"
 *            bit 2     the used image (else the fresh one)
 *            bit 3     raw: u16 n, then n bytes written over the image
 *                      from offset 0 (the header, members, lanes and
 *                      lease slots; the file keeps its size)
 *            bit 4     re-stamp the identity that ties the file to its
 *                      channel (magic, version, hdr_size, file_size,
 *                      data_id, slot) from the real file
 *            bit 5     re-stamp the settings (mode, window, lanes,
 *                      lease_ns) as well
 *   then     the program: ops until the input ends (at most MAX_OPS)
 *
 * The image, changed by the PATCH and SET ops that come before any other
 * op and re-stamped as byte 0 says, is written to the file when the first
 * other op runs; a PATCH or SET after that writes into the live file that
 * members have mapped.
 * An op is one byte, bits 0-3 the op and bits 4-7 its argument, whose
 * bit 0 picks one of two member handles:
 *
 *    0 PATCH      u16 offset (modulo the file's size), u8 n, n bytes
 *    1 JOIN       arg bits 1-2: the mode asked (3: the file's own mode
 *                 field); bit 3: NULL attr
 *    2 POLL       u8 max; arg bit 1: the handler stops at the first
 *    3 READ       u8: bits 0-2 the buffer's size (caps[])
 *    4 ACK        a lease (below)
 *    5 NACK       a lease, u8 delay (times[])
 *    6 EXTEND     a lease, u8 term (times[])
 *    7 STATS      shmbus_group_stats()
 *    8 MAINTAIN   shmbus_group_maintain()
 *    9 INSPECT    u8 room for members; sb_group_inspect() and
 *                 sb_group_state_get()
 *   10 MAINT_FILE sb_group_maintain_file(); arg bit 1: a dead-letter
 *                 publisher for "dlq"
 *   11 APPLY      u8 how, a struct sb_group_state's bytes, u64 upto:
 *                 sb_group_state_apply() (how bit 0: the state names the
 *                 group's own file; bit 1: upto is the channel's head;
 *                 bit 2: so is the floor; bit 3: dead letter "dlq"); how
 *                 bit 4: sb_group_cut() at upto instead; bit 5: first
 *                 the channel's fence to state (how >> 6) (OPEN,
 *                 STANDBY, HANDOVER, CUT), as shmbusd sets it
 *   12 LEAVE      13 WAIT (timeout 0)
 *   14 PUBLISH    u8 length; arg bits 1-3: (arg >> 1) * 4 + 1 keyed
 *                 messages on the group's channel (at most MAX_PUBS an
 *                 input; block policy: a full ring refuses at once)
 *   15 SET        u16 word (the file's 8-byte words, modulo), u8 what:
 *                 0-7 a value of words[] (the edges of the integers, the
 *                 clock, the channel's head, an owner word of this
 *                 process), else a u64 from the input; written as PATCH
 *                 writes
 *
 * A lease is one byte: bits 0-2 pick one of the last NSAVED leases that
 * polls and reads gave (of either handle); bits 3-4: 0 that lease, 1 a
 * forged one (three u64 from the input), 2 that lease with word
 * (bits 5-6) % 3 replaced by a u64 from the input, 3 NULL.
 *
 * Checked: every call returns an error that include/shmbus.h (or
 * lib/contract.h) lists, or well-formed data: a poll hands its handler
 * no more than it asked for, a message's data is its record's payload in
 * the ring (data, length and position agreeing) or the member's private
 * copy (overwrite policy), its length within max_msg; a read's length fits
 * its buffer; the stats and the inspection's members are within the
 * file's tables, their names NUL-terminated, and the inspection writes no
 * more members than it was given room for.  Every loop of the library
 * must end: nothing here waits (shmbus_group_wait() gets 0, publishers
 * timeout 0).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../lib/group.h"
#include "fuzz.h"

#define CAP		4096u
#define MAX_MSG		256u
#define WINDOW		64u
#define NGROUPS		4
#define NTEMPLATES	(2 * NGROUPS)
#define MAX_OPS		64
#define MAX_PUBS	64
#define NSAVED		8

#define F_USED		0x04u
#define F_RAW		0x08u
#define F_STAMP_ID	0x10u
#define F_STAMP_SET	0x20u

enum op {
	OP_PATCH, OP_JOIN, OP_POLL, OP_READ, OP_ACK, OP_NACK, OP_EXTEND,
	OP_STATS, OP_MAINTAIN, OP_INSPECT, OP_MAINT_FILE, OP_APPLY, OP_LEAVE,
	OP_WAIT, OP_PUBLISH, OP_SET,
};

static const struct gdef {
	int chan;		/* 0 feed, 1 ring */
	const char *name;
	enum shmbus_group_mode mode;
	uint32_t lanes, max_deliveries;
	const char *dead_letter;
} gdefs[NGROUPS] = {
	{ 0, "shared", SHMBUS_GROUP_SHARED, 0, 2, "dlq" },
	{ 0, "keyed", SHMBUS_GROUP_KEYED, 8, 2, "dlq" },
	{ 0, "single", SHMBUS_GROUP_SINGLE_ACTIVE, 1, 5, NULL },
	{ 1, "ow", SHMBUS_GROUP_SHARED, 0, 5, NULL },
};

static const char *const chan_names[3] = { "feed", "ring", "dlq" };

/* A file restored before each input. */
struct file {
	char path[PATH_MAX];
	int fd;
	uint8_t *bytes;
	size_t len;
};

static const char *dir;
static shmbus_channel *chans[2];	/* feed, ring: open for good */
static struct file chan_files[6];	/* ctl and data of feed, ring, dlq */
static struct file group_files[NGROUPS];	/* holding the fresh image */
static uint8_t *templates[NTEMPLATES];	/* [2 * group + used] */
static size_t group_len;		/* every group file's size */
static uint8_t *img;			/* the input's image, group_len */

/* ------------------------------------------------------------- set-up */

static void slurp(struct file *f)
{
	FILE *s = fopen(f->path, "rb");
	long n;

	FUZZ_CHECK(s != NULL);
	FUZZ_CHECK(fseek(s, 0, SEEK_END) == 0);
	n = ftell(s);
	FUZZ_CHECK(n > 0 && fseek(s, 0, SEEK_SET) == 0);
	free(f->bytes);
	f->bytes = malloc((size_t)n);
	FUZZ_CHECK(f->bytes != NULL);
	FUZZ_CHECK(fread(f->bytes, 1, (size_t)n, s) == (size_t)n);
	fclose(s);
	f->len = (size_t)n;
}

static void keep_file(struct file *f, const char *path)
{
	snprintf(f->path, sizeof(f->path), "%s", path);
	f->fd = open(path, O_RDWR | O_CLOEXEC);
	FUZZ_CHECK(f->fd >= 0);
	slurp(f);
}

static void restore(const struct file *f)
{
	FUZZ_CHECK(pwrite(f->fd, f->bytes, f->len, 0) == (ssize_t)f->len);
}

static shmbus_channel *make_channel(const char *name, enum shmbus_policy pol,
				    enum shmbus_producers prod)
{
	struct shmbus_channel_attr a;
	shmbus_channel *ch;

	shmbus_channel_attr_init(&a);
	a.capacity = CAP;
	a.max_msg = MAX_MSG;
	a.policy = pol;
	a.producers = prod;
	ch = shmbus_channel_create(dir, name, &a, SHMBUS_CREATE_REPLACE);
	FUZZ_CHECK(ch != NULL);
	return ch;
}

static void group_attr(const struct gdef *d, struct shmbus_group_attr *ga)
{
	shmbus_group_attr_init(ga);
	ga->mode = d->mode;
	ga->window = WINDOW;
	ga->lanes = d->lanes;
	ga->max_deliveries = d->max_deliveries;
	ga->start = SHMBUS_START_OLDEST;
	ga->dead_letter = d->dead_letter;
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed * 131 + i);
}

/* `count` keyed messages of lengths 0 to 112 on ch. */
static void publish_some(shmbus_channel *ch, unsigned count, unsigned seed)
{
	struct shmbus_pub_attr pa = { .timeout_ns = 0 };
	shmbus_pub *p = shmbus_pub_open(ch, &pa);
	uint8_t buf[128];

	FUZZ_CHECK(p != NULL);
	for (unsigned i = 0; i < count; i++) {
		unsigned len = (i * 37 + seed) % 113;

		fill(buf, len, i + seed);
		FUZZ_CHECK(shmbus_publish_keyed(p, i % 11, buf, len) == 0);
	}
	shmbus_pub_close(p);
}

/* The used image: a member reads three messages, acks the first, nacks
 * the second and holds the third (shared: a fourth too), and is still
 * joined when the image is taken. */
static void use_group(unsigned g)
{
	const struct gdef *d = &gdefs[g];
	shmbus_channel *ch = chans[d->chan];
	struct shmbus_group_msg msg;
	struct shmbus_group_attr ga;
	struct file tmp;
	shmbus_group *m;
	uint8_t buf[MAX_MSG];

	group_attr(d, &ga);
	m = shmbus_group_join(ch, d->name, "seed", &ga);
	FUZZ_CHECK(m != NULL);
	for (int i = 0; i < 3; i++) {
		if (shmbus_group_read(m, buf, sizeof(buf), &msg) < 0)
			break;
		if (i == 0)
			shmbus_group_ack(m, &msg.lease);
		else if (i == 1)
			shmbus_group_nack(m, &msg.lease, 0);
	}
	if (d->mode == SHMBUS_GROUP_SHARED)
		shmbus_group_read(m, buf, sizeof(buf), &msg);
	if (d->chan == 1)	/* laps the group */
		publish_some(ch, 120, 5);
	tmp = group_files[g];
	tmp.bytes = NULL;
	slurp(&tmp);
	FUZZ_CHECK(tmp.len == group_len);
	templates[2 * g + 1] = tmp.bytes;
	shmbus_group_leave(m);	/* after the image: it shows the member */
}

static void setup(void)
{
	static bool registered;
	char path[PATH_MAX];
	shmbus_channel *dlq;

	/* libFuzzer ends a run with exit(): the directory goes with it. */
	if (!registered)
		atexit(fuzz_group_cleanup);
	registered = true;
	dir = fuzz_mkdir("group");
	chans[0] = make_channel("feed", SHMBUS_BLOCK, SHMBUS_SINGLE_PRODUCER);
	chans[1] = make_channel("ring", SHMBUS_OVERWRITE,
				SHMBUS_SINGLE_PRODUCER);
	dlq = make_channel("dlq", SHMBUS_OVERWRITE, SHMBUS_MULTI_PRODUCER);
	/* The groups, made before the messages (they start at the oldest). */
	for (unsigned g = 0; g < NGROUPS; g++) {
		struct shmbus_group_attr ga;
		shmbus_group *m;

		group_attr(&gdefs[g], &ga);
		m = shmbus_group_join(chans[gdefs[g].chan], gdefs[g].name,
				      "maker", &ga);
		FUZZ_CHECK(m != NULL);
		shmbus_group_leave(m);
	}
	publish_some(chans[0], 24, 0);
	publish_some(chans[1], 16, 1);
	for (unsigned g = 0; g < NGROUPS; g++) {
		struct file *f = &group_files[g];

		FUZZ_CHECK(sb_group_path(path, sizeof(path), dir,
					 chan_names[gdefs[g].chan],
					 gdefs[g].name) == 0);
		keep_file(f, path);
		FUZZ_CHECK(!group_len || f->len == group_len);
		group_len = f->len;
		templates[2 * g] = malloc(group_len);
		FUZZ_CHECK(templates[2 * g] != NULL);
		memcpy(templates[2 * g], f->bytes, group_len);
	}
	for (unsigned g = 0; g < NGROUPS; g++)
		use_group(g);
	for (unsigned c = 0; c < 3; c++) {
		shmbus_channel *ch = c < 2 ? chans[c] : dlq;

		snprintf(path, sizeof(path), "%s/%s", dir, chan_names[c]);
		keep_file(&chan_files[2 * c], path);
		snprintf(path, sizeof(path), "%s/" SHMBUS_DATA_NAME_FMT, dir,
			 chan_names[c], (unsigned long long)ch->data_id);
		keep_file(&chan_files[2 * c + 1], path);
	}
	shmbus_channel_close(dlq);
	img = malloc(group_len);
	FUZZ_CHECK(img != NULL);
}

void fuzz_group_cleanup(void)
{
	if (!dir)
		return;
	for (unsigned i = 0; i < 2; i++) {
		shmbus_channel_close(chans[i]);
		chans[i] = NULL;
	}
	for (unsigned i = 0; i < 6; i++) {
		close(chan_files[i].fd);
		free(chan_files[i].bytes);
		chan_files[i].bytes = NULL;
	}
	for (unsigned g = 0; g < NGROUPS; g++) {
		close(group_files[g].fd);
		free(group_files[g].bytes);
		group_files[g].bytes = NULL;
	}
	for (unsigned t = 0; t < NTEMPLATES; t++) {
		free(templates[t]);
		templates[t] = NULL;
	}
	free(img);
	img = NULL;
	group_len = 0;
	fuzz_rmdir(dir);
	free((void *)dir);
	dir = NULL;
}

/* ------------------------------------------------------------- checks */

static bool one_of(long rc, const int *errs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (rc == -errs[i])
			return true;
	return false;
}

#define ERRS(...) (const int[]){ __VA_ARGS__ }, \
	sizeof((const int[]){ __VA_ARGS__ }) / sizeof(int)

/* What opening and mapping a group's file may say. */
#define MAP_ERRS EBADMSG, EPROTONOSUPPORT, ENOMEM

struct run {
	unsigned g;			/* gdefs[] */
	shmbus_channel *ch;
	struct fuzz_in *in;
	shmbus_group *h[2];
	shmbus_group *cur;		/* the handle polling */
	struct shmbus_lease saved[NSAVED];
	unsigned nsaved;
	unsigned handled;
	unsigned pubs;
	bool foreign;			/* APPLY made another group's file */
	shmbus_channel *dl_ch;		/* MAINT_FILE's dead-letter channel */
	shmbus_pub *dl_pub;
	shmbus_pub *pub;		/* PUBLISH's */
	uint64_t sum;			/* every byte delivered, so that ASan
					 * sees every read of a message */
};

static uint64_t fuzz_u64(struct fuzz_in *in)
{
	uint64_t lo = fuzz_u32(in);

	return lo | (uint64_t)fuzz_u32(in) << 32;
}

static void save_lease(struct run *r, const struct shmbus_lease *l)
{
	r->saved[r->nsaved++ % NSAVED] = *l;
}

/* A message is its record's payload in the ring, or the member's copy
 * (overwrite policy). */
static void check_msg(struct run *r, const struct shmbus_group_msg *msg)
{
	const struct shmbus_channel *ch = r->ch;
	const uint8_t *d = msg->data, *ring = ch->data;

	FUZZ_CHECK(msg->len <= ch->max_msg);
	FUZZ_CHECK(msg->pos % SHMBUS_REC_ALIGN == 0);
	FUZZ_CHECK(msg->deliveries >= 1);
	if (d >= ring && d < ring + ch->data_len) {
		uint64_t idx = msg->pos & ch->mask;

		FUZZ_CHECK(d == ring + idx + SHMBUS_REC_HDR);
		FUZZ_CHECK(idx + SHMBUS_REC_HDR + msg->len <= ch->cap);
	} else {
		FUZZ_CHECK(r->cur && d == r->cur->buf);
	}
	for (uint32_t i = 0; i < msg->len; i++)
		r->sum += d[i];
}

static int on_msg(const struct shmbus_group_msg *msg, void *arg)
{
	struct run *r = arg;

	check_msg(r, msg);
	save_lease(r, &msg->lease);
	r->handled++;
	return 0;
}

static int on_msg_stop(const struct shmbus_group_msg *msg, void *arg)
{
	on_msg(msg, arg);
	return 1;
}

static void check_stats(const struct shmbus_group_stats *st)
{
	FUZZ_CHECK((unsigned)st->mode <= SHMBUS_GROUP_SINGLE_ACTIVE);
	FUZZ_CHECK(st->window && st->window <= SHMBUS_GROUP_MAX_WINDOW &&
		   !(st->window & (st->window - 1)));
	FUZZ_CHECK(st->lanes <= SHMBUS_GROUP_LANES);
	FUZZ_CHECK(st->members <= SHMBUS_GROUP_MEMBERS);
	FUZZ_CHECK(st->in_flight <= (st->mode == SHMBUS_GROUP_SHARED
					     ? st->window : st->lanes));
	FUZZ_CHECK(st->oldest_ns >= 0);
	FUZZ_CHECK(strnlen(st->oldest_member, 32) < 32);
}

/* ---------------------------------------------------------------- ops */

static void patch(struct run *r, bool live)
{
	struct fuzz_in *in = r->in;
	size_t off = fuzz_u16(in) % group_len, len = fuzz_u8(in);

	if (len > in->n)
		len = in->n;
	if (off + len > group_len)
		len = group_len - off;
	if (live)
		FUZZ_CHECK(len == 0 ||
			   pwrite(group_files[r->g].fd, in->p, len,
				  (off_t)off) == (ssize_t)len);
	else
		memcpy(img + off, in->p, len);
	in->p += len;
	in->n -= len;
}

/* One of the file's 8-byte words set to a value at an edge (the time
 * fields are the clock's; positions the channel's). */
static void set_word(struct run *r, bool live)
{
	struct fuzz_in *in = r->in;
	size_t off = fuzz_u16(in) * 8u % group_len;
	unsigned what = fuzz_u8(in);
	uint64_t v;

	switch (what) {
	case 0: v = 0; break;
	case 1: v = 1; break;
	case 2: v = UINT64_MAX; break;
	case 3: v = INT64_MAX; break;
	case 4: v = (uint64_t)INT64_MIN; break;
	case 5: v = (uint64_t)sb_now_ns(); break;
	case 6: v = load_relaxed64(&r->ch->pl->head); break;
	case 7: v = owner_word(SHMBUS_SLOT_ACTIVE, (uint32_t)getpid()); break;
	default: v = fuzz_u64(in);
	}
	if (live)
		FUZZ_CHECK(pwrite(group_files[r->g].fd, &v, sizeof(v),
				  (off_t)off) == sizeof(v));
	else
		memcpy(img + off, &v, sizeof(v));
}

#define STAMP(f)                                                            \
	memcpy(img + offsetof(struct shmbus_group_hdr, f),                  \
	       real + offsetof(struct shmbus_group_hdr, f),                 \
	       sizeof(((struct shmbus_group_hdr *)0)->f))

/* The image to the file, re-stamped as byte 0 says. */
static void install(struct run *r, unsigned flags)
{
	const uint8_t *real = templates[2 * r->g];

	if (flags & F_STAMP_ID) {
		STAMP(magic);
		STAMP(version);
		STAMP(hdr_size);
		STAMP(file_size);
		STAMP(data_id);
		STAMP(slot);
	}
	if (flags & F_STAMP_SET) {
		STAMP(mode);
		STAMP(window);
		STAMP(lanes);
		STAMP(lease_ns);
	}
	FUZZ_CHECK(pwrite(group_files[r->g].fd, img, group_len, 0) ==
		   (ssize_t)group_len);
}

static void op_join(struct run *r, unsigned arg)
{
	const struct gdef *d = &gdefs[r->g];
	struct shmbus_group_attr ga;
	shmbus_group **h = &r->h[arg & 1];
	uint32_t mode = (arg >> 1) & 3;

	if (*h)
		return;
	if (mode == 3)
		FUZZ_CHECK(pread(group_files[r->g].fd, &mode, sizeof(mode),
				 offsetof(struct shmbus_group_hdr, mode)) ==
			   sizeof(mode));
	group_attr(d, &ga);
	ga.mode = (enum shmbus_group_mode)mode;
	*h = shmbus_group_join(r->ch, d->name, arg & 1 ? "m1" : "m0",
			       arg & 8 ? NULL : &ga);
	if (!*h)
		FUZZ_CHECK(one_of(-errno, ERRS(MAP_ERRS, EINVAL, EEXIST,
					       ENOSPC, EIDRM, EROFS, EAGAIN)));
	else
		FUZZ_CHECK((*h)->rec && (*h)->me < SHMBUS_GROUP_MEMBERS &&
			   (*h)->window <= (group_len -
					    SHMBUS_GROUP_LEASES_OFF) / 64);
}

static void op_poll(struct run *r, shmbus_group *h, unsigned max,
		    bool stop)
{
	unsigned before = r->handled;
	int n;

	r->cur = h;
	n = shmbus_group_poll(h, stop ? on_msg_stop : on_msg, r, max);
	if (n < 0) {
		FUZZ_CHECK(one_of(n, ERRS(EIDRM, EBADMSG, EROFS, EAGAIN)));
		FUZZ_CHECK(r->handled == before);
	} else {
		FUZZ_CHECK((unsigned)n == r->handled - before);
		FUZZ_CHECK((unsigned)n <= (max ? max : 64));
		FUZZ_CHECK(!stop || n <= 1);
	}
}

static void op_read(struct run *r, shmbus_group *h, unsigned sel)
{
	static const size_t caps[] = { 0, 1, 8, 16, 64, 255, 256, 4096 };
	size_t cap = caps[sel & 7];
	uint8_t *buf = malloc(cap ? cap : 1);
	struct shmbus_group_msg msg;
	ssize_t n;

	FUZZ_CHECK(buf != NULL);
	memset(&msg, 0, sizeof(msg));
	r->cur = h;
	n = shmbus_group_read(h, buf, cap, &msg);
	if (n >= 0) {
		FUZZ_CHECK((size_t)n <= cap && msg.len == (uint64_t)n &&
			   msg.data == buf);
		FUZZ_CHECK(msg.len <= r->ch->max_msg &&
			   msg.pos % SHMBUS_REC_ALIGN == 0 &&
			   msg.deliveries >= 1);
		for (ssize_t i = 0; i < n; i++)
			r->sum += buf[i];
		save_lease(r, &msg.lease);
	} else {
		FUZZ_CHECK(one_of(n, ERRS(EAGAIN, EMSGSIZE, EIDRM, EBADMSG,
					  EROFS)));
		if (n == -EMSGSIZE) {
			FUZZ_CHECK(msg.len > cap && msg.len <= r->ch->max_msg);
			save_lease(r, &msg.lease);	/* given back */
		}
	}
	free(buf);
}

/* A lease as its selector byte says (NULL: none). */
static const struct shmbus_lease *pick_lease(struct run *r,
					     struct shmbus_lease *l)
{
	unsigned sel = fuzz_u8(r->in);

	*l = r->saved[sel & 7];
	switch ((sel >> 3) & 3) {
	case 1:
		for (int i = 0; i < 3; i++)
			l->w[i] = fuzz_u64(r->in);
		break;
	case 2:
		l->w[((sel >> 5) & 3) % 3] = fuzz_u64(r->in);
		break;
	case 3:
		return NULL;
	}
	return l;
}

/* Delays and terms: none, short, the group's default, an hour, and a
 * negative one (EINVAL). */
static int64_t pick_time(struct fuzz_in *in)
{
	static const int64_t times[] = {
		0, 1, 1000, 1000000, 100000000, INT64_C(30000000000),
		INT64_C(3600000000000), -1,
	};

	return times[fuzz_u8(in) & 7];
}

static void op_settle(struct run *r, shmbus_group *h, enum op op)
{
	struct shmbus_lease l;
	const struct shmbus_lease *lp = pick_lease(r, &l);
	int64_t t = op == OP_ACK ? 0 : pick_time(r->in);
	int rc;

	if (!h)
		return;
	if (op == OP_ACK)
		rc = shmbus_group_ack(h, lp);
	else if (op == OP_NACK)
		rc = shmbus_group_nack(h, lp, t);
	else
		rc = shmbus_group_extend(h, lp, t);
	FUZZ_CHECK(rc == 0 || rc == -ESTALE || rc == -EINVAL);
	/* 0 only for a lease and a time that are right (a member that is gone
	 * says -ESTALE first) */
	FUZZ_CHECK(rc != 0 || (lp && t >= 0));
}

static void op_stats(shmbus_group *h)
{
	struct shmbus_group_stats st;

	FUZZ_CHECK(shmbus_group_stats(h, &st) == 0);
	check_stats(&st);
	FUZZ_CHECK(st.mode == (enum shmbus_group_mode)h->mode &&
		   st.window == h->window && st.lanes == h->nlanes);
}

static void op_inspect(struct run *r, unsigned room)
{
	struct sb_member_info mi[SHMBUS_GROUP_MEMBERS + 1];
	struct shmbus_group_stats st;
	struct sb_group_state gs;
	unsigned n = room;
	int rc;

	memset(mi, 0xa5, sizeof(mi));
	rc = sb_group_inspect(r->ch, r->ch->dir, gdefs[r->g].name, &st, mi,
			      &n);
	if (rc) {
		FUZZ_CHECK(one_of(rc, ERRS(MAP_ERRS)));
	} else {
		check_stats(&st);
		FUZZ_CHECK(n <= SHMBUS_GROUP_MEMBERS);
		for (unsigned k = 0; k < n && k < room; k++)
			FUZZ_CHECK(mi[k].index < SHMBUS_GROUP_MEMBERS &&
				   strnlen(mi[k].name, 32) < 32 &&
				   strnlen(mi[k].comm, 16) < 16);
		/* No more than the room given. */
		for (unsigned k = room; k <= SHMBUS_GROUP_MEMBERS; k++)
			for (size_t b = 0; b < sizeof(mi[k]); b++)
				FUZZ_CHECK(((uint8_t *)&mi[k])[b] == 0xa5);
	}
	rc = sb_group_state_get(r->ch, r->ch->dir, gdefs[r->g].name, &gs);
	if (rc) {
		FUZZ_CHECK(one_of(rc, ERRS(MAP_ERRS)));
	} else {
		FUZZ_CHECK(!strcmp(gs.name, gdefs[r->g].name));
		FUZZ_CHECK(strnlen(gs.dead_letter, 64) < 64);
		FUZZ_CHECK(gs.mode <= SHMBUS_GMODE_SINGLE && gs.window &&
			   !(gs.window & (gs.window - 1)) &&
			   gs.lanes <= SHMBUS_GROUP_LANES && gs.lease_ns > 0);
	}
}

/* sb_group_maintain_file()'s dead-letter publisher: "dlq" only, opened
 * when first asked for and closed after the input. */
static shmbus_pub *dl_for(const char *name, void *ctx, bool *drop)
{
	struct run *r = ctx;

	FUZZ_CHECK(sb_name_ok(name, 63));
	if (strcmp(name, "dlq")) {
		*drop = true;	/* as shmbusd: the config names another */
		return NULL;
	}
	if (!r->dl_ch) {
		r->dl_ch = shmbus_channel_open(dir, "dlq");
		FUZZ_CHECK(r->dl_ch != NULL);
	}
	if (!r->dl_pub)
		r->dl_pub = shmbus_pub_open(r->dl_ch, NULL);
	return r->dl_pub;
}

static void op_maint_file(struct run *r, bool with_dl)
{
	int rc = sb_group_maintain_file(r->ch, r->ch->dir, gdefs[r->g].name,
					with_dl ? dl_for : NULL, r);

	/* EIDRM: the file's flags say the group is being deleted. */
	FUZZ_CHECK(rc >= 0 || one_of(rc, ERRS(MAP_ERRS, EIDRM)));
}

static void op_apply(struct run *r)
{
	struct fuzz_in *in = r->in;
	unsigned how = fuzz_u8(in);
	struct sb_group_state st;
	uint64_t upto, head = load_relaxed64(&r->ch->pl->head);
	int rc;

	for (size_t i = 0; i < sizeof(st); i++)
		((uint8_t *)&st)[i] = fuzz_u8(in);
	upto = fuzz_u64(in);
	/* One new group's file an input at most: a fuzzed window makes it
	 * up to 4 MiB. */
	if (how & 1 || r->foreign)
		snprintf(st.name, sizeof(st.name), "%s", gdefs[r->g].name);
	if (how & 2)
		upto = head;
	if (how & 4)
		st.floor = head;
	if (how & 8)
		snprintf(st.dead_letter, sizeof(st.dead_letter), "dlq");
	if (how & 32) {
		uint32_t w = load_relaxed32(&r->ch->daemon->fence);

		store_relaxed32(&r->ch->daemon->fence,
				((w >> 8) + 1) << 8 | (how >> 6));
	}
	if (how & 16) {
		st.name[sizeof(st.name) - 1] = 0;
		rc = sb_group_cut(r->ch, r->ch->dir, st.name, upto);
		FUZZ_CHECK(rc == 0 ||
			   one_of(rc, ERRS(MAP_ERRS, EINVAL, EBUSY, ENOENT)));
		return;
	}
	rc = sb_group_state_apply(r->ch, r->ch->dir, r->ch->name, &st, upto);
	/* EAGAIN: a new group's slot while the fence says CUT.  ENOLCK: the
	 * file's maintenance lock names a live holder (this process: words
	 * set to its pid and the time now) for the 100 ms the update waits. */
	FUZZ_CHECK(rc == 0 ||
		   one_of(rc, ERRS(MAP_ERRS, EINVAL, EBUSY, ENOSPC, EAGAIN,
				   ENOLCK)));
	if (strncmp(st.name, gdefs[r->g].name, sizeof(st.name)))
		r->foreign = true;
}

static void op_publish(struct run *r, unsigned arg, unsigned len)
{
	unsigned count = (arg >> 1) * 4 + 1;
	uint8_t buf[MAX_MSG];

	if (!r->pub) {
		struct shmbus_pub_attr pa = { .timeout_ns = 0 };

		/* EBUSY: a member opened the channel as its dead-letter
		 * channel (the file may name any) and publishes there.
		 * EROFS: an APPLY closed the fence. */
		r->pub = shmbus_pub_open(r->ch, &pa);
		if (!r->pub) {
			FUZZ_CHECK(errno == EBUSY || errno == EROFS);
			return;
		}
	}
	len %= MAX_MSG - 8 + 1;
	fill(buf, len, arg);
	for (unsigned i = 0; i < count && r->pubs < MAX_PUBS; i++, r->pubs++) {
		int rc = shmbus_publish_keyed(r->pub, len * 7 + i, buf, len);

		FUZZ_CHECK(rc == 0 || rc == -EAGAIN || rc == -EROFS);
	}
}

/* Group files that APPLY made, removed (with the restore of the
 * channels' files, their slots are free again). */
static void remove_foreign(void)
{
	char path[PATH_MAX];
	struct dirent *e;
	DIR *d = opendir(dir);

	FUZZ_CHECK(d != NULL);
	while ((e = readdir(d))) {
		bool known = false;

		if (e->d_name[0] != '.' || !strcmp(e->d_name, ".") ||
		    !strcmp(e->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		for (unsigned i = 0; i < 6 && !known; i++)
			known = !strcmp(chan_files[i].path, path);
		for (unsigned g = 0; g < NGROUPS && !known; g++)
			known = !strcmp(group_files[g].path, path);
		if (!known)
			unlink(path);
	}
	closedir(d);
}

static void run_program(struct run *r, unsigned flags)
{
	struct fuzz_in *in = r->in;
	bool installed = false;

	for (int ops = 0; ops < MAX_OPS && in->n; ops++) {
		uint8_t b = fuzz_u8(in);
		unsigned op = b & 15, arg = b >> 4;
		shmbus_group *h;

		if (op == OP_PATCH || (op == OP_SET && !installed)) {
			if (op == OP_PATCH)
				patch(r, installed);
			else
				set_word(r, false);
			continue;
		}
		if (!installed) {
			installed = true;
			install(r, flags);
		}
		h = r->h[arg & 1];
		switch ((enum op)op) {
		case OP_PATCH:
			break;
		case OP_JOIN:
			op_join(r, arg);
			break;
		case OP_POLL: {
			unsigned max = fuzz_u8(in);

			if (h)
				op_poll(r, h, max, arg & 2);
			break;
		}
		case OP_READ: {
			unsigned sel = fuzz_u8(in);

			if (h)
				op_read(r, h, sel);
			break;
		}
		case OP_ACK:
		case OP_NACK:
		case OP_EXTEND:
			op_settle(r, h, (enum op)op);
			break;
		case OP_STATS:
			if (h)
				op_stats(h);
			break;
		case OP_MAINTAIN:
			if (h) {
				int rc = shmbus_group_maintain(h);

				/* -EBADMSG: the file says a claim and a floor
				 * that cannot both be true. */
				FUZZ_CHECK(rc >= 0 ||
					   one_of(rc, ERRS(EIDRM, EBADMSG)));
			}
			break;
		case OP_INSPECT:
			op_inspect(r, fuzz_u8(in) % (SHMBUS_GROUP_MEMBERS + 1));
			break;
		case OP_MAINT_FILE:
			op_maint_file(r, arg & 2);
			break;
		case OP_APPLY:
			op_apply(r);
			break;
		case OP_LEAVE:
			shmbus_group_leave(h);
			r->h[arg & 1] = NULL;
			break;
		case OP_WAIT:
			if (h) {
				int rc = shmbus_group_wait(h, 0);

				FUZZ_CHECK(rc == 0 || rc == -ETIMEDOUT ||
					   rc == -EIDRM || rc == -EROFS ||
					   rc == -EAGAIN);
			}
			break;
		case OP_PUBLISH:
			op_publish(r, arg, fuzz_u8(in));
			break;
		case OP_SET:
			set_word(r, true);
			break;
		}
	}
	if (!installed)
		install(r, flags);
}

int fuzz_group_one(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	struct run r = { 0 };
	unsigned flags;

	if (!dir)
		setup();
	for (unsigned i = 0; i < 6; i++)
		restore(&chan_files[i]);
	for (unsigned g = 0; g < NGROUPS; g++)
		restore(&group_files[g]);
	flags = fuzz_u8(&in);
	r.g = flags & 3;
	r.ch = chans[gdefs[r.g].chan];
	r.in = &in;
	memcpy(img, templates[2 * r.g + !!(flags & F_USED)], group_len);
	if (flags & F_RAW) {
		size_t n = fuzz_u16(&in);

		n = n < in.n ? n : in.n;
		memcpy(img, in.p, n < group_len ? n : group_len);
		in.p += n;
		in.n -= n;
	}
	run_program(&r, flags);
	for (int i = 0; i < 2; i++)
		shmbus_group_leave(r.h[i]);
	shmbus_pub_close(r.pub);
	shmbus_pub_close(r.dl_pub);
	shmbus_channel_close(r.dl_ch);
	if (r.foreign)
		remove_foreign();
	(void)r.sum;
	return 0;
}

#ifndef SHMBUS_FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_group_one(data, size);
}

/* ---------------------------------------------------------- seed corpus */


static void put_patch(struct seed *sd, size_t off, const void *p,
		      unsigned n)
{
	seed_put8(sd, OP_PATCH);
	seed_put16(sd, (unsigned)off);
	seed_put8(sd, n);
	seed_put(sd, p, n);
}

static void put_patch64(struct seed *sd, size_t off, uint64_t v)
{
	put_patch(sd, off, &v, sizeof(v));
}

#define HDR(f)		offsetof(struct shmbus_group_hdr, f)
#define MEMBER(j, f)	(SHMBUS_GROUP_MEMBERS_OFF + (j) * 128u + \
			 offsetof(struct shmbus_member, f))
#define LANE(i, f)	(SHMBUS_GROUP_LANES_OFF + (i) * 64u + \
			 offsetof(struct shmbus_lane, f))

/* Every op: two members join, take messages each way, settle leases
 * given and forged, look, maintain, apply a replicated state, publish,
 * are refused on a standby, and leave; the group is then cut back. */
static void put_program(struct seed *sd)
{
	static const uint8_t a[] = {
		OP_JOIN | 6 << 4, OP_JOIN | 7 << 4,
		OP_POLL, 1, OP_READ | 1 << 4, 6, OP_POLL, 0,
		OP_ACK, 0, OP_NACK | 1 << 4, 1, 0, OP_EXTEND, 2, 5,
		OP_READ, 2, OP_STATS, OP_STATS | 1 << 4,
		OP_MAINTAIN, OP_INSPECT, 1, OP_INSPECT, 64,
		OP_MAINT_FILE | 2 << 4, OP_PUBLISH | 4 << 4, 40,
		OP_POLL | 3 << 4, 0, OP_WAIT,
		OP_ACK | 1 << 4, 3 << 3,
	};
	static const uint8_t b[] = {
		OP_LEAVE, OP_MAINTAIN | 1 << 4, OP_READ | 1 << 4, 7,
		OP_ACK | 1 << 4, 7, OP_LEAVE | 1 << 4,
	};
	static const uint8_t c[] = {
		OP_POLL, 1, OP_READ | 1 << 4, 6, OP_WAIT, OP_ACK, 0,
		OP_JOIN | 6 << 4, OP_PUBLISH | 4 << 4, 40,
	};
	struct sb_group_state st;

	seed_put(sd, a, sizeof(a));
	/* an ack of a forged lease: claim 0, held by member 1 */
	seed_put8(sd, OP_ACK | 1 << 4);
	seed_put8(sd, 1 << 3);
	seed_put64(sd, 0);
	seed_put64(sd, gctl(SHMBUS_LEASE_LEASED, 1, 1, 1));
	seed_put64(sd, 0);
	/* the group's own state, its floor at the channel's head */
	memset(&st, 0, sizeof(st));
	st.window = WINDOW;
	st.lease_ns = INT64_C(30000000000);
	seed_put8(sd, OP_APPLY);
	seed_put8(sd, 1 | 2 | 4);
	seed_put(sd, &st, sizeof(st));
	seed_put64(sd, 0);
	/* a new group's, keyed */
	snprintf(st.name, sizeof(st.name), "replica");
	st.mode = SHMBUS_GMODE_KEYED;
	st.lanes = 4;
	st.floor = 64;
	seed_put8(sd, OP_APPLY);
	seed_put8(sd, 2 | 8);
	seed_put(sd, &st, sizeof(st));
	seed_put64(sd, 0);
	/* this host a standby: the group's own state applied, and the
	 * members refused; a cut refused while they are joined */
	memset(&st, 0, sizeof(st));
	st.window = WINDOW;
	st.lease_ns = INT64_C(30000000000);
	seed_put8(sd, OP_APPLY);
	seed_put8(sd, 1 | 2 | 4 | 32 | 1 << 6);
	seed_put(sd, &st, sizeof(st));
	seed_put64(sd, 0);
	seed_put(sd, c, sizeof(c));
	seed_put8(sd, OP_APPLY);
	seed_put8(sd, 1 | 16 | 32 | 3 << 6);
	seed_put(sd, &st, sizeof(st));
	seed_put64(sd, 0);
	seed_put(sd, b, sizeof(b));
	/* and once they left, cut back to the ring's start */
	seed_put8(sd, OP_APPLY);
	seed_put8(sd, 1 | 16);
	seed_put(sd, &st, sizeof(st));
	seed_put64(sd, 0);
}

static void write_seed(const char *out, const char *name,
		       const struct seed *sd)
{
	fuzz_write_seed(out, name, sd->b, sd->n);
}

/* SHMBUS_FUZZ_SEEDS=dir: writes the seed corpus there and exits (make
 * fuzz-seeds). */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char *const tnames[NGROUPS] = {
		"shared", "keyed", "single", "ow",
	};
	const char *out = getenv("SHMBUS_FUZZ_SEEDS");
	static struct seed sd;
	char name[64];
	/* a pid that no process has (above pid_max) */
	const uint64_t dead = (uint64_t)0x3ffffffe << 32 | SHMBUS_SLOT_ACTIVE;

	(void)argc;
	(void)argv;
	if (!out)
		return 0;
	setup();
	/* Each image, re-stamped, with the whole program; and each image
	 * whole as a raw file. */
	for (unsigned t = 0; t < NTEMPLATES; t++) {
		sd.n = 0;
		seed_put8(&sd, t >> 1 | (t & 1 ? F_USED : 0) | F_STAMP_ID);
		put_program(&sd);
		snprintf(name, sizeof(name), "%s-%s", tnames[t >> 1],
			 t & 1 ? "used" : "fresh");
		write_seed(out, name, &sd);
		sd.n = 0;
		seed_put8(&sd, t >> 1 | F_RAW);
		seed_put16(&sd, (unsigned)group_len);
		seed_put(&sd, templates[t], group_len);
		put_program(&sd);
		snprintf(name, sizeof(name), "raw-%s-%s", tnames[t >> 1],
			 t & 1 ? "used" : "fresh");
		write_seed(out, name, &sd);
	}
	/* Typical damage, before the members join and again while they
	 * are joined. */
	for (unsigned g = 0; g < NGROUPS; g++) {
		const struct {
			const char *name;
			size_t off;
			uint64_t v;
		} patches[] = {
			/* a dead member, holding member 1's lane or lease */
			{ "dead", MEMBER(0, owner), dead },
			/* a dead maintenance holder */
			{ "maint", HDR(maint), (uint64_t)1 << 32 | 0x3ffffffe },
			/* leases and lanes expire at once */
			{ "term", HDR(lease_ns), 1 },
			/* every redelivery is poison */
			{ "poison", HDR(max_deliveries), 1 },
			/* a claim won and never recorded */
			{ "claim", HDR(claim_seq), 3 },
			/* a lane owned by nobody alive */
			{ "lane", LANE(0, ctl),
			  gctl(SHMBUS_LANE_OWNED, 9, 1, 7) },
			/* the floor ahead of the claim word */
			{ "floor", HDR(floor_pos), 4096 },
		};

		for (size_t i = 0; i < sizeof(patches) / sizeof(patches[0]);
		     i++) {
			sd.n = 0;
			seed_put8(&sd, g | F_USED);
			put_patch64(&sd, patches[i].off, patches[i].v);
			put_program(&sd);
			put_patch64(&sd, patches[i].off, patches[i].v);
			put_program(&sd);
			snprintf(name, sizeof(name), "%s-%s", tnames[g],
				 patches[i].name);
			write_seed(out, name, &sd);
		}
	}
	fuzz_group_cleanup();
	exit(0);
}
#endif
