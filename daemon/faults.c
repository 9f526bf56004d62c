/* SPDX-License-Identifier: MIT */
/*
 * faults.c - shmbusd outlives a shared file cut short under it.
 *
 * Any process that holds a channel's or a group's file writable (every
 * subscriber holds the control file so, to move its cursor) can cut it
 * with ftruncate(2).  The next touch of a mapping past the new end faults
 * with SIGBUS (BUS_ADRERR) in whichever thread touched it: the reaper, an
 * agent, the main thread answering a request.  The library's handler
 * (lib/sigbus.c) maps a page of zeros there, which every reader of shared
 * memory takes for damage; what the daemon writes there reaches nobody.
 * The reaper looks at each channel's files' sizes
 * every 100 ms, and at the scan after any fault: files found short are
 * given back their size
 * (so that the channel's clients stop faulting too: what was cut reads as
 * zeros), and the channel is logged and served no more: it is damaged, and
 * an operator deletes and recreates it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lib/contract.h"
#include "shmbusd.h"

int sbd_faults_setup(void)
{
	return sb_sigbus_guard();
}

/* Gives the file behind fd back its size: 1 if it was short, 0 if not,
 * -errno if it cannot tell or mend.  A file made longer faults nobody but
 * would be set aside as corrupt at the next start: it is cut back, with a
 * warning (name, which: for it). */
static int mend(int fd, uint64_t size, uint64_t *had, const char *name,
		const char *which)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	*had = (uint64_t)st.st_size;
	if (*had > size) {
		int err = ftruncate(fd, (off_t)size) < 0 ? errno : 0;

		sbd_log(SBD_WARN, err, "%s: its %s file was made %llu bytes "
			"long by a process that holds it writable; %s %llu",
			name, which, (unsigned long long)*had,
			err ? "could not cut it back to" : "cut back to",
			(unsigned long long)size);
		return 0;
	}
	if (*had == size)
		return 0;
	return ftruncate(fd, (off_t)size) < 0 ? -errno : 1;
}

static unsigned long found;

/* How often each channel's files are looked at: two fstat(2) a channel,
 * which at every 20 ms scan of 2000 channels took a third of a core. */
#define CUT_CHECK_NS	INT64_C(100000000)

/* The reaper's thread, for each channel at each scan: whether its files
 * are cut short (they are then given back their size, and the channel is
 * marked damaged, once, with a log line), or were.  The files are looked
 * at every CUT_CHECK_NS, and at the scan after a fault (the SIGBUS guard
 * took it; sbd_faults_check() logs one no channel explains). */
bool sbd_chan_cut(struct sbd_chan *c)
{
	uint64_t ctl, data, had_ctl = 0, had_data = 0;
	int64_t now;
	int a, b;

	if (atomic_load_explicit(&c->damaged, memory_order_relaxed))
		return true;
	now = sb_now_ns();
	if (now - c->cut_checked_ns < CUT_CHECK_NS &&
	    sb_sigbus_faults(NULL) == c->cut_faults)
		return false;
	c->cut_checked_ns = now;
	c->cut_faults = sb_sigbus_faults(NULL);
	sb_channel_file_sizes(c->ch, &ctl, &data);
	a = mend(c->fd, ctl, &had_ctl, c->name, "control");
	b = mend(c->data_rw, data, &had_data, c->name, "data");
	if (!a && !b)
		return false;
	found++;
	atomic_store_explicit(&c->damaged, true, memory_order_relaxed);
	/* Whoever opens the files after (busstat, a direct-mode process, the
	 * next daemon) finds them invalid, not a channel with zeros. */
	sb_channel_mark_damaged(c->ch);
	sbd_log(SBD_ERR, a < 0 ? -a : b < 0 ? -b : 0, "%s: its %s file was "
		"cut to %llu bytes of %llu by a process that holds it "
		"writable; %s; the channel is damaged and no longer served: "
		"delete and recreate it", c->name, a ? "control" : "data",
		(unsigned long long)(a ? had_ctl : had_data),
		(unsigned long long)(a ? ctl : data),
		a < 0 || b < 0 ? "its size could not be given back" :
		"its size is given back (what was cut reads as zeros)");
	return true;
}

/* The reaper's thread, after each scan: a fault that no channel's files
 * explain is logged too. */
void sbd_faults_check(void)
{
	static unsigned long seen, found_then;
	static bool pending;
	uintptr_t addr;
	unsigned long n = sb_sigbus_faults(&addr);

	if (n == seen)
		return;
	/* A scan later: the next scan looks at every channel's files
	 * (sbd_chan_cut() after a fault), and finds the one cut, if any. */
	if (!pending) {
		pending = true;
		found_then = found;
		return;
	}
	pending = false;
	seen = n;
	if (found != found_then)
		return;
	sbd_log(SBD_WARN, 0, "a shared file was cut short under the daemon "
		"(fault at %#lx), not a channel's: a consumer group's?  That "
		"page now reads as zeros to the daemon", (unsigned long)addr);
}
