/* SPDX-License-Identifier: MIT */
/*
 * fuzz_journal.c - a channel's journal on disk as its readers see it:
 * the checking reader (lib/journal.c), the time index, and a replaying
 * subscriber (lib/replay.c) that trusts neither the files nor the
 * journal's words in shmbusd's area of the channel.
 *
 * At start-up the harness makes, in a private directory in /dev/shm, a
 * block channel "j" (16 KiB) and, beside it, a journal of that channel
 * in the real format: three segments of 64 KiB (bases 0, 64K, 128K; the
 * last one half full), each with a time index, holding messages of
 * varied lengths and the padding the ring puts at its end, sealed by
 * sb_jrec_seal().  The journal's words in shmbusd's area name it.
 *
 * Before each input the three segments and indexes are rewritten as they
 * were.  The input then changes them and runs readers:
 *
 *   byte 0   bits 0-1  the file the patches go to: segment 0, 1, 2, or
 *                      the last segment's time index
 *            bit 2     truncate that file to u16 * 8 bytes (read next)
 *            bit 3     remove segment 1 (a gap, or retention)
 *   then     patches until the input ends: u16 offset (modulo the
 *            file's size), u8 n, n bytes written there
 *
 * Then: a reader from the first position without a limit, and one with
 * the limit the area's `jnl_written` gives (both must stop, never
 * return a record outside the journal, out of order, or past the
 * limit); the time index searched at three times; a replay opened at
 * position 0 and by time, read to the end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "shmbus.h"
#include "shmbus/layout.h"
#include "../lib/contract.h"
#include "../lib/journal.h"

#define SEG	(UINT64_C(64) << 10)
#define CAP	(UINT64_C(16) << 10)
#define MAXMSG	1024u
#define NSEG	3

static char dir[64], jdir[128];
static shmbus_channel *ch;
static uint8_t *image[NSEG];		/* each segment file, whole */
static struct shmbus_jtix tix[NSEG][8];
static size_t ntix[NSEG];
static uint64_t end_pos;		/* where the journal ends */
static struct sb_jgeom geom;

static void put(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	FUZZ_CHECK(fd >= 0);
	FUZZ_CHECK(write(fd, buf, len) == (ssize_t)len);
	close(fd);
}

/* Lays a sealed message record (or padding to the ring's end) at pos in
 * the images; returns the next position. */
static uint64_t lay(uint64_t pos, uint64_t seq, uint32_t len)
{
	uint8_t *seg = image[pos / SEG] + SHMBUS_JSEG_HDR + pos % SEG;
	uint64_t room = CAP - pos % CAP, size = 16 + (((uint64_t)len + 7) & ~7u);
	uint64_t w;

	if (size > room) {
		w = (uint64_t)SHMBUS_REC_PAD << SHMBUS_LEN_BITS | (room - 8);
		memcpy(seg, &w, 8);
		sb_jrec_seal(seg, pos);
		return pos + room;
	}
	w = (uint64_t)SHMBUS_REC_MSG << SHMBUS_LEN_BITS | len;
	memcpy(seg, &w, 8);
	memcpy(seg + 8, &seq, 8);
	for (uint32_t i = 0; i < len; i++)
		seg[16 + i] = (uint8_t)(seq + i);
	sb_jrec_seal(seg, pos);
	return pos + size;
}

static void setup(void)
{
	char why[128];
	uint64_t pos = 0, seq = 0;

	snprintf(dir, sizeof(dir), "/dev/shm/shmbus-fuzz-journal-%d",
		 (int)getpid());
	FUZZ_CHECK(mkdir(dir, 0700) == 0 || errno == EEXIST);
	snprintf(jdir, sizeof(jdir), "%s/jnl", dir);
	FUZZ_CHECK(mkdir(jdir, 0700) == 0 || errno == EEXIST);
	{
		struct shmbus_channel_attr a;

		shmbus_channel_attr_init(&a);
		a.capacity = CAP;
		a.max_msg = MAXMSG;
		ch = shmbus_channel_create(dir, "j", &a, 0);
		FUZZ_CHECK(ch);
	}
	FUZZ_CHECK(sb_jgeom_make(&geom, "j", SEG, CAP, MAXMSG,
				 sb_channel_flags(SHMBUS_BLOCK,
						  SHMBUS_SINGLE_PRODUCER),
				 why, sizeof(why)) == 0);
	for (int s = 0; s < NSEG; s++) {
		struct shmbus_jseg_hdr h;

		image[s] = calloc(1, SHMBUS_JSEG_HDR + SEG);
		FUZZ_CHECK(image[s]);
		sb_jseg_hdr_make(&h, &geom, (uint64_t)s * SEG,
				 (uint64_t)s * SEG, 1);
		memcpy(image[s], &h, sizeof(h));
	}
	while (pos < 2 * SEG + SEG / 2) {
		uint64_t s = pos / SEG;

		if (pos % 8192 == 0 || ntix[s] == 0) {
			struct shmbus_jtix *e = &tix[s][ntix[s]];

			if (ntix[s] < 8) {
				e->ns = 1000 + (int64_t)pos;
				e->pos = pos;
				e->crc = sb_crc32c(0, e, 16);
				ntix[s]++;
			}
		}
		pos = lay(pos, seq, (uint32_t)((seq * 37) % 300));
		seq++;
	}
	end_pos = pos;
	/* The ring continues where the journal ends, as after a reboot: the
	 * journal's positions are older than the ring holds. */
	FUZZ_CHECK(sb_ring_continue(ch, end_pos, seq) == 0);
	sb_jnl_setup(ch, jdir, 16, false);
	sb_jnl_oldest(ch, 0, NSEG * SEG, SHMBUS_JKEEP_RULE);
}

static void restore(void)
{
	char path[256];

	for (int s = 0; s < NSEG; s++) {
		sb_jseg_path(path, sizeof(path), jdir, (uint64_t)s * SEG);
		put(path, image[s], SHMBUS_JSEG_HDR + SEG);
		sb_jtix_path(path, sizeof(path), jdir, (uint64_t)s * SEG);
		put(path, tix[s], ntix[s] * sizeof(tix[s][0]));
	}
	sb_jnl_written(ch, end_pos);
}

/* Reads the whole journal with a limit; checks what comes back. */
static void read_all(uint64_t limit)
{
	struct sb_jreader r;
	struct sb_jrec rec;
	uint64_t last = 0, seq = UINT64_MAX;
	int rc, n = 0;

	FUZZ_CHECK(sb_jreader_init(&r, jdir, &geom) == 0);
	rc = sb_jreader_seek(&r, 0);
	while (rc == 0 && (rc = sb_jreader_next(&r, limit, &rec)) == 1) {
		rc = 0;
		FUZZ_CHECK(rec.pos >= last && rec.pos < NSEG * SEG);
		FUZZ_CHECK(rec.pos + rec.size <= limit ||
			   limit == UINT64_MAX);
		FUZZ_CHECK(rec.size >= 8 && rec.pos % 8 == 0);
		FUZZ_CHECK(rec.pos % CAP + rec.size <= CAP);
		if (rec.type != SHMBUS_REC_PAD &&
		    rec.type != SHMBUS_JREC_GAP) {
			FUZZ_CHECK(rec.len <= MAXMSG);
			FUZZ_CHECK(seq == UINT64_MAX || rec.seq > seq);
			seq = rec.seq;
		}
		if (rec.type == SHMBUS_REC_MSG) {
			volatile uint8_t sum = 0;

			for (uint32_t i = 0; i < rec.len; i++)
				sum += rec.data[i];	/* in bounds (ASan) */
			(void)sum;
		}
		last = rec.pos + rec.size;
		FUZZ_CHECK(++n < 100000);
	}
	sb_jreader_close(&r);
}

static int read_one(const struct shmbus_msg *m, void *arg)
{
	volatile uint8_t sum = 0;

	(void)arg;
	FUZZ_CHECK(m->len <= MAXMSG);
	for (uint32_t i = 0; i < m->len; i++)
		sum += ((const uint8_t *)m->data)[i];
	(void)sum;
	return 0;
}

static void replay(enum shmbus_replay_from from, uint64_t at)
{
	shmbus_replay *r = shmbus_replay_open(ch, from, at, NULL);
	uint8_t buf[64];
	int rounds = 0;

	if (!r)
		return;
	for (;;) {
		int n = shmbus_replay_poll(r, read_one, NULL, 97);
		ssize_t k = shmbus_replay_read(r, buf, sizeof(buf), NULL);

		if ((n <= 0 && (k == -EAGAIN || k < 0 ) && k != -EMSGSIZE) ||
		    ++rounds > 10000)
			break;
		if (k == -EMSGSIZE) {
			uint8_t big[MAXMSG];

			k = shmbus_replay_read(r, big, sizeof(big), NULL);
			FUZZ_CHECK(k != -EMSGSIZE);
		}
	}
	FUZZ_CHECK(rounds <= 10000);
	shmbus_replay_close(r);
}

int fuzz_journal_one(const uint8_t *data, size_t size)
{
	char path[256];
	uint8_t how;
	size_t o = 1, flen;
	int fd;

	if (!ch)
		setup();
	restore();
	if (size < 1)
		goto run;
	how = data[0];
	if ((how & 3) == 3) {
		sb_jtix_path(path, sizeof(path), jdir, 2 * SEG);
		flen = ntix[2] * sizeof(tix[2][0]);
	} else {
		sb_jseg_path(path, sizeof(path), jdir, (uint64_t)(how & 3) * SEG);
		flen = SHMBUS_JSEG_HDR + SEG;
	}
	fd = open(path, O_RDWR);
	FUZZ_CHECK(fd >= 0);
	if ((how & 4) && size >= 3) {
		uint16_t t;

		memcpy(&t, data + 1, 2);
		o = 3;
		FUZZ_CHECK(ftruncate(fd, (off_t)t * 8) == 0);
		if ((size_t)t * 8 < flen)
			flen = (size_t)t * 8;
	}
	while (o + 3 <= size && flen) {
		uint16_t off;
		uint8_t n;

		memcpy(&off, data + o, 2);
		n = data[o + 2];
		o += 3;
		if (n > size - o)
			n = (uint8_t)(size - o);
		FUZZ_CHECK(pwrite(fd, data + o, n, (off_t)(off % flen)) ==
			   (ssize_t)n);
		o += n;
	}
	close(fd);
	if (how & 8) {
		sb_jseg_path(path, sizeof(path), jdir, SEG);
		unlink(path);
	}
run:
	read_all(UINT64_MAX);
	read_all(end_pos);
	read_all(SEG + 4096);
	{
		uint64_t pos;

		sb_jtime_find(jdir, 0, &pos);
		sb_jtime_find(jdir, 1000 + (int64_t)SEG, &pos);
		sb_jtime_find(jdir, INT64_MAX, &pos);
	}
	replay(SHMBUS_REPLAY_POSITION, 0);
	replay(SHMBUS_REPLAY_POSITION, SEG + 8);
	replay(SHMBUS_REPLAY_TIME, 1000 + SEG);
	return 0;
}

void fuzz_journal_cleanup(void)
{
	char cmd[160];

	if (ch)
		shmbus_channel_close(ch);
	ch = NULL;
	for (int s = 0; s < NSEG; s++) {
		free(image[s]);
		image[s] = NULL;
		ntix[s] = 0;
	}
	if (dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd)) {
			/* nothing more to do */
		}
	}
}

#ifndef SHMBUS_FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_journal_one(data, size);
}
#endif
