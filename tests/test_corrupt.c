/* SPDX-License-Identifier: MIT */
/*
 * test_corrupt.c - random bytes written over the header, the cursor slots
 * and the records of a live channel.  Every call must return an error or
 * valid data; nothing may crash, hang or read out of bounds (the suite
 * also runs under AddressSanitizer).  Each scenario runs in a child
 * process, so a crash is a failure with the signal's number.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lib/contract.h"
#include "../lib/sub.h"
#include "helpers.h"
#include "shmbus/layout.h"

#define CAP (1u << 14)
#define MAXMSG 512u

enum region { HEADER, SLOTS, RECORDS, INDEX, MAILBOX, PRODLINE, ANYWHERE };

struct scenario {
	const char *dir;
	enum region where;
	enum shmbus_policy policy;
	enum shmbus_producers producers;
	unsigned seed;
};

/* -EROFS: the damage closed the fence (daemon->fence): producers are
 * refused, as on a standby, which loses nothing. */
static int ok_publish(int rc)
{
	return rc == 0 || rc == -EAGAIN || rc == -ETIMEDOUT || rc == -EBADMSG ||
	       rc == -EROFS;
}

struct seen {
	uint64_t delivered, intact;
};

static int on_msg(const struct shmbus_msg *m, void *arg)
{
	struct seen *s = arg;
	uint64_t seq;
	uint32_t id;

	if (m->len > MAXMSG)
		_exit(60);
	/* Touch every byte: ASan flags any that lies outside the ring. */
	volatile uint8_t x = 0;
	for (uint32_t i = 0; i < m->len; i++)
		x ^= ((const uint8_t *)m->data)[i];
	(void)x;
	s->delivered++;
	s->intact += th_msg_check(m->data, m->len, &id, &seq) == 0;
	return 0;
}

static int run(void *arg)
{
	const struct scenario *sc = arg;
	shmbus_channel *ch = shmbus_channel_open(sc->dir, "ch");
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, NULL) : NULL;
	struct seen seen = { 0 };
	uint8_t msg[MAXMSG], got[MAXMSG];
	size_t len, dlen, lo, hi;
	uint8_t *ctl, *data, *raw;
	uint64_t seq = 0;

	if (!pub || !sub)
		return 2;
	ctl = th_map_channel(sc->dir, &len);
	data = th_map_data(sc->dir, &dlen);
	if (!ctl || !data)
		return 2;
	srand(sc->seed);
	for (int round = 0; round < 300; round++) {
		int n = 1 + rand() % 32;
		size_t off;

		raw = ctl;
		switch (sc->where) {
		case HEADER:	lo = 0; hi = SHMBUS_HDR_SIZE; break;
		case SLOTS:	lo = SHMBUS_HDR_SIZE; hi = len; break;
		case RECORDS:	raw = data; lo = 0; hi = CAP; break;
		case INDEX:	raw = data; lo = CAP; hi = dlen; break;
		case MAILBOX:
			raw = data;
			lo = CAP + SHMBUS_MBOX_OFFSET;
			hi = lo + 2 * SHMBUS_CACHELINE;
			break;
		case PRODLINE:	/* head, handoff, seq, bytes, the role */
			raw = data;
			lo = CAP + SHMBUS_PLINE_OFFSET;
			hi = lo + 2 * SHMBUS_CACHELINE;
			break;
		default:
			raw = rand() % 2 ? ctl : data;
			lo = 0;
			hi = raw == ctl ? len : dlen;
		}
		off = lo + (size_t)rand() % (hi - lo - 64);

		/* Traffic, then damage, then every kind of call.  The mailbox
		 * is read by a subscriber that is caught up, and holds small
		 * messages: one of those at a time. */
		int msgs = sc->where == MAILBOX ? 1 : 8;
		size_t most = sc->where == MAILBOX ? SHMBUS_MBOX_INLINE : MAXMSG;

		for (int i = 0; i < msgs; i++) {
			size_t l = TH_MSG_MIN + (size_t)rand() % (most - TH_MSG_MIN);

			th_msg_fill(msg, l, 1, seq++);
			if (!ok_publish(shmbus_publish(pub, msg, l)))
				return 10;
		}
		for (int i = 0; i < n; i++)
			raw[off + (size_t)i] = (uint8_t)rand();
		for (int i = 0; i < 4; i++) {
			int rc = shmbus_poll(sub, on_msg, &seen, 16);
			ssize_t r;

			if (rc < 0 && rc != -EBADMSG)
				return 11;
			r = shmbus_read(sub, got, sizeof(got), NULL);
			if (r < 0 && r != -EAGAIN && r != -EBADMSG && r != -EMSGSIZE)
				return 12;
			if (r > (ssize_t)MAXMSG)
				return 13;
		}
		shmbus_wait(sub, 0);
		/* A fresh open validates the header again. */
		shmbus_channel *c2 = shmbus_channel_open(sc->dir, "ch");

		if (c2) {
			struct shmbus_channel_info in;

			if (shmbus_channel_info(c2, &in) || in.capacity != CAP)
				return 14;
			shmbus_channel_close(c2);
		} else if (errno != EBADMSG && errno != EPROTO &&
			   errno != EPROTONOSUPPORT) {
			return 15;
		}
	}
	/* Damage confined to the slots never reaches a message. */
	if (sc->where == SLOTS && seen.intact != seen.delivered)
		return 16;
	printf("%u: delivered %lu, intact %lu\n", sc->where,
	       (unsigned long)seen.delivered, (unsigned long)seen.intact);
	return 0;
}

static void scenario(enum region where, enum shmbus_policy pol,
		     enum shmbus_producers prod)
{
	for (unsigned seed = 1; seed <= 4; seed++) {
		struct scenario sc = { .where = where, .policy = pol,
				       .producers = prod, .seed = seed };
		shmbus_channel *ch;
		int rc;

		sc.dir = th_mkdir();
		ch = th_create(sc.dir, CAP, MAXMSG, pol, prod);
		rc = th_wait(th_spawn(run, &sc));
		cr_expect_eq(rc, 0, "region %d seed %u: exit %d%s", where, seed,
			     rc, rc > 128 ? " (killed by a signal)" : "");
		shmbus_channel_close(ch);
		th_rmdir(sc.dir);
	}
}

Test(corrupt, header_block)
{
	scenario(HEADER, SHMBUS_BLOCK, SHMBUS_SINGLE_PRODUCER);
}

Test(corrupt, slots_block_mp)
{
	scenario(SLOTS, SHMBUS_BLOCK, SHMBUS_MULTI_PRODUCER);
}

Test(corrupt, records_block)
{
	scenario(RECORDS, SHMBUS_BLOCK, SHMBUS_SINGLE_PRODUCER);
}

Test(corrupt, records_overwrite)
{
	scenario(RECORDS, SHMBUS_OVERWRITE, SHMBUS_SINGLE_PRODUCER);
}

Test(corrupt, index_overwrite)
{
	scenario(INDEX, SHMBUS_OVERWRITE, SHMBUS_SINGLE_PRODUCER);
}

Test(corrupt, mailbox_block)
{
	scenario(MAILBOX, SHMBUS_BLOCK, SHMBUS_SINGLE_PRODUCER);
}

Test(corrupt, mailbox_overwrite)
{
	scenario(MAILBOX, SHMBUS_OVERWRITE, SHMBUS_SINGLE_PRODUCER);
}

Test(corrupt, producers_line_block_mp)
{
	scenario(PRODLINE, SHMBUS_BLOCK, SHMBUS_MULTI_PRODUCER);
}

Test(corrupt, producers_line_overwrite)
{
	scenario(PRODLINE, SHMBUS_OVERWRITE, SHMBUS_SINGLE_PRODUCER);
}

Test(corrupt, anywhere_overwrite_mp)
{
	scenario(ANYWHERE, SHMBUS_OVERWRITE, SHMBUS_MULTI_PRODUCER);
}

Test(corrupt, anywhere_block_mp)
{
	scenario(ANYWHERE, SHMBUS_BLOCK, SHMBUS_MULTI_PRODUCER);
}

/* A process that maps the control file rewrites the header's max_msg and
 * flags over and over while channels are opened: every open either
 * refuses the header or keeps values it checked.  A handle that read
 * max_msg again after checking it could copy gigabytes past the ring. */
struct flipper {
	const char *dir;
	volatile int *stop;
};

static int flip_header(void *arg)
{
	const struct flipper *f = arg;
	size_t len;
	uint8_t *raw = th_map_channel(f->dir, &len);
	struct shmbus_hdr *h = (struct shmbus_hdr *)raw;
	uint32_t mm = h->max_msg, fl = h->flags;

	for (uint64_t i = 0; !*f->stop; i++) {
		__atomic_store_n(&h->max_msg, i & 1 ? 0xfffffff0u : mm,
				 __ATOMIC_RELAXED);
		__atomic_store_n(&h->flags, i & 2 ? 0xffffffffu : fl,
				 __ATOMIC_RELAXED);
	}
	return 0;
}

Test(corrupt, header_rewritten_while_channels_open)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, CAP, MAXMSG, SHMBUS_OVERWRITE,
				       SHMBUS_SINGLE_PRODUCER);
	volatile int *stop = mmap(NULL, sizeof(int), PROT_READ | PROT_WRITE,
				  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct flipper f = { dir, stop };
	unsigned opened = 0, refused = 0;
	pid_t pid;

	cr_assert(stop != MAP_FAILED);
	*stop = 0;
	pid = th_spawn(flip_header, &f);
	for (int i = 0; i < 10000; i++) {
		shmbus_channel *c = shmbus_channel_open(dir, "ch");
		struct shmbus_channel_info info;

		if (!c) {
			cr_assert_eq(errno, EBADMSG, "open: %s",
				     strerror(errno));
			refused++;
			continue;
		}
		cr_assert_eq(shmbus_channel_info(c, &info), 0);
		cr_assert_eq(info.max_msg, MAXMSG, "a handle kept max_msg %u, "
			     "never checked", info.max_msg);
		cr_assert_eq(info.policy, SHMBUS_OVERWRITE);
		opened++;
		shmbus_channel_close(c);
	}
	*stop = 1;
	cr_assert_eq(th_wait(pid), 0);
	cr_log_info("opened %u, refused %u", opened, refused);
	cr_assert_gt(refused, 0, "the rewrites were never seen");
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

/* A head near 2^64 written into the header: finding the oldest record
 * (the journal's and the replication agent's look at the ring) must not
 * walk 2^64 / segment index entries. */
static int oldest_of_a_huge_head(void *arg)
{
	const char *dir = arg;
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	size_t len, dlen;
	uint8_t *raw = th_map_channel(dir, &len), *data = th_map_data(dir, &dlen);
	struct shmbus_seg *segs;
	struct shmbus_prod_line *pl;

	if (!ch || !raw || !data)
		return 2;
	/* The index after the ring, every entry unusable (a publisher's
	 * mapping can write it), so that no entry ends the walk. */
	segs = (struct shmbus_seg *)(data + CAP);
	for (unsigned i = 0; i < SHMBUS_NSEG; i++)
		__atomic_store_n(&segs[i].pos, 1, __ATOMIC_RELAXED);
	pl = (struct shmbus_prod_line *)(data + CAP + SHMBUS_PLINE_OFFSET);
	__atomic_store_n(&pl->head, UINT64_MAX - 15, __ATOMIC_RELAXED);
	alarm(5);
	(void)sb_ring_oldest(ch);
	return 0;
}

Test(corrupt, a_head_near_2_64_is_not_walked_for_ever)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, CAP, MAXMSG, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	int rc = th_wait(th_spawn(oldest_of_a_huge_head, (void *)dir));

	cr_assert_eq(rc, 0, "exit %d%s", rc, rc > 128 ? " (the alarm: it "
		     "walked on)" : "");
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

struct unlinker {
	const char *dir;
	atomic_int stop;
};

static void *unlink_loop(void *arg)
{
	struct unlinker *u = arg;

	while (!atomic_load(&u->stop))
		shmbus_channel_unlink(u->dir, "x");
	return NULL;
}

static void *replace_loop(void *arg)
{
	struct unlinker *u = arg;
	struct shmbus_channel_attr a;

	shmbus_channel_attr_init(&a);
	a.capacity = 4096;
	while (!atomic_load(&u->stop)) {
		shmbus_channel *c = shmbus_channel_create(u->dir, "x", &a,
						  SHMBUS_CREATE_REPLACE);

		if (c)
			shmbus_channel_close(c);
	}
	return NULL;
}

/*
 * A channel deleted while it is being opened is gone, not corrupt: its
 * control file may still be found after its data file went.  A create
 * (not exclusive) racing a delete makes the channel, one way or another.
 */
Test(corrupt, a_channel_deleted_under_an_open_is_gone_not_corrupt)
{
	struct unlinker u = { .dir = th_mkdir() };
	struct shmbus_channel_attr a;
	unsigned failed = 0, corrupt = 0;
	pthread_t t;

	shmbus_channel_attr_init(&a);
	a.capacity = 4096;
	cr_assert_eq(pthread_create(&t, NULL, unlink_loop, &u), 0);
	for (int i = 0; i < 4000; i++) {
		shmbus_channel *c = shmbus_channel_create(u.dir, "x", &a, 0);

		if (c)
			shmbus_channel_close(c);
		else
			failed++;
		c = shmbus_channel_open(u.dir, "x");
		if (c)
			shmbus_channel_close(c);
		else
			corrupt += errno == EBADMSG;
	}
	atomic_store(&u.stop, 1);
	pthread_join(t, NULL);
	cr_assert_eq(corrupt, 0, "%u opens said a deleted channel is "
		     "corrupt", corrupt);
	cr_assert_eq(failed, 0, "%u creates failed", failed);
	/* Replaced, not deleted: a channel of the name exists throughout,
	 * and every open finds one. */
	atomic_store(&u.stop, 0);
	shmbus_channel_close(shmbus_channel_create(u.dir, "x", &a, 0));
	cr_assert_eq(pthread_create(&t, NULL, replace_loop, &u), 0);
	for (int i = 0; i < 4000; i++) {
		shmbus_channel *c = shmbus_channel_open(u.dir, "x");

		if (c)
			shmbus_channel_close(c);
		else
			failed++;
	}
	atomic_store(&u.stop, 1);
	pthread_join(t, NULL);
	cr_assert_eq(failed, 0, "%u opens of a channel being replaced "
		     "failed", failed);
	th_rmdir(u.dir);
}

/*
 * A subscriber's cursor written to a position that is no record boundary
 * (unaligned): producers hold at it until the subscriber reads again, but
 * it never becomes where another starts (a subscriber or a group at the
 * oldest, a new journal's kept cursor), which would hold that one's
 * damage for good.  Each of them starts at a record and reads it.
 */
static int take_one(const struct shmbus_group_msg *m, void *arg)
{
	(void)m;
	++*(int *)arg;
	return 0;
}

Test(corrupt, an_unaligned_cursor_is_nobodys_start)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, CAP, MAXMSG, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	struct shmbus_sub_attr sa;
	struct shmbus_group_attr ga;
	struct shmbus_sub_stats st;
	shmbus_pub *p = shmbus_pub_open(ch, NULL);
	shmbus_sub *hostile, *s, *kept;
	shmbus_group *g;
	uint64_t head, m[4] = { 0 };
	uint8_t buf[MAXMSG];
	bool taken;
	int err, got = 0;

	shmbus_sub_attr_init(&sa);
	sa.start = SHMBUS_START_OLDEST;
	hostile = shmbus_sub_open(ch, &sa);
	cr_assert(p && hostile);
	for (int i = 0; i < 100; i++)
		cr_assert_eq(shmbus_publish(p, m, sizeof(m)), 0);
	head = load_relaxed64(&ch->pl->head);
	store_relaxed64(&hostile->slot->pos, head - 37);

	s = shmbus_sub_open(ch, &sa);
	cr_assert(s);
	cr_assert_eq(shmbus_publish(p, m, sizeof(m)), 0);
	cr_assert_eq(shmbus_read(s, buf, sizeof(buf), NULL), sizeof(m),
		     "a subscriber at the oldest reads a message");
	shmbus_group_attr_init(&ga);
	ga.start = SHMBUS_START_OLDEST;
	g = shmbus_group_join(ch, "g", "m", &ga);
	cr_assert(g, "join: %s", strerror(errno));
	cr_assert_eq(shmbus_publish(p, m, sizeof(m)), 0);
	cr_assert_eq(shmbus_group_poll(g, take_one, &got, 8), 1,
		     "a group at the oldest takes a message");
	kept = sb_sub_kept(ch, SHMBUS_SLOT_JOURNAL, UINT64_MAX, &taken, &err);
	cr_assert(kept, "%s", strerror(-err));
	cr_assert_eq(shmbus_sub_stats(kept, &st), 0);
	cr_assert_eq(st.pos % SHMBUS_REC_ALIGN, 0, "a kept cursor at %lu",
		     (unsigned long)st.pos);
	shmbus_sub_close(kept);
	sb_sub_kept_release(ch, SHMBUS_SLOT_JOURNAL);
	shmbus_group_leave(g);
	shmbus_sub_close(s);
	shmbus_sub_close(hostile);
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

/*
 * The replication watermark and the standby's acknowledged positions
 * written past head (a write into the data file): shmbus_pub_sync()
 * earns nothing by them (it times out: outcome unknown), a subscriber that
 * sees only acknowledged messages reads none by them, and the agent's next
 * raise sets the watermark back.
 */
Test(corrupt, a_watermark_past_head_acknowledges_nothing)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, CAP, MAXMSG, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	struct shmbus_sub_attr sa;
	shmbus_pub *p;
	shmbus_sub *s;
	uint64_t m[4] = { 0 }, head;
	uint8_t buf[MAXMSG];

	store_relaxed32(&ch->daemon->repl_level, SHMBUS_ACK_APPLIED);
	store_relaxed32(&ch->daemon->repl_flags, SHMBUS_REPL_ON);
	shmbus_sub_attr_init(&sa);
	sa.start = SHMBUS_START_OLDEST;
	s = shmbus_sub_open(ch, &sa);
	p = shmbus_pub_open(ch, NULL);
	cr_assert(s && p);
	cr_assert_eq(shmbus_sub_set_visibility(s, SHMBUS_SEE_ACKNOWLEDGED), 0);
	cr_assert_eq(shmbus_publish(p, m, sizeof(m)), 0);
	head = load_relaxed64(&ch->pl->head);
	store_relaxed64(&ch->daemon->applied_pos, UINT64_MAX);
	store_relaxed64(&ch->daemon->replicated_pos, UINT64_MAX);
	cr_assert_eq(shmbus_pub_sync(p, 20000000), -ETIMEDOUT,
		     "acknowledged by a damaged watermark");
	cr_assert_eq(shmbus_read(s, buf, sizeof(buf), NULL), -EAGAIN,
		     "read past what the standby acknowledged");
	sb_repl_acked(ch, head, head, 0, false);
	sb_repl_watermark(ch, head);
	cr_assert_eq(load_relaxed64(&ch->daemon->replicated_pos), head);
	cr_assert_eq(shmbus_pub_sync(p, 20000000), 0);
	cr_assert_eq(shmbus_read(s, buf, sizeof(buf), NULL), sizeof(m));
	shmbus_sub_close(s);
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}
