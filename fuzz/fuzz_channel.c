/* SPDX-License-Identifier: MIT */
/*
 * fuzz_channel.c - a channel's two files as a reader sees them.
 *
 * The input is an image of a channel and a program run on it:
 *
 *   byte 0   bits 0-1  how the image is mapped: 0 direct (read-write),
 *                      1 through shmbusd to publish, 2 to subscribe (the
 *                      data file read-only), 3 inspection (read-only)
 *            bit 2     1: raw image, 0: template
 *            bits 3-5  which template (built at start-up, see below)
 *   raw:     u32 n, n bytes of control file, u32 m, m bytes of data file
 *   then     the program: ops until the input ends (at most MAX_OPS)
 *
 * An op is one byte, bits 0-3 the op and bits 4-7 its argument, whose
 * bit 0 picks one of two subscribers (or publishers):
 *
 *    0 PATCH      u8 file (bit 0: data, else control), u16 offset, u8 n,
 *                 n bytes written there (before the first other op: into
 *                 the image; after it, into the live mapping)
 *    1 SUB_OPEN   arg bit 1: start oldest; bits 2-3: wait (3 is invalid)
 *    2 POLL       u8 max          13 POLL_STOP   the same, the handler
 *                                                stops at the first
 *    3 READ       u8: bits 0-2 the buffer's size (caps[]), bit 3 no info
 *    4 WAIT       timeout 0
 *    5 PUB_OPEN   timeout 0
 *    6 PUBLISH    u16 length; for PUBLISHV and BATCH, arg bits 2-3 are
 *    7 CLAIM      the number of pieces less one; CLAIM commits, or
 *    8 PUBLISHV   aborts if arg bit 2 is set
 *    9 BATCH
 *   10 INSPECT    info and every slot   14 STATS   the subscriber's
 *   11 SUB_CLOSE  12 PUB_CLOSE          15 nothing
 *
 * A template is a valid 4 KiB channel made by the library itself (single
 * or multi producer, block or overwrite, fresh or with wrapped records,
 * a lapped subscriber and a filled mailbox), so that the fuzzer starts
 * past the magic and geometry checks; its PATCH ops then overwrite any
 * bytes of the header, slots, records, index or mailbox.  A PATCH after
 * the first other op writes into the live mapping: damage done while
 * handles are open.
 *
 * Both files live in memfds and are mapped with sb_channel_map_fds(), the
 * path shmbusd's clients take: nothing touches the file system per input.
 *
 * Every call must return an error the manual lists or well-formed data: a
 * message lies inside the ring (or in a private buffer, which ASan
 * checks), its length within max_msg, a count within what was asked for.
 * Every loop of the library must end: shmbus_wait() gets a timeout of 0
 * and publishers never wait (timeout_ns 0).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../lib/channel.h"
#include "fuzz.h"

#define CAP		4096u
#define NTEMPLATES	8
#define MAX_OPS		64
/* Publishing calls per input: a multi-producer claim behind a corrupt
 * hand-off word waits 20 ms (HANDOFF_CORRUPT_NS in lib/publish.c) before
 * it takes the hand-off itself, and a run of them would make one input
 * take a second. */
#define MAX_PUBS	6
#define MAX_IMAGE	(1u << 20)	/* a raw file's bytes, at most */

enum op {
	OP_PATCH, OP_SUB_OPEN, OP_POLL, OP_READ, OP_WAIT, OP_PUB_OPEN,
	OP_PUBLISH, OP_CLAIM, OP_PUBLISHV, OP_BATCH, OP_INSPECT,
	OP_SUB_CLOSE, OP_PUB_CLOSE, OP_POLL_STOP, OP_STATS, OP_NOP,
};

struct image {
	uint8_t *ctl, *data;
	size_t ctl_len, data_len;
};

static struct image templates[NTEMPLATES];
static const char *tdir;
static int ctl_fd = -1, data_fd = -1;

/* ------------------------------------------------------------- templates */

static void slurp(const char *path, uint8_t **buf, size_t *len)
{
	FILE *f = fopen(path, "rb");
	long n;

	FUZZ_CHECK(f != NULL);
	FUZZ_CHECK(fseek(f, 0, SEEK_END) == 0);
	n = ftell(f);
	FUZZ_CHECK(n > 0 && fseek(f, 0, SEEK_SET) == 0);
	*buf = malloc((size_t)n);
	FUZZ_CHECK(*buf != NULL);
	FUZZ_CHECK(fread(*buf, 1, (size_t)n, f) == (size_t)n);
	fclose(f);
	*len = (size_t)n;
}

static void fill(uint8_t *p, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed * 131 + i);
}

/* Messages of lengths cycling through small and large ones, `count` of
 * them; a subscriber (if any) reads after every `every`. */
static void traffic(shmbus_pub *pub, shmbus_sub *sub, unsigned count,
		    unsigned every, uint32_t max_msg)
{
	static const uint32_t lens[] = { 0, 1, 8, 24, 40, 41, 100, 333, 700 };
	uint8_t buf[1024], out[1024];

	for (unsigned i = 0; i < count; i++) {
		uint32_t len = lens[i % (sizeof(lens) / sizeof(lens[0]))];

		if (len > max_msg)
			len = max_msg;
		fill(buf, len, i);
		shmbus_publish(pub, buf, len);
		if (sub && every && i % every == every - 1)
			while (shmbus_read(sub, out, sizeof(out), NULL) >= 0)
				;
	}
}

/* Template t: bit 0 overwrite, bit 1 multi producer, bit 2 used. */
static void make_template(unsigned t)
{
	struct shmbus_channel_attr a;
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	char name[16], path[512];
	uint8_t out[1024];
	shmbus_channel *ch;
	shmbus_pub *pub, *pub2 = NULL;
	shmbus_sub *sub = NULL, *lapped = NULL;
	uint64_t id;

	shmbus_channel_attr_init(&a);
	a.capacity = CAP;
	a.max_msg = t & 4 && !(t & 2) ? 24 : 1024;
	a.policy = t & 1 ? SHMBUS_OVERWRITE : SHMBUS_BLOCK;
	a.producers = t & 2 ? SHMBUS_MULTI_PRODUCER : SHMBUS_SINGLE_PRODUCER;
	snprintf(name, sizeof(name), "t%u", t);
	ch = shmbus_channel_create(tdir, name, &a, SHMBUS_CREATE_REPLACE);
	FUZZ_CHECK(ch != NULL);
	pub = shmbus_pub_open(ch, NULL);
	FUZZ_CHECK(pub != NULL);
	if (t & 4) {
		void *buf;
		struct iovec batch[3] = {
			{ (void *)"one", 3 }, { (void *)"two", 3 },
			{ (void *)"three", 5 },
		};

		sub = shmbus_sub_open(ch, &sa);
		lapped = shmbus_sub_open(ch, &sa);
		FUZZ_CHECK(sub && lapped);
		if (a.producers == SHMBUS_MULTI_PRODUCER)
			pub2 = shmbus_pub_open(ch, NULL);
		traffic(pub, sub, 40, 3, a.max_msg);
		if (pub2)
			traffic(pub2, sub, 20, 2, a.max_msg);
		shmbus_publish_batch(pub, batch, 3);
		if (shmbus_claim(pub, 16, &buf) == 0)
			shmbus_abort(pub);
		traffic(pub, NULL, 3, 0, a.max_msg);
		/* The lapped subscriber stays open, unread; the other reads
		 * a few of what is left. */
		for (int i = 0; i < 4; i++)
			shmbus_read(sub, out, sizeof(out), NULL);
		shmbus_sub_close(sub);
	}
	shmbus_pub_close(pub);
	shmbus_pub_close(pub2);
	(void)lapped;	/* left open: an ACTIVE slot in the image */
	id = ch->data_id;
	snprintf(path, sizeof(path), "%s/%s", tdir, name);
	slurp(path, &templates[t].ctl, &templates[t].ctl_len);
	snprintf(path, sizeof(path), "%s/" SHMBUS_DATA_NAME_FMT, tdir, name,
		 (unsigned long long)id);
	slurp(path, &templates[t].data, &templates[t].data_len);
	if (lapped)
		shmbus_sub_close(lapped);
	shmbus_channel_close(ch);
	shmbus_channel_unlink(tdir, name);
}

void fuzz_channel_cleanup(void)
{
	fuzz_rmdir(tdir);
	free((void *)tdir);
	tdir = NULL;
}

static void setup(void)
{
	tdir = fuzz_mkdir("channel");
	for (unsigned t = 0; t < NTEMPLATES; t++)
		make_template(t);
	fuzz_channel_cleanup();
	ctl_fd = memfd_create("shmbus-fuzz-ctl", MFD_CLOEXEC);
	data_fd = memfd_create("shmbus-fuzz-data", MFD_CLOEXEC);
	FUZZ_CHECK(ctl_fd >= 0 && data_fd >= 0);
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

/* What a publishing call may return besides success.  EROFS: damage
 * to the fence word (in the data file) refuses producers,
 * as on a standby. */
static const int pub_errs[] = { EMSGSIZE, EAGAIN, ETIMEDOUT, EBUSY, EBADMSG,
				EINVAL, EROFS };

struct run {
	shmbus_channel *ch;
	shmbus_sub *sub[2];
	shmbus_pub *pub[2];
	unsigned handled;
	unsigned pubs;		/* publishing calls made */
	uint64_t sum;		/* every byte delivered, so that ASan sees
				 * every read of a message */
};

/* A message lies in the ring, whole, or in a buffer outside the
 * mappings (a subscriber's copy, which ASan bounds). */
static void check_msg(const struct run *r, const struct shmbus_msg *m,
		      uint64_t *sum)
{
	const struct shmbus_channel *ch = r->ch;
	const uint8_t *d = m->data, *lo = ch->data;

	FUZZ_CHECK(m->len <= ch->max_msg);
	FUZZ_CHECK(m->pos % SHMBUS_REC_ALIGN == 0);
	if (d >= lo && d < lo + ch->data_len)
		FUZZ_CHECK(d >= lo + SHMBUS_REC_HDR &&
			   d + m->len <= lo + ch->cap);
	else
		FUZZ_CHECK(!((const uint8_t *)ch->hdr <= d &&
			     d < (const uint8_t *)ch->hdr + ch->map_len));
	for (uint32_t i = 0; i < m->len; i++)
		*sum += d[i];
}

static int on_msg(const struct shmbus_msg *m, void *arg)
{
	struct run *r = arg;

	check_msg(r, m, &r->sum);
	r->handled++;
	return 0;
}

static int on_msg_stop(const struct shmbus_msg *m, void *arg)
{
	on_msg(m, arg);
	return 1;
}

static void check_info(struct run *r)
{
	struct shmbus_channel_info in;
	struct shmbus_sub_info si;
	struct shmbus_prod_info pi;

	FUZZ_CHECK(shmbus_channel_info(r->ch, &in) == 0);
	FUZZ_CHECK(in.capacity == r->ch->cap && in.max_msg == r->ch->max_msg);
	FUZZ_CHECK(in.subscribers <= SHMBUS_MAX_SLOTS &&
		   in.producers_active <= SHMBUS_MAX_PRODUCERS);
	for (unsigned i = 0; i <= SHMBUS_MAX_SLOTS; i++) {
		int rc = shmbus_channel_subscriber(r->ch, i, &si);

		FUZZ_CHECK(i == SHMBUS_MAX_SLOTS ? rc == -EINVAL
						 : rc == 0 || rc == -ENOENT);
		if (rc == 0)
			FUZZ_CHECK(strnlen(si.comm, 16) < 16 && si.pid >= 0 &&
				   si.wait <= SHMBUS_WAIT_SLEEP);
	}
	for (unsigned i = 0; i <= SHMBUS_MAX_PRODUCERS; i++) {
		int rc = shmbus_channel_producer(r->ch, i, &pi);

		FUZZ_CHECK(i == SHMBUS_MAX_PRODUCERS ? rc == -EINVAL
						     : rc == 0 || rc == -ENOENT);
		if (rc == 0)
			FUZZ_CHECK(strnlen(pi.comm, 16) < 16 && pi.pid >= 0);
	}
}

/* -------------------------------------------------------------- the run */

static void load(int fd, const uint8_t *p, size_t n)
{
	FUZZ_CHECK(ftruncate(fd, 0) == 0 && ftruncate(fd, (off_t)n) == 0);
	FUZZ_CHECK(n == 0 || pwrite(fd, p, n, 0) == (ssize_t)n);
}

/* Writes into a file (and so into its mapping, if any): never past its
 * end, so that a mapping never loses its pages. */
static void patch(struct fuzz_in *in)
{
	int fd = fuzz_u8(in) & 1 ? data_fd : ctl_fd;
	off_t end = lseek(fd, 0, SEEK_END);
	uint64_t off = fuzz_u16(in);
	size_t len = fuzz_u8(in);

	if (len > in->n)
		len = in->n;
	if (end > 0) {
		off %= (uint64_t)end;
		if (off + len > (uint64_t)end)
			len = (size_t)((uint64_t)end - off);
		FUZZ_CHECK(len == 0 ||
			   pwrite(fd, in->p, len, (off_t)off) == (ssize_t)len);
	}
	in->p += len;
	in->n -= len;
}

static const enum sb_map_mode modes[] = { SB_MAP_RW, SB_MAP_PUB, SB_MAP_SUB,
					  SB_MAP_RO };

static bool map(struct run *r, enum sb_map_mode mode)
{
	int err = 0;

	r->ch = sb_channel_map_fds(ctl_fd, data_fd, mode, &err);
	if (!r->ch) {
		FUZZ_CHECK(one_of(err, ERRS(EPROTO, EPROTONOSUPPORT,
					    EBADMSG)));
		return false;
	}
	return true;
}

static void op_sub_open(struct run *r, unsigned arg)
{
	struct shmbus_sub_attr sa = {
		.start = arg & 2 ? SHMBUS_START_OLDEST : SHMBUS_START_NEWEST,
		.wait = (enum shmbus_wait)((arg >> 2) & 3),
		.spin_ns = 1,
	};
	shmbus_sub **s = &r->sub[arg & 1];

	if (*s)
		return;
	*s = shmbus_sub_open(r->ch, &sa);
	/* EAGAIN: the fence word says the ring is being cut back for a
	 * rejoin (F7), as a damaged one may. */
	if (!*s)
		FUZZ_CHECK(errno == ENOSPC || errno == EPERM ||
			   errno == EINVAL ||
			   (errno == EAGAIN &&
			    SHMBUS_FENCE_STATE(r->ch->daemon->fence) ==
			    SHMBUS_FENCE_CUT));
	else
		FUZZ_CHECK(sa.wait <= SHMBUS_WAIT_SLEEP && !r->ch->rdonly &&
			   !r->ch->no_sub);
}

static void op_read(struct run *r, shmbus_sub *s, unsigned sel)
{
	static const size_t caps[] = { 0, 1, 8, 39, 40, 64, 1024, 4096 };
	size_t cap = caps[sel & 7];
	uint8_t *buf = malloc(cap ? cap : 1);
	struct shmbus_msg m;
	ssize_t n;

	FUZZ_CHECK(buf != NULL);
	n = shmbus_read(s, buf, cap, sel & 8 ? NULL : &m);
	if (n >= 0) {
		FUZZ_CHECK((size_t)n <= cap && (uint64_t)n <= r->ch->max_msg);
		if (!(sel & 8)) {
			FUZZ_CHECK(m.len == (uint64_t)n && m.data == buf);
			check_msg(r, &m, &r->sum);
		}
	} else {
		FUZZ_CHECK(one_of(n, ERRS(EAGAIN, EMSGSIZE, EBADMSG)));
	}
	free(buf);
}

static void op_publish(struct run *r, shmbus_pub *p, uint32_t len,
		       unsigned arg)
{
	static uint8_t buf[4096];
	struct iovec iov[8];
	void *dst;
	int rc;

	len %= r->ch->max_msg + 64u;
	if (len > sizeof(buf))
		len = sizeof(buf);
	fill(buf, len, arg);
	switch (arg & 3) {
	case 0:
		rc = shmbus_publish(p, buf, len);
		break;
	case 1: {
		int n = (int)(arg >> 2) % 8 + 1;

		for (int i = 0; i < n; i++) {
			iov[i].iov_base = buf + i * (len / (unsigned)n);
			iov[i].iov_len = len / (unsigned)n;
		}
		rc = shmbus_publishv(p, iov, n);
		break;
	}
	case 2: {
		size_t n = (arg >> 2) % 8 + 1;

		for (size_t i = 0; i < n; i++) {
			iov[i].iov_base = buf;
			iov[i].iov_len = (len >> i) % (r->ch->max_msg + 8u);
		}
		rc = shmbus_publish_batch(p, iov, n);
		FUZZ_CHECK(rc < 0 || rc == (int)n);
		if (rc > 0)
			rc = 0;
		break;
	}
	default:
		rc = shmbus_claim(p, len, &dst);
		if (rc == 0) {
			uint8_t *d = dst;

			FUZZ_CHECK(d >= r->ch->data + SHMBUS_REC_HDR &&
				   d + len <= r->ch->data + r->ch->cap);
			memcpy(d, buf, len);
			/* a second claim while one is outstanding */
			FUZZ_CHECK(shmbus_claim(p, 1, &dst) == -EBUSY);
			rc = arg & 4 ? shmbus_abort(p) : shmbus_commit(p);
		}
	}
	FUZZ_CHECK(rc == 0 || one_of(rc, pub_errs, sizeof(pub_errs) / sizeof(pub_errs[0])));
}

/*
 * A single-producer channel whose sp_owner says that a live process (a
 * shmbusd) is repairing it: shmbus_pub_open() waits for that repair for
 * up to a second, by design, before it gives up with EBUSY.  Inputs that
 * reach it would spend the run waiting, so the harness opens no publisher
 * then (the takeover from a dead repairer is fuzzed).
 */
static bool repairing(const struct shmbus_channel *ch)
{
	uint64_t o = load_relaxed64(&ch->pl->sp_owner);

	return !ch_multi(ch) && o & SHMBUS_SP_REPAIRING &&
	       sb_pid_alive(role_pid(o));
}

/*
 * A multi-producer channel whose hand-off word stands below head, with a
 * slot of a live process announcing a claim from there to head (written
 * by a PATCH: its owner this process, or another that lives): a claim
 * behind it waits for that producer, however long, by design
 * (docs/design.md, the hand-off invariant).  The harness publishes
 * nothing then, as it opens no publisher behind a live repairer.
 */
static bool handoff_held(const struct shmbus_channel *ch)
{
	uint64_t hv = load_relaxed64(&ch->pl->handoff);
	uint64_t head = load_relaxed64(&ch->pl->head);

	if (!ch_multi(ch) || hv >= head)
		return false;
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
		uint64_t o = load_relaxed64(&ch->prods[i].owner);
		uint64_t c = load_relaxed64(&ch->prods[i].claim_pos);

		if (owner_state(o) == SHMBUS_SLOT_ACTIVE && c >= hv &&
		    c < head && sb_pid_alive(owner_pid(o)))
			return true;
	}
	return false;
}

static void run_program(struct run *r, struct fuzz_in *in, unsigned how)
{
	bool mapped = false;

	for (int ops = 0; ops < MAX_OPS && in->n; ops++) {
		uint8_t b = fuzz_u8(in);
		unsigned op = b & 15, arg = b >> 4;
		shmbus_sub *s;
		shmbus_pub *p;

		if (op == OP_PATCH) {
			patch(in);
			continue;
		}
		if (!mapped) {
			mapped = true;
			if (!map(r, modes[how & 3]))
				return;
		}
		s = r->sub[arg & 1];
		p = r->pub[arg & 1];
		switch ((enum op)op) {
		case OP_PATCH:
		case OP_NOP:
			break;
		case OP_SUB_OPEN:
			op_sub_open(r, arg);
			break;
		case OP_POLL:
		case OP_POLL_STOP: {
			unsigned max = fuzz_u8(in), before = r->handled;
			int n;

			if (!s)
				break;
			n = shmbus_poll(s, op == OP_POLL ? on_msg : on_msg_stop,
					r, max);
			FUZZ_CHECK(n == -EBADMSG ||
				   (n >= 0 && (unsigned)n == r->handled - before));
			FUZZ_CHECK(n <= 0 || !max || (unsigned)n <= max);
			FUZZ_CHECK(op == OP_POLL || n <= 1);
			/* max 0 reads at most one lap */
			FUZZ_CHECK(n <= (int)(r->ch->cap / SHMBUS_REC_HDR));
			break;
		}
		case OP_READ: {
			unsigned sel = fuzz_u8(in);

			if (s)
				op_read(r, s, sel);
			break;
		}
		case OP_WAIT:
			if (s) {
				int rc = shmbus_wait(s, 0);

				FUZZ_CHECK(rc == 0 || rc == -ETIMEDOUT ||
					   rc == -EINTR);
			}
			break;
		case OP_PUB_OPEN:
			if (!p && !repairing(r->ch)) {
				struct shmbus_pub_attr pa = { .timeout_ns = 0 };

				p = r->pub[arg & 1] = shmbus_pub_open(r->ch,
								      &pa);
				if (!p)
					FUZZ_CHECK(errno == EBUSY ||
						   errno == ENOSPC ||
						   errno == EPERM ||
						   errno == EBADMSG ||
						   errno == EROFS);
				else
					FUZZ_CHECK(!r->ch->rdonly &&
						   !r->ch->no_pub);
			}
			break;
		case OP_PUBLISH:
		case OP_CLAIM:
		case OP_PUBLISHV:
		case OP_BATCH: {
			uint32_t len = fuzz_u16(in);

			if (p && r->pubs++ < MAX_PUBS && !handoff_held(r->ch))
				op_publish(r, p, len,
					   op == OP_PUBLISH ? arg & ~3u :
					   op == OP_PUBLISHV ? (arg & ~3u) | 1 :
					   op == OP_BATCH ? (arg & ~3u) | 2 :
					   arg | 3);
			break;
		}
		case OP_INSPECT:
			check_info(r);
			break;
		case OP_SUB_CLOSE:
			shmbus_sub_close(s);
			r->sub[arg & 1] = NULL;
			break;
		case OP_PUB_CLOSE:
			shmbus_pub_close(p);
			r->pub[arg & 1] = NULL;
			break;
		case OP_STATS:
			if (s) {
				struct shmbus_sub_stats st;

				FUZZ_CHECK(shmbus_sub_stats(s, &st) == 0);
			}
			break;
		}
	}
	if (!mapped && map(r, modes[how & 3]))
		check_info(r);
}

int fuzz_channel_one(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	struct run r = { 0 };
	unsigned how;

	if (ctl_fd < 0)
		setup();
	how = fuzz_u8(&in);
	if (how & 4) {
		size_t n = fuzz_u32(&in) % MAX_IMAGE;

		n = n < in.n ? n : in.n;
		load(ctl_fd, in.p, n);
		in.p += n;
		in.n -= n;
		n = fuzz_u32(&in) % MAX_IMAGE;
		n = n < in.n ? n : in.n;
		load(data_fd, in.p, n);
		in.p += n;
		in.n -= n;
	} else {
		const struct image *t = &templates[(how >> 3) & 7];

		load(ctl_fd, t->ctl, t->ctl_len);
		load(data_fd, t->data, t->data_len);
	}
	run_program(&r, &in, how);
	for (int i = 0; i < 2; i++) {
		shmbus_sub_close(r.sub[i]);
		shmbus_pub_close(r.pub[i]);
	}
	shmbus_channel_close(r.ch);
	return 0;
}

#ifndef SHMBUS_FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_channel_one(data, size);
}

/* ---------------------------------------------------------- seed corpus */


static void put_patch(struct seed *sd, unsigned file, unsigned off,
		      const void *p, unsigned n)
{
	seed_put8(sd, OP_PATCH);
	seed_put8(sd, file);
	seed_put16(sd, off);
	seed_put8(sd, n);
	seed_put(sd, p, n);
}

/* Every op once or twice: subscribe, publish each way, read each way. */
static void put_program(struct seed *sd)
{
	static const uint8_t prog[] = {
		OP_SUB_OPEN | 2 << 4, OP_POLL, 0, OP_READ, 7,
		OP_PUB_OPEN, OP_PUBLISH, 10, 0, OP_PUBLISH, 100, 0,
		OP_CLAIM, 30, 0, OP_CLAIM | 4 << 4, 8, 0,
		OP_PUBLISHV | 8 << 4, 64, 0, OP_BATCH | 12 << 4, 200, 0,
		OP_SUB_OPEN | 1 << 4, OP_POLL_STOP | 1 << 4, 0,
		OP_POLL, 2, OP_READ, 3, OP_READ, 4 | 8, OP_WAIT,
		OP_PUBLISH, 24, 0, OP_READ | 1 << 4, 5, OP_POLL | 1 << 4, 0,
		OP_INSPECT, OP_STATS, OP_SUB_CLOSE, OP_PUB_CLOSE,
		OP_INSPECT,
	};

	seed_put(sd, prog, sizeof(prog));
}

static void write_seed(const char *dir, const char *name,
		       const struct seed *sd)
{
	fuzz_write_seed(dir, name, sd->b, sd->n);
}

/* SHMBUS_FUZZ_SEEDS=dir: writes the seed corpus there and exits (make
 * fuzz-seeds). */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("SHMBUS_FUZZ_SEEDS");
	static struct seed sd;
	char name[64];
	/* head (in the producers' line) made unaligned; the mailbox's mark
	 * ahead of head; a subscriber slot of a dead process; sp_owner
	 * under repair by a dead process; segment index entries past head */
	static const uint8_t unaligned[] = { 0x03 };
	static const uint8_t mark[] = { 0xff, 0xff, 0, 0, 0, 0, 0, 0 };
	static const uint8_t dead[] = { 2, 0, 0, 0, 0xfe, 0xff, 0x3f, 0 };
	static const uint8_t sp_dead[] = { 0xfe, 0xff, 0xff, 0xbf };
	static const uint8_t seg[] = { 0, 0x10, 0, 0, 0, 0, 0, 0 };

	(void)argc;
	(void)argv;
	if (!dir)
		return 0;
	setup();
	for (unsigned t = 0; t < NTEMPLATES; t++)
		for (unsigned mode = 0; mode < 4; mode++) {
			if (mode && t != 3 && t != 5 && t != 6)
				continue;
			sd.n = 0;
			seed_put8(&sd, t << 3 | mode);
			put_program(&sd);
			snprintf(name, sizeof(name), "t%u-mode%u", t, mode);
			write_seed(dir, name, &sd);
		}
	for (unsigned t = 4; t < NTEMPLATES; t++) {
		const struct {
			const char *name;
			unsigned file, off;
			const uint8_t *p;
			unsigned n;
		} patches[] = {
			{ "head", 1, CAP + SHMBUS_PLINE_OFFSET, unaligned,
			  1 },
			{ "mark", 1, CAP + SHMBUS_MBOX_OFFSET, mark, 8 },
			{ "slot", 0, 4096 + 16 * 64 + 128 + 8, dead, 8 },
			{ "sp", 1, CAP + SHMBUS_PLINE_OFFSET + 32, sp_dead,
			  4 },
			{ "seg", 1, CAP + 16, seg, 8 },
		};

		for (size_t i = 0; i < sizeof(patches) / sizeof(patches[0]);
		     i++) {
			sd.n = 0;
			seed_put8(&sd, t << 3);
			put_patch(&sd, patches[i].file, patches[i].off,
				  patches[i].p, patches[i].n);
			put_program(&sd);
			/* and the same damage done to the live mapping */
			put_patch(&sd, patches[i].file, patches[i].off,
				  patches[i].p, patches[i].n);
			put_program(&sd);
			snprintf(name, sizeof(name), "t%u-%s", t,
				 patches[i].name);
			write_seed(dir, name, &sd);
		}
	}
	for (unsigned t = 4; t < NTEMPLATES; t += 3) {
		sd.n = 0;
		seed_put8(&sd, t << 3 | 4);
		seed_put32(&sd, (uint32_t)templates[t].ctl_len);
		seed_put(&sd, templates[t].ctl, templates[t].ctl_len);
		seed_put32(&sd, (uint32_t)templates[t].data_len);
		seed_put(&sd, templates[t].data, templates[t].data_len);
		put_program(&sd);
		snprintf(name, sizeof(name), "raw-t%u", t);
		write_seed(dir, name, &sd);
	}
	exit(0);
}
#endif
