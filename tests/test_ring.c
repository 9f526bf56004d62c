/* SPDX-License-Identifier: MIT */
/* test_ring.c - one process: records, wrap-around, full and empty rings,
 * message sizes, claim/commit/abort, gathered and batched publishing. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "../lib/copy.h"
#include "helpers.h"
#include "shmbus/layout.h"

#define CAP 4096u

static const char *dir;
static shmbus_channel *ch;
static shmbus_pub *pub;
static shmbus_sub *sub;

static void setup_block(void)
{
	dir = th_mkdir();
	ch = th_create(dir, CAP, 1024, SHMBUS_BLOCK, SHMBUS_SINGLE_PRODUCER);
	pub = shmbus_pub_open(ch, NULL);
	cr_assert(pub);
	sub = shmbus_sub_open(ch, NULL);
	cr_assert(sub);
}

static void teardown(void)
{
	shmbus_sub_close(sub);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

static void drain(void)
{
	uint8_t buf[2048];

	while (shmbus_read(sub, buf, sizeof(buf), NULL) >= 0)
		;
}

/* A filler record size that moves `d` bytes closer, never overshooting
 * by a straddle. */
static uint64_t step(uint64_t d, uint64_t maxrec)
{
	if (d >= SHMBUS_REC_HDR && d <= maxrec)
		return d;
	if (d < SHMBUS_REC_HDR)
		return 24;
	return (d - SHMBUS_REC_HDR < maxrec ? d - SHMBUS_REC_HDR : maxrec) & ~7u;
}

/* Publishes filler until head sits at ring offset `a`. */
static void advance_to(uint64_t a)
{
	const uint64_t maxrec = SHMBUS_REC_HDR + 1024;
	static uint8_t zero[1024];

	for (int i = 0; i < 64; i++) {
		uint64_t h = th_head(ch), d = (a - h) & (CAP - 1);
		uint64_t end = CAP - (h & (CAP - 1)), r;

		if (d == 0)
			return;
		/* Records never straddle the end: fill up to it first. */
		r = step(d > end ? end : d, maxrec);
		cr_assert_eq(shmbus_publish(pub, zero, r - SHMBUS_REC_HDR), 0);
		drain();
	}
	cr_assert_fail("could not reach offset %lu", (unsigned long)a);
}

Test(ring, wrap_at_every_alignment, .init = setup_block, .fini = teardown)
{
	static const size_t sizes[] = { 24, 25, 31, 32, 33, 100, 1000, 1024 };
	uint8_t msg[1024], got[1024];
	uint64_t seq = 0;

	/* Every offset a record can start at: records are at least 16 bytes
	 * and never straddle the end, so none ends at offset 8. */
	for (uint64_t a = 0; a < CAP; a += 8) {
		if (a == 8)
			continue;
		for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
			struct shmbus_msg info;
			uint64_t s;
			uint32_t id;
			ssize_t n;

			advance_to(a);
			th_msg_fill(msg, sizes[k], 7, ++seq);
			cr_assert_eq(shmbus_publish(pub, msg, sizes[k]), 0);
			n = shmbus_read(sub, got, sizeof(got), &info);
			cr_assert_eq(n, (ssize_t)sizes[k], "offset %lu size %zu: %zd",
				     (unsigned long)a, sizes[k], n);
			cr_assert_eq(th_msg_check(got, (size_t)n, &id, &s), 0);
			cr_assert_eq(s, seq);
			cr_assert_eq(info.lost, 0);
			cr_assert_eq(shmbus_read(sub, got, sizeof(got), NULL), -EAGAIN);
		}
	}
}

Test(ring, full_and_empty, .init = setup_block, .fini = teardown)
{
	uint8_t msg[100], got[100];
	struct shmbus_channel_info in;
	uint64_t n = 0, s;
	uint32_t id;
	int rc;

	cr_assert_eq(shmbus_read(sub, got, sizeof(got), NULL), -EAGAIN);
	for (;;) {
		th_msg_fill(msg, sizeof(msg), 1, n);
		rc = shmbus_publish(pub, msg, sizeof(msg));
		if (rc == -EAGAIN)
			break;
		cr_assert_eq(rc, 0);
		n++;
	}
	/* 120-byte records in a 4 KiB ring, one word kept free. */
	cr_assert_eq(n, (CAP - 8) / 120, "fitted %lu", (unsigned long)n);
	shmbus_channel_info(ch, &in);
	cr_assert_geq(in.backpressure, 1);
	for (uint64_t i = 0; i < n; i++) {
		cr_assert_eq(shmbus_read(sub, got, sizeof(got), NULL), 100);
		cr_assert_eq(th_msg_check(got, 100, &id, &s), 0);
		cr_assert_eq(s, i);
	}
	cr_assert_eq(shmbus_read(sub, got, sizeof(got), NULL), -EAGAIN);
	/* Room again, across the wrap. */
	for (uint64_t i = 0; i < 3 * n; i++) {
		th_msg_fill(msg, sizeof(msg), 1, i);
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
		cr_assert_eq(shmbus_read(sub, got, sizeof(got), NULL), 100);
		cr_assert_eq(th_msg_check(got, 100, &id, &s), 0);
		cr_assert_eq(s, i);
	}
}

Test(ring, publisher_without_subscribers_never_blocks, .init = setup_block,
     .fini = teardown)
{
	uint8_t msg[200] = { 0 };

	shmbus_sub_close(sub);
	sub = NULL;
	for (int i = 0; i < 1000; i++)
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	sub = shmbus_sub_open(ch, NULL);
	cr_assert_eq(shmbus_read(sub, msg, sizeof(msg), NULL), -EAGAIN);
}

Test(ring, zero_and_max_length, .init = setup_block, .fini = teardown)
{
	uint8_t msg[1025], got[1025];
	struct shmbus_msg info;

	memset(msg, 0xab, sizeof(msg));
	cr_assert_eq(shmbus_publish(pub, NULL, 0), 0);
	cr_assert_eq(shmbus_publish(pub, msg, 1024), 0);
	cr_assert_eq(shmbus_publish(pub, msg, 1025), -EMSGSIZE);
	cr_assert_eq(shmbus_read(sub, got, sizeof(got), &info), 0);
	cr_assert_eq(info.len, 0);
	memset(got, 0, sizeof(got));
	cr_assert_eq(shmbus_read(sub, got, sizeof(got), &info), 1024);
	cr_assert_eq(memcmp(got, msg, 1024), 0);
	cr_assert_eq(info.seq, 1);
	/* The rejected message left nothing behind. */
	cr_assert_eq(shmbus_read(sub, got, sizeof(got), NULL), -EAGAIN);
	cr_assert_eq(shmbus_publish(pub, msg, 1), 0);
	cr_assert_eq(shmbus_read(sub, got, sizeof(got), &info), 1);
	cr_assert_eq(info.seq, 2);
}

Test(ring, read_into_small_buffer_keeps_message, .init = setup_block,
     .fini = teardown)
{
	uint8_t got[64];

	cr_assert_eq(shmbus_publish(pub, "0123456789", 10), 0);
	cr_assert_eq(shmbus_read(sub, got, 4, NULL), -EMSGSIZE);
	cr_assert_eq(shmbus_read(sub, got, sizeof(got), NULL), 10);
	cr_assert_eq(memcmp(got, "0123456789", 10), 0);
}

Test(ring, claim_commit_abort, .init = setup_block, .fini = teardown)
{
	struct shmbus_channel_info in;
	struct shmbus_msg info;
	uint8_t got[64];
	void *buf;

	/* Every refusal of shmbus_claim()'s front, answered by its checks. */
	cr_assert_eq(shmbus_claim(NULL, 5, &buf), -EINVAL);
	cr_assert_eq(shmbus_claim(pub, 5, NULL), -EINVAL);
	cr_assert_eq(shmbus_claim(pub, 1025, &buf), -EMSGSIZE);
	cr_assert_eq(shmbus_claim(pub, 5, &buf), 0);
	cr_assert_eq(shmbus_claim(pub, 5, &buf), -EBUSY);
	/* The same condition, the same error, whichever way one publishes. */
	cr_assert_eq(shmbus_publish(pub, "x", 1), -EBUSY);
	cr_assert_eq(shmbus_publishv(pub, &(struct iovec){ "x", 1 }, 1),
		     -EBUSY);
	cr_assert_eq(shmbus_publish_batch(pub, &(struct iovec){ "x", 1 }, 1),
		     -EBUSY);
	memcpy(buf, "hello", 5);
	/* Not visible before the commit. */
	cr_assert_eq(shmbus_read(sub, got, sizeof(got), NULL), -EAGAIN);
	cr_assert_eq(shmbus_commit(pub), 0);
	cr_assert_eq(shmbus_commit(pub), -EINVAL);
	cr_assert_eq(shmbus_claim(pub, 5, &buf), 0);
	memcpy(buf, "xxxxx", 5);
	cr_assert_eq(shmbus_abort(pub), 0);
	cr_assert_eq(shmbus_publish(pub, "world", 5), 0);
	cr_assert_eq(shmbus_read(sub, got, sizeof(got), &info), 5);
	cr_assert_eq(memcmp(got, "hello", 5), 0);
	cr_assert_eq(shmbus_read(sub, got, sizeof(got), &info), 5);
	cr_assert_eq(memcmp(got, "world", 5), 0);
	cr_assert_eq(info.lost, 0, "an aborted message is not a loss");
	shmbus_channel_info(ch, &in);
	cr_assert_eq(in.aborts, 1);
	cr_assert_eq(in.published, 3);
}

Test(ring, gathered_and_batched, .init = setup_block, .fini = teardown)
{
	struct iovec iov[3] = {
		{ "head:", 5 }, { NULL, 0 }, { "payload", 7 },
	};
	struct iovec batch[4] = {
		{ "a", 1 }, { "bb", 2 }, { NULL, 0 }, { "dddd", 4 },
	};
	struct shmbus_msg info;
	uint8_t got[64];

	cr_assert_eq(shmbus_publishv(pub, iov, 3), 0);
	cr_assert_eq(shmbus_read(sub, got, sizeof(got), NULL), 12);
	cr_assert_eq(memcmp(got, "head:payload", 12), 0);
	cr_assert_eq(shmbus_publish_batch(pub, batch, 4), 4);
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(shmbus_read(sub, got, sizeof(got), &info),
			     (ssize_t)batch[i].iov_len);
		if (batch[i].iov_len)
			cr_assert_eq(memcmp(got, batch[i].iov_base,
					    batch[i].iov_len), 0);
		cr_assert_eq(info.seq, 1 + (uint64_t)i);
	}
}

/* The inlined copy of small payloads: every length up to past the inline
 * limit, every alignment of source and destination; exactly the n bytes
 * change. */
Test(ring, small_copy_every_length_and_alignment)
{
	uint8_t src[SB_COPY_INLINE + 40], dst[SB_COPY_INLINE + 80];

	for (size_t i = 0; i < sizeof(src); i++)
		src[i] = (uint8_t)(i * 7 + 1);
	for (size_t n = 0; n <= SB_COPY_INLINE + 16; n++)
		for (size_t so = 0; so < 16; so++)
			for (size_t doff = 0; doff < 16; doff++) {
				memset(dst, 0xee, sizeof(dst));
				sb_copy(dst + 16 + doff, src + so, n);
				for (size_t i = 0; i < sizeof(dst); i++) {
					size_t k = i - 16 - doff;
					uint8_t want = i >= 16 + doff && k < n
							       ? src[so + k]
							       : 0xee;

					cr_assert_eq(dst[i], want,
						     "n %zu src+%zu dst+%zu: "
						     "byte %zu", n, so, doff, i);
				}
			}
}

/* Every small length through each way of publishing, with a distinct
 * pattern per message, read back byte for byte. */
Test(ring, small_lengths_through_every_publish, .init = setup_block,
     .fini = teardown)
{
	uint8_t msg[SB_COPY_INLINE + 16], got[SB_COPY_INLINE + 16];
	struct iovec v[2], b[4];

	for (size_t n = 0; n <= SB_COPY_INLINE + 9; n++) {
		for (size_t i = 0; i < n; i++)
			msg[i] = (uint8_t)(n * 31 + i);
		cr_assert_eq(shmbus_publish(pub, msg, n), 0);
		v[0] = (struct iovec){ msg, n / 3 };
		v[1] = (struct iovec){ msg + n / 3, n - n / 3 };
		cr_assert_eq(shmbus_publishv(pub, v, 2), 0);
		for (int k = 0; k < 4; k++)
			b[k] = (struct iovec){ msg + (size_t)k * n / 4,
					       n - (size_t)k * n / 4 };
		cr_assert_eq(shmbus_publish_batch(pub, b, 4), 4);
		for (int m = 0; m < 6; m++) {
			const struct iovec *want = m < 2 ? &v[0] : &b[m - 2];
			size_t len = m < 2 ? n : want->iov_len;
			const uint8_t *from = m < 2 ? msg : want->iov_base;

			memset(got, 0, sizeof(got));
			cr_assert_eq(shmbus_read(sub, got, sizeof(got), NULL),
				     (ssize_t)len, "n %zu message %d", n, m);
			cr_assert_eq(memcmp(got, from, len), 0,
				     "n %zu message %d", n, m);
		}
	}
}

static int count_handler(const struct shmbus_msg *m, void *arg)
{
	uint64_t *n = arg;

	cr_assert_eq(m->seq, *n);
	(*n)++;
	return 0;
}

Test(ring, poll_batches_and_limits, .init = setup_block, .fini = teardown)
{
	uint64_t n = 0;

	for (int i = 0; i < 10; i++)
		cr_assert_eq(shmbus_publish(pub, "x", 1), 0);
	cr_assert_eq(shmbus_poll(sub, count_handler, &n, 4), 4);
	cr_assert_eq(shmbus_poll(sub, count_handler, &n, 0), 6);
	cr_assert_eq(shmbus_poll(sub, count_handler, &n, 0), 0);
	cr_assert_eq(n, 10);
}

Test(ring, single_producer_is_exclusive, .init = setup_block, .fini = teardown)
{
	shmbus_pub *p2 = shmbus_pub_open(ch, NULL);

	cr_assert_null(p2);
	cr_assert_eq(errno, EBUSY);
	shmbus_pub_close(pub);
	pub = shmbus_pub_open(ch, NULL);
	cr_assert(pub, "reopen after close: %s", shmbus_strerror(errno));
}

Test(ring, subscriber_slots_run_out, .init = setup_block, .fini = teardown)
{
	shmbus_sub *s[SHMBUS_MAX_SLOTS];
	int n = 0;

	while (n < (int)SHMBUS_MAX_SLOTS && (s[n] = shmbus_sub_open(ch, NULL)))
		n++;
	cr_assert_eq(n, SHMBUS_MAX_SLOTS - 1); /* the fixture holds one */
	cr_assert_null(shmbus_sub_open(ch, NULL));
	cr_assert_eq(errno, ENOSPC);
	while (n--)
		shmbus_sub_close(s[n]);
}

Test(ring, start_oldest_and_newest, .init = setup_block, .fini = teardown)
{
	struct shmbus_sub_attr old = { .start = SHMBUS_START_OLDEST };
	struct shmbus_msg info;
	shmbus_sub *late_new, *late_old;
	uint8_t got[16];

	for (int i = 0; i < 5; i++)
		cr_assert_eq(shmbus_publish(pub, "m", 1), 0);
	late_new = shmbus_sub_open(ch, NULL);
	late_old = shmbus_sub_open(ch, &old);
	cr_assert(late_new && late_old);
	cr_assert_eq(shmbus_read(late_new, got, sizeof(got), NULL), -EAGAIN);
	/* Block policy: the oldest held back is the fixture subscriber's. */
	cr_assert_eq(shmbus_read(late_old, got, sizeof(got), &info), 1);
	cr_assert_eq(info.seq, 0);
	shmbus_sub_close(late_new);
	shmbus_sub_close(late_old);
}

Test(ring, bad_arguments)
{
	cr_assert_eq(shmbus_publish(NULL, "x", 1), -EINVAL);
	cr_assert_eq(shmbus_commit(NULL), -EINVAL);
	cr_assert_eq(shmbus_poll(NULL, count_handler, NULL, 1), -EINVAL);
	cr_assert_eq(shmbus_read(NULL, NULL, 0, NULL), -EINVAL);
	cr_assert_eq(shmbus_wait(NULL, 0), -EINVAL);
	cr_assert_null(shmbus_pub_open(NULL, NULL));
	cr_assert_null(shmbus_sub_open(NULL, NULL));
	cr_assert_str_eq(shmbus_strerror(-EBADMSG),
			 "corrupt channel: a value in shared memory is out of bounds");
	cr_assert_str_eq(shmbus_strerror(-ENOENT), "No such file or directory");
}
