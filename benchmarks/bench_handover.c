/* SPDX-License-Identifier: MIT */
/*
 * bench_handover.c - the regime in which a subscriber has caught up with
 * its producer, measured on its own: one batch of 32 messages written by
 * the producer process, read (each message copied out) by the subscriber
 * process and acknowledged, and only then the next.  Every line of a batch
 * crosses from one cache to the other while the other side waits, and
 * nothing overlaps: what a subscriber that catches up pays per batch.
 *
 * Baseline: the plain copy, records of shmbus's size (a 16-byte header,
 * the payload padded to 8) written into a shared 4 MiB ring of slots, a
 * count published each way.  The two take turns in blocks of HO_BLOCK
 * batches between the same two processes, so that both see the same
 * placement of the two vCPUs (timed one after the other, their ratio moves
 * with the placement by a factor of two or more).  The producer records
 * the round trip and its own part (the writes; for shmbus,
 * shmbus_publish_batch()), in ns, and the table shows p50*.
 *
 * Producer on CPU 0, subscriber on CPU 1.
 *
 *   bench_handover [-q]      -q: a quick run (CI checks that it runs)
 *
 * Results also go to benchmarks/results/handover.csv.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "hist.h"
#include "shmbus.h"
#include "tp.h"

/* Batches in a row of one kind before the hand-over switches to the other. */
#define HO_BLOCK 500

struct shared {
	_Alignas(64) _Atomic int ready;
	_Alignas(64) _Atomic uint64_t head;	/* plain: batches written */
	_Alignas(64) _Atomic uint64_t tail;	/* both: batches read */
	char dir[64];
};

static struct shared *sh;
static uint8_t *ring;		/* the plain copy's slots, shared */
static uint8_t *src, *dst;	/* private */

struct handover {
	double write[2], rt[2];	/* p50*, ns per batch; [1]: shmbus */
};

/*
 * The plain copy (even blocks) and shmbus (odd blocks) taking turns in
 * blocks of HO_BLOCK batches between the same two processes.  n: batches
 * of each.
 */
static struct handover run_handover(size_t size, uint64_t n)
{
	size_t rec = tp_rec_bytes(size);
	struct handover r = { { 0, 0 }, { 0, 0 } };
	struct hist hw[2], hr[2];
	struct iovec iov[TP_BATCH];
	shmbus_channel *ch;
	shmbus_pub *pub;
	uint64_t off = 0, i;
	pid_t pid;

	if (!(ch = tp_channel(sh->dir, SHMBUS_SINGLE_PRODUCER)))
		return r;
	atomic_store(&sh->head, 0);
	atomic_store(&sh->tail, 0);
	atomic_store(&sh->ready, 0);
	pid = bh_fork();
	if (pid == 0) {
		shmbus_channel *c = shmbus_channel_open(sh->dir, "tp");
		shmbus_sub *sub = c ? shmbus_sub_open(c, NULL) : NULL;
		struct tp_count got = { dst, 0 };

		if (!sub)
			_exit(2);
		bh_pin(1);
		atomic_store(&sh->ready, 1);
		for (i = 1; i <= 2 * n; i++) {
			if ((i - 1) / HO_BLOCK % 2 == 0) {
				/* Acquire: pairs with the release of head. */
				while (atomic_load_explicit(&sh->head,
					memory_order_acquire) != i)
					_mm_pause();
				for (int k = 0; k < TP_BATCH; k++) {
					if (off + rec > TP_RING)
						off = 0;
					memcpy(dst, ring + off + 16, size);
					off += rec;
				}
			} else {
				uint64_t want = got.got + TP_BATCH;

				while (got.got < want)
					if (shmbus_poll(sub, tp_copy_out, &got,
							0) < 0)
						_exit(3);
			}
			/* Release: pairs with the producer's acquire; the
			 * batch's lines have been read. */
			atomic_store_explicit(&sh->tail, i,
					      memory_order_release);
		}
		_exit(0);
	}
	struct shmbus_pub_attr pa = { .timeout_ns = -1 };

	pub = shmbus_pub_open(ch, &pa);
	bh_pin(0);
	for (int k = 0; k < TP_BATCH; k++) {
		iov[k].iov_base = src + (size_t)k * 64;
		iov[k].iov_len = size;
	}
	for (int m = 0; m < 2; m++) {
		hist_init(&hw[m]);
		hist_init(&hr[m]);
	}
	while (!atomic_load(&sh->ready))
		_mm_pause();
	for (i = 1; i <= 2 * n && pub; i++) {
		int m = (i - 1) / HO_BLOCK % 2;
		uint64_t t0 = bh_ticks(), t1;

		if (m == 0) {
			for (uint64_t k = 0; k < TP_BATCH; k++) {
				if (off + rec > TP_RING)
					off = 0;
				memcpy(ring + off, &i, 8);
				memcpy(ring + off + 8, &k, 8);
				memcpy(ring + off + 16, src, size);
				off += rec;
			}
			/* Release: the batch's records are written. */
			atomic_store_explicit(&sh->head, i,
					      memory_order_release);
		} else if (shmbus_publish_batch(pub, iov, TP_BATCH) != TP_BATCH)
			break;
		t1 = bh_ticks();
		/* Acquire: pairs with the subscriber's release of tail; it has
		 * read the batch before we write over its lines. */
		while (atomic_load_explicit(&sh->tail, memory_order_acquire)
		       != i)
			_mm_pause();
		if ((i - 1) % HO_BLOCK >= HO_BLOCK / 5) {	/* warm-up */
			hist_record(&hw[m], (uint64_t)((double)(t1 - t0) *
						       bh_ns_per_tick()));
			hist_record(&hr[m], (uint64_t)((double)(bh_ticks() -
							       t0) *
						       bh_ns_per_tick()));
		}
	}
	if (i <= 2 * n)	/* stopped early: the subscriber waits for more */
		kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	for (int m = 0; m < 2; m++) {
		r.write[m] = hist_percentile_step(&hw[m], 50,
						  bh_clock_step_ns());
		r.rt[m] = hist_percentile_step(&hr[m], 50, bh_clock_step_ns());
	}
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	tp_unlink(sh->dir);
	return r;
}

int main(int argc, char **argv)
{
	static const size_t sizes[] = { 32, 256, 1024 };
	int quick = argc > 1 && !strcmp(argv[1], "-q");
	uint64_t n = quick ? 20000 : 200000;
	long probe = quick ? 5000 : 50000;
	/* A quick run's figures are not results: no file. */
	FILE *csv = quick ? NULL : bh_result_file("handover.csv");

	sh = bh_shared(sizeof(*sh));
	ring = bh_shared(TP_RING);
	src = malloc(TP_BATCH * 64 + TP_MAX_SIZE);
	dst = malloc(TP_MAX_SIZE);
	if (!sh || !ring || !src || !dst ||
	    sysconf(_SC_NPROCESSORS_ONLN) < 2) {
		fprintf(stderr, "bench_handover: needs two CPUs and memory\n");
		return 1;
	}
	memset(src, 0x5a, TP_BATCH * 64 + TP_MAX_SIZE);
	memset(ring, 0, TP_RING);
	bh_calibrate();
	if (csv)
		fprintf(csv, "bytes,plain_write_ns,plain_rt_ns,shmbus_write_ns,"
			     "shmbus_rt_ns,floor_before_ns,floor_after_ns\n");
	printf("# a batch of %d handed over while the other side waits: "
	       "written, read (copied out) by the other\n# process, "
	       "acknowledged.  ns per batch, p50*: the writer's part and the "
	       "round trip.  plain and shmbus take\n# turns in blocks of %d "
	       "batches between the same two processes\n", TP_BATCH, HO_BLOCK);
	printf("%6s %9s %9s %9s %9s %7s  %s\n", "bytes", "plain", "", "shmbus",
	       "", "ratio", "floor");
	printf("%6s %9s %9s %9s %9s %7s\n", "", "write", "rt", "write", "rt",
	       "rt");
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint64_t f0 = bh_floor_p50(probe), f1;
		struct handover h = run_handover(sizes[i], n);

		f1 = bh_floor_p50(probe);
		printf("%6zu %9.0f %9.0f %9.0f %9.0f %7.2f  %llu/%llu%s\n",
		       sizes[i], h.write[0], h.rt[0], h.write[1], h.rt[1],
		       h.rt[1] / h.rt[0], (unsigned long long)f0,
		       (unsigned long long)f1,
		       bh_moved(f0, f1) ? "  placement changed" : "");
		if (csv)
			fprintf(csv, "%zu,%.0f,%.0f,%.0f,%.0f,%llu,%llu\n",
				sizes[i], h.write[0], h.rt[0], h.write[1],
				h.rt[1], (unsigned long long)f0,
				(unsigned long long)f1);
	}
	if (csv)
		fclose(csv);
	return 0;
}
