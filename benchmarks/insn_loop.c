/* SPDX-License-Identifier: MIT */
/*
 * insn_loop.c - instructions per message, for `make bench-insn`.
 *
 * One process, one single-producer block channel: empty polls, then N
 * times a 32-byte message sent and taken, either zero-copy (zc: claim, a
 * 32-byte memcpy, commit, a one-message poll) or copied (copy: publish,
 * read).  Run under callgrind at two values of N, the difference divided
 * by the difference of N is what one message costs both sides, start-up
 * and tear-down excluded.
 *
 *   insn_loop N [zc|copy]
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmbus.h"

static int count(const struct shmbus_msg *m, void *arg)
{
	(void)m;
	++*(long *)arg;
	return 0;
}

int main(int argc, char **argv)
{
	char dir[] = "/dev/shm/shmbus-insn-XXXXXX", msg[32] = "thirty-two bytes";
	struct shmbus_channel_attr a;
	shmbus_channel *ch;
	shmbus_pub *pub;
	shmbus_sub *sub;
	long n = argc > 1 ? atol(argv[1]) : 0, got = 0;
	bool copy = argc > 2 && !strcmp(argv[2], "copy");
	char rb[64];
	int first;
	void *buf;

	if (n <= 0 || (argc > 2 && !copy && strcmp(argv[2], "zc")) ||
	    !mkdtemp(dir)) {
		fprintf(stderr, "usage: insn_loop N [zc|copy] (N > 0; needs "
				"/dev/shm)\n");
		return 2;
	}
	shmbus_channel_attr_init(&a);
	a.capacity = 1u << 20;
	ch = shmbus_channel_create(dir, "insn", &a, SHMBUS_CREATE_EXCL);
	pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	sub = ch ? shmbus_sub_open(ch, NULL) : NULL;
	/* Empty polls first: a subscriber that found no message in a window
	 * of 64 empty looks (MBOX_WINDOW in lib/subscribe.c) waits on the
	 * mailbox, and then takes each message from it, as in a ping-pong.
	 * Without them, every poll finds a message, and the subscriber reads
	 * the ring, as in a stream. */
	first = 0;
	for (int i = 0; i < 100; i++)
		first |= sub ? shmbus_poll(sub, count, &got, 1) : -1;
	for (long i = 0; pub && sub && i < n; i++) {
		if (copy) {
			if (shmbus_publish(pub, msg, sizeof(msg)))
				break;
			got += shmbus_read(sub, rb, sizeof(rb), NULL) ==
			       (ssize_t)sizeof(msg);
			continue;
		}
		if (shmbus_claim(pub, sizeof(msg), &buf))
			break;
		memcpy(buf, msg, sizeof(msg));
		shmbus_commit(pub);
		shmbus_poll(sub, count, &got, 1);
	}
	shmbus_sub_close(sub);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_channel_unlink(dir, "insn");
	rmdir(dir);
	if (first != 0 || got != n) {
		fprintf(stderr, "insn_loop: %ld of %ld messages\n", got, n);
		return 1;
	}
	return 0;
}
