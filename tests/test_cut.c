/* SPDX-License-Identifier: MIT */
/*
 * test_cut.c - one process: a standby's ring cut back to a position
 * (sb_ring_cut_begin()/_end(), docs/failover.md "Rejoin"), then written
 * again by the standby's writer as replication does: the index, the
 * mailbox, the sequence numbers and the subscribers that may use the ring
 * meanwhile.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <sys/uio.h>

#include "helpers.h"
#include "shmbus/layout.h"
#include "../lib/channel.h"
#include "../lib/contract.h"

#define CAP 65536u

static const char *dir;
static shmbus_channel *ch;
static uint64_t next_seq;

static void setup(void)
{
	dir = th_mkdir();
	ch = th_create(dir, CAP, 1024, SHMBUS_BLOCK, SHMBUS_SINGLE_PRODUCER);
}

static void teardown(void)
{
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

TestSuite(cut, .init = setup, .fini = teardown, .timeout = 30);

/* A record of the ring's shape at p in buf: a 40-byte message numbered
 * next_seq, or padding of `len` (type PAD) to the ring's end. */
static size_t put_rec(uint8_t *buf, uint64_t p, uint32_t type, uint32_t len)
{
	uint64_t w = ((p / CAP) + 1) << 32 | (uint64_t)type << 29 | len;

	memcpy(buf, &w, 8);
	if (type == SHMBUS_REC_PAD) {
		memset(buf + 8, 0, len);
		return 8 + len;
	}
	memcpy(buf + 8, &next_seq, 8);
	next_seq++;
	memset(buf + 16, 0xab, len);
	return 16 + ((len + 7) & ~7u);
}

/* The standby's writer applies 56-byte records from head up to `to`, in
 * frames of at most 1 KiB. */
static void apply_to(shmbus_pub *wr, uint64_t to)
{
	static uint8_t buf[2048];

	while (sb_ring_head(ch) < to) {
		uint64_t pos = sb_ring_head(ch), p = pos;
		struct sb_frame f;
		char why[200];
		size_t n = 0;

		while (n < 1024 && p < to) {
			uint64_t room = CAP - (p % CAP);
			size_t k = room < 56 ?
				put_rec(buf + n, p, SHMBUS_REC_PAD,
					(uint32_t)room - 8) :
				put_rec(buf + n, p, SHMBUS_REC_MSG, 40);

			n += k;
			p += k;
		}
		cr_assert_eq(sb_apply_check(ch, pos, buf, n, &f, why,
					    sizeof(why)), 0, "%s", why);
		cr_assert_eq(sb_apply(wr, pos, buf, n, &f), 0);
		/* What the linker says once a frame is applied. */
		sb_repl_acked(ch, pos + f.extent, pos + f.extent, 0, false);
	}
}

/* The ring stands by and the standby's writer is opened on it, numbering
 * records from 0. */
static shmbus_pub *standby_writer(void)
{
	shmbus_pub *wr;

	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_STANDBY), 0);
	wr = sb_writer_open(ch, 100000000);
	cr_assert(wr);
	next_seq = 0;
	return wr;
}

/* A primary's records: 49 messages, a batch of 8 across the first
 * segment boundary (one claim), 20 more; then the host stands by. */
static void primary_then_standby(void)
{
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	struct iovec v[8];
	char m[24] = "old";

	cr_assert(pub);
	for (int i = 0; i < 49; i++)
		cr_assert_eq(shmbus_publish(pub, m, sizeof(m)), 0);
	for (int i = 0; i < 8; i++)
		v[i] = (struct iovec){ m, sizeof(m) };
	cr_assert_eq(shmbus_publish_batch(pub, v, 8), 8);
	for (int i = 0; i < 20; i++)
		cr_assert_eq(shmbus_publish(pub, m, sizeof(m)), 0);
	shmbus_pub_close(pub);
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_STANDBY), 0);
}

/* Cut inside the batch that crosses the first segment start (its index
 * entry names the batch's end, past the cut), then a lap of new records:
 * the oldest record the index leads to is a boundary of the new ones, and
 * a recovery finds nothing to undo. */
Test(cut, the_index_names_no_record_of_the_tail)
{
	uint64_t p = 49 * 40 + 3 * 40, end, head, oldest;
	char why[256];
	shmbus_pub *wr;

	primary_then_standby();
	cr_assert_eq(sb_ring_cut_begin(ch, p, &end, why, sizeof(why)), 0,
		     "%s", why);
	sb_ring_cut_end(ch, p, SHMBUS_FENCE_STANDBY);
	cr_assert_eq(sb_ring_head(ch), p);
	next_seq = 52;
	wr = sb_writer_open(ch, 100000000);
	cr_assert(wr);
	/* Up to just before the segment start that follows the cut's, a
	 * lap later: the index's entry for it is still the one the cut
	 * left. */
	apply_to(wr, 2048 + CAP - 600);
	head = sb_ring_head(ch);
	oldest = sb_ring_oldest(ch);
	cr_assert(sb_ring_has_record(ch, oldest), "oldest %lu is no record",
		  (unsigned long)oldest);
	cr_assert_eq(sb_apply_recover(ch), head, "recovery moved head");
	sb_writer_close(wr);
}

/* A subscriber that may be reading the tail holds the cut back; a
 * subscriber that opens during the cut is refused (EAGAIN); a position
 * that is not a record boundary is refused. */
Test(cut, nobody_reads_a_ring_being_cut)
{
	shmbus_sub *sub;
	uint64_t end;
	char why[256];

	primary_then_standby();
	sub = shmbus_sub_open(ch, NULL);
	cr_assert(sub);
	cr_assert_eq(sb_ring_cut_begin(ch, 400, &end, why, sizeof(why)),
		     -EBUSY);
	cr_assert(strstr(why, "subscriber"), "%s", why);
	cr_assert_eq(sb_fence_get(ch), SHMBUS_FENCE_STANDBY);
	shmbus_sub_close(sub);
	cr_assert_eq(sb_ring_cut_begin(ch, 404, &end, why, sizeof(why)),
		     -EINVAL);
	cr_assert_eq(sb_ring_cut_begin(ch, 400, &end, why, sizeof(why)), 0,
		     "%s", why);
	cr_assert_eq(sb_fence_get(ch), SHMBUS_FENCE_CUT);
	cr_assert_null(shmbus_sub_open(ch, NULL));
	cr_assert_eq(errno, EAGAIN);
	sb_ring_cut_end(ch, 400, SHMBUS_FENCE_STANDBY);
	sub = shmbus_sub_open(ch, NULL);
	cr_assert(sub, "refused after the cut");
	shmbus_sub_close(sub);
}

/* After the cut, a subscriber at the cut reads the new primary's record
 * there, numbered as the first removed one was: never a removed record
 * through the mailbox, never a sequence number that jumps. */
Test(cut, the_next_record_is_the_new_primarys)
{
	struct shmbus_sub_attr sa;
	uint8_t buf[2048], rec[128];
	struct shmbus_msg info;
	struct sb_frame f;
	uint64_t p = 400, end, first_seq;
	shmbus_pub *wr;
	shmbus_sub *sub;
	char why[256];
	ssize_t n;
	size_t k;

	primary_then_standby();
	/* The tail's first message: 10 (messages of 40 bytes from 0). */
	first_seq = p / 40;
	cr_assert_eq(sb_ring_cut_begin(ch, p, &end, why, sizeof(why)), 0,
		     "%s", why);
	sb_ring_cut_end(ch, p, SHMBUS_FENCE_STANDBY);
	shmbus_sub_attr_init(&sa);
	sa.start = SHMBUS_START_NEWEST;
	sub = shmbus_sub_open(ch, &sa);
	cr_assert(sub);
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL), -EAGAIN,
		     "a record after the cut before any was written");
	next_seq = first_seq;
	k = put_rec(rec, p, SHMBUS_REC_MSG, 40);
	memset(rec + 16, 0xcd, 40);
	cr_assert_eq(sb_apply_check(ch, p, rec, k, &f, why, sizeof(why)), 0);
	wr = sb_writer_open(ch, 100000000);
	cr_assert_eq(sb_apply(wr, p, rec, k, &f), 0);
	n = shmbus_read(sub, buf, sizeof(buf), &info);
	cr_assert_eq(n, 40);
	cr_assert_eq(info.pos, p);
	cr_assert_eq(info.seq, first_seq);
	cr_assert_eq(buf[0], 0xcd, "a removed record's payload");
	shmbus_sub_close(sub);
	sb_writer_close(wr);
}

/* A daemon killed half way through a cut (the first commit words past
 * the cut cleared, nothing else): the next start finishes it where the
 * ring's committed records end, with the next sequence number and a
 * fence that says standby. */
Test(cut, a_cut_stopped_half_way_is_finished_at_start)
{
	uint64_t end, at = 0, p = 400;
	struct shmbus_rec *r;
	char why[256];

	primary_then_standby();
	cr_assert_eq(sb_ring_cut_begin(ch, p, &end, why, sizeof(why)), 0,
		     "%s", why);
	r = (struct shmbus_rec *)(ch->data + p);
	__atomic_store_n(&r->commit, 0, __ATOMIC_RELAXED);
	cr_assert(sb_ring_cut_finish(ch, &at));
	cr_assert_eq(at, p);
	cr_assert_eq(sb_ring_head(ch), p);
	cr_assert_eq(ch->pl->seq, p / 40, "seq %lu",
		     (unsigned long)ch->pl->seq);
	cr_assert_eq(sb_fence_get(ch), SHMBUS_FENCE_STANDBY);
	cr_assert(!sb_ring_cut_finish(ch, &at), "finished twice");
}

/* A standby that goes on less than a lap past its end (its primary no
 * longer held what it lacked): sb_apply_restart() writes GAP records
 * over the positions it passes.  A subscriber that waited at the end
 * steps over them, and the next message tells it what it lost, as do its
 * statistics. */
Test(cut, a_restart_within_a_lap_is_counted_lost_by_subscribers)
{
	struct shmbus_sub_stats st;
	struct shmbus_msg info;
	shmbus_sub *sub;
	shmbus_pub *wr;
	uint8_t buf[64];
	uint64_t p;

	wr = standby_writer();
	sub = shmbus_sub_open(ch, NULL);
	cr_assert(sub);
	apply_to(wr, 10 * 56);
	for (uint64_t i = 0; i < 10; i++) {
		cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), &info), 40);
		cr_assert_eq(info.seq, i);
		cr_assert_eq(info.lost, 0);
	}
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), &info), -EAGAIN);
	/* Messages 10 to 39 were never received. */
	p = sb_ring_head(ch) + 30 * 56;
	cr_assert_eq(sb_apply_restart(wr, p), 0);
	cr_assert_eq(word_type(rec_at(ch, 10 * 56)->commit), SHMBUS_REC_GAP);
	next_seq = 40;
	apply_to(wr, p + 5 * 56);
	for (uint64_t i = 40; i < 45; i++) {
		cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), &info), 40);
		cr_assert_eq(info.seq, i);
		cr_assert_eq(info.lost, i == 40 ? 30 : 0, "message %lu: lost "
			     "%lu", (unsigned long)i,
			     (unsigned long)info.lost);
	}
	cr_assert_eq(shmbus_sub_stats(sub, &st), 0);
	cr_assert_eq(st.delivered, 15);
	cr_assert_eq(st.lost, 30);
	shmbus_sub_close(sub);
	sb_writer_close(wr);
}

/* A gap of a length no record has, below head (written by a process
 * that maps the ring): a standby's recovery at start finds the ring
 * damaged, and moves head neither to it (the records after it were
 * acknowledged) nor to a misaligned position past it; a cut back is
 * refused (the walk to head stops there, as at a claim open). */
Test(cut, a_recovery_finds_a_record_of_no_possible_shape)
{
	uint64_t bad = 10 * 56, end, head;
	char why[256];
	shmbus_pub *wr;

	wr = standby_writer();
	apply_to(wr, bad);
	cr_assert_eq(sb_apply_restart(wr, bad + 64), 0);
	next_seq = 20;
	apply_to(wr, bad + 64 + 2 * 56);
	sb_writer_close(wr);
	__atomic_store_n(&rec_at(ch, bad)->commit,
			 commit_word(ch, bad, SHMBUS_REC_GAP, 4),
			 __ATOMIC_RELEASE);
	head = sb_ring_head(ch);
	cr_assert_eq(sb_apply_recover(ch), UINT64_MAX);
	cr_assert_eq(sb_ring_head(ch), head);
	cr_assert_eq(sb_ring_cut_begin(ch, 5 * 56, &end, why, sizeof(why)),
		     -EBUSY);
	cr_assert(strstr(why, "damaged"), "%s", why);
	cr_assert_eq(sb_ring_head(ch), head);
	cr_assert_eq(sb_fence_get(ch), SHMBUS_FENCE_STANDBY);
}

/* The standby's writer killed between the claim of an apply and its
 * commit (kill -9 of shmbusd): head, the hand-off, the zeroed word after
 * and the index say the claim, nothing at pos is committed. */
static void claim_only(uint64_t pos, uint64_t q)
{
	__atomic_store_n(&ch->pl->head, q, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	__atomic_store_n(&rec_at(ch, q)->commit, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&ch->pl->handoff, q, __ATOMIC_RELEASE);
	sb_seg_index(ch, pos, q);
}

/* A gap from inside a lap's first segment to the lap's end (a primary
 * that was a standby once wrote it so), applied as its word alone and cut
 * short: no index entry below head names a record boundary before the
 * claim, and the recovery at the next start still finds where the applied
 * records end, takes head back there, and the gap is applied again. */
Test(cut, an_apply_of_nearly_a_lap_cut_short_is_undone)
{
	uint64_t pos = CAP + 560, ext = CAP - 560, w;
	struct shmbus_msg info;
	struct sb_frame f;
	uint8_t buf[64];
	char why[200];
	shmbus_pub *wr;
	shmbus_sub *sub;

	wr = standby_writer();
	apply_to(wr, pos);
	sub = shmbus_sub_open(ch, NULL);
	cr_assert(sub);
	w = commit_word(ch, pos, SHMBUS_REC_GAP, (uint32_t)(ext - 8));
	memcpy(buf, &w, 8);
	cr_assert_eq(sb_apply_check(ch, pos, buf, 8, &f, why, sizeof(why)), 0,
		     "%s", why);
	cr_assert_eq(f.extent, ext);
	claim_only(pos, pos + ext);
	cr_assert_eq(sb_apply_recover(ch), pos);
	cr_assert_eq(sb_ring_head(ch), pos);
	cr_assert_eq(sb_apply(wr, pos, buf, 8, &f), 0);
	sb_repl_acked(ch, pos + ext, pos + ext, 0, false);
	next_seq += 1000;
	apply_to(wr, pos + ext + 5 * 56);
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), &info), 40);
	cr_assert_eq(info.pos, pos + ext);
	cr_assert_eq(info.lost, 1000);
	shmbus_sub_close(sub);
	sb_writer_close(wr);
}

/* The same for a restart of nearly a lap (sb_apply_restart()) killed
 * before its first GAP piece was committed. */
Test(cut, a_restart_of_nearly_a_lap_cut_short_is_undone)
{
	uint64_t end = CAP + 560, pos = end + CAP - 64;
	shmbus_pub *wr;

	wr = standby_writer();
	apply_to(wr, end);
	claim_only(end, pos);
	/* Every piece but the first (from the lap's end on) committed. */
	sb_commit_rec(ch, 2 * CAP, SHMBUS_REC_GAP,
		      (uint32_t)(pos - 2 * CAP - 8));
	cr_assert_eq(sb_apply_recover(ch), end);
	cr_assert_eq(sb_ring_head(ch), end);
	cr_assert_eq(sb_apply_restart(wr, pos), 0);
	cr_assert_eq(sb_apply_recover(ch), pos);
	sb_writer_close(wr);
}

/* A record alone as its word stands for at most a lap less 8 bytes, as
 * much as any claim may take: a whole lap would need the subscribers to
 * move past the position they wait at, and the standby's writer would
 * wait for them for ever. */
Test(cut, a_word_alone_of_a_whole_lap_is_refused)
{
	uint64_t w = commit_word(ch, 0, SHMBUS_REC_GAP, CAP - 8);
	struct sb_frame f;
	char why[200];
	uint8_t buf[8];

	memcpy(buf, &w, 8);
	cr_assert_eq(sb_apply_check(ch, 0, buf, 8, &f, why, sizeof(why)),
		     -EBADMSG);
	w = commit_word(ch, 0, SHMBUS_REC_GAP, CAP - 16);
	memcpy(buf, &w, 8);
	cr_assert_eq(sb_apply_check(ch, 0, buf, 8, &f, why, sizeof(why)), 0,
		     "%s", why);
	cr_assert_eq(f.extent, CAP - 8);
}
