/* SPDX-License-Identifier: MIT */
/*
 * fuzz_frames.c - replication frames as a standby receives them.
 *
 * The input is a stream of frames, read as shmbusd's linker reads them
 * from the primary: a 40-byte header (daemon/repl.h), checked
 * (rw_check_hdr()), then its body.  Byte 0 of the input chooses the
 * channel (bits 0-1: single or multi producer, block or overwrite) and
 * whether each frame's CRC is made right before the check (bit 2), so
 * that the fuzzer reaches what lies behind it; without it the CRC must
 * refuse every frame whose bytes it did not make.  A DATA frame that
 * passes rw_crc_ok() and sb_apply_check() at the standby's head is
 * applied with sb_apply().
 *
 * The invariants: no frame is read past its bytes (ASan); a frame whose
 * CRC was not made right never passes rw_crc_ok() unless it is the
 * input's own correct CRC; and whatever was applied, a subscriber reads
 * the ring from its start to its head without -EBADMSG, every message
 * within max_msg: records that pass the check never make a ring corrupt.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../daemon/repl.h"
#include "../lib/contract.h"
#include "shmbus/layout.h"
#include "fuzz.h"

#define CAP		(64u << 10)
#define MAX_MSG		2048u
#define BODY_MAX	(CAP / 2)

static const char *dir;

static shmbus_channel *fresh_channel(unsigned kind)
{
	struct shmbus_channel_attr a;
	shmbus_channel *ch;

	if (!dir)
		dir = fuzz_mkdir("frames");
	shmbus_channel_attr_init(&a);
	a.capacity = CAP;
	a.max_msg = MAX_MSG;
	a.policy = kind & 1 ? SHMBUS_OVERWRITE : SHMBUS_BLOCK;
	a.producers = kind & 2 ? SHMBUS_MULTI_PRODUCER
			       : SHMBUS_SINGLE_PRODUCER;
	ch = shmbus_channel_create(dir, "ch", &a, SHMBUS_CREATE_REPLACE);
	FUZZ_CHECK(ch != NULL);
	return ch;
}

/* Everything the ring holds reads back, valid. */
static void read_back(shmbus_channel *ch)
{
	struct shmbus_sub_attr sa;
	shmbus_sub *sub;
	static uint8_t buf[MAX_MSG];
	struct shmbus_msg info;

	shmbus_sub_attr_init(&sa);
	sub = shmbus_sub_open(ch, &sa);
	FUZZ_CHECK(sub != NULL);
	sb_sub_seek(sub, sb_ring_oldest(ch));
	for (int n = 0; n < (int)(CAP / 16) + 8; n++) {
		ssize_t r = shmbus_read(sub, buf, sizeof(buf), &info);

		if (r == -EAGAIN)
			break;
		FUZZ_CHECK(r >= 0);
		FUZZ_CHECK((size_t)r <= MAX_MSG);
	}
	shmbus_sub_close(sub);
}

int fuzz_frames_one(const uint8_t *data, size_t size)
{
	static uint8_t body[BODY_MAX];
	shmbus_channel *ch;
	shmbus_pub *w;
	size_t o = 1;
	char why[512];
	bool fix_crc;

	if (size < 1)
		return 0;
	ch = fresh_channel(data[0] & 3);
	fix_crc = data[0] & 4;
	w = sb_writer_open(ch, 0);
	FUZZ_CHECK(w != NULL);
	while (size - o >= sizeof(struct rw_hdr)) {
		struct rw_hdr h;
		struct sb_frame f;
		uint64_t head = sb_ring_head(ch);
		uint32_t crc;

		memcpy(&h, data + o, sizeof(h));
		o += sizeof(h);
		if (rw_check_hdr(&h, BODY_MAX, why, sizeof(why)))
			break;
		if (h.len > size - o)
			break;
		memcpy(body, data + o, h.len);
		o += h.len;
		crc = h.crc;
		if (fix_crc) {
			struct iovec iov = { body, h.len };
			struct rw_hdr sealed;

			rw_seal(&sealed, h.type, h.epoch, h.chan, h.pos, &iov,
				1);
			h.crc = sealed.crc;
		}
		if (!rw_crc_ok(&h, body))
			continue;
		FUZZ_CHECK(fix_crc || crc == h.crc);
		if (h.type != RW_DATA)
			continue;
		/* The linker applies at its head only. */
		h.pos = head;
		if (sb_apply_check(ch, h.pos, body, h.len, &f, why,
				   sizeof(why)))
			continue;
		FUZZ_CHECK(sb_apply(w, h.pos, body, h.len, &f) == 0 ||
			   sb_ring_head(ch) == head);
	}
	read_back(ch);
	sb_writer_close(w);
	shmbus_channel_close(ch);
	return 0;
}

void fuzz_frames_cleanup(void)
{
	if (dir)
		fuzz_rmdir(dir);
	dir = NULL;
}

#ifndef SHMBUS_FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_frames_one(data, size);
}
#endif
