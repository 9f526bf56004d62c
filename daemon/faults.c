/* SPDX-License-Identifier: MIT */
/*
 * faults.c - shmbusd outlives a shared file cut short under it.
 *
 * Any process that holds a channel's or a group's file writable (every
 * subscriber holds the control file so, to move its cursor) can cut it
 * with ftruncate(2).  The next touch of a mapping past the new end faults
 * with SIGBUS (BUS_ADRERR) in whichever thread touched it: the reaper, an
 * agent, the main thread answering a request.  The handler maps an
 * anonymous zero page over the faulting page and returns, so the access
 * is retried and reads zeros, which every reader of shared memory already
 * takes for damage (no magic, nothing committed); what the daemon writes
 * there reaches nobody.  The reaper looks at each channel's files' sizes
 * at each scan, fault or not: files found short are given back their size
 * (so that the channel's clients stop faulting too: what was cut reads as
 * zeros), and the channel is logged and served no more: it is damaged, and
 * an operator deletes and recreates it.  A fault of any other kind keeps
 * the default action.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lib/contract.h"
#include "shmbusd.h"

/* Relaxed: no edge; the reaper reads the count and the address only to
 * know that it should look (the files' sizes are what it acts on). */
static atomic_ulong faults;
static atomic_uintptr_t fault_addr;
_Static_assert(ATOMIC_LONG_LOCK_FREE == 2 && ATOMIC_POINTER_LOCK_FREE == 2,
	       "the handler's atomics are lock free");
static uintptr_t page_sizes[3];

static void default_action(void)
{
	struct sigaction sa = { .sa_handler = SIG_DFL };

	/* Returning re-runs the access, which faults again and ends the
	 * process as it would have without us. */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
}

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	uintptr_t a = (uintptr_t)si->si_addr;
	int saved = errno;

	(void)sig;
	(void)uc;
	if (si->si_code != BUS_ADRERR || !a) {
		default_action();
		return;
	}
	/* A huge-page mapping cannot take a small page inside it (EINVAL):
	 * the sizes are tried from the smallest, a larger one only then, so
	 * that a page never covers another mapping beside the cut one. */
	for (int i = 0; i < 3; i++) {
		void *p = (void *)(a & ~(page_sizes[i] - 1));

		if (mmap(p, page_sizes[i], PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == p) {
			atomic_store_explicit(&fault_addr, a,
					      memory_order_relaxed);
			atomic_fetch_add_explicit(&faults, 1,
						  memory_order_relaxed);
			errno = saved;
			return;
		}
		if (errno != EINVAL)
			break;
	}
	default_action();
	errno = saved;
}

int sbd_faults_setup(void)
{
	struct sigaction sa = { .sa_sigaction = on_sigbus,
				.sa_flags = SA_SIGINFO };

	page_sizes[0] = (uintptr_t)sysconf(_SC_PAGESIZE);
	page_sizes[1] = (uintptr_t)2 << 20;
	page_sizes[2] = (uintptr_t)1 << 30;
	sigemptyset(&sa.sa_mask);
	return sigaction(SIGBUS, &sa, NULL) ? -errno : 0;
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

/* The reaper's thread, for each channel at each scan: whether its files
 * are cut short (they are then given back their size, and the channel is
 * marked damaged, once, with a log line), or were. */
bool sbd_chan_cut(struct sbd_chan *c)
{
	uint64_t ctl, data, had_ctl = 0, had_data = 0;
	int a, b;

	if (atomic_load_explicit(&c->damaged, memory_order_relaxed))
		return true;
	sb_channel_file_sizes(c->ch, &ctl, &data);
	a = mend(c->fd, ctl, &had_ctl, c->name, "control");
	b = mend(c->data_rw, data, &had_data, c->name, "data");
	if (!a && !b)
		return false;
	found++;
	atomic_store_explicit(&c->damaged, true, memory_order_relaxed);
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
	static unsigned long seen, found_seen;
	unsigned long n = atomic_load_explicit(&faults, memory_order_relaxed);

	if (n == seen)
		return;
	seen = n;
	if (found != found_seen) {
		found_seen = found;
		return;
	}
	sbd_log(SBD_WARN, 0, "a shared file was cut short under the daemon "
		"(fault at %#lx), not a channel's: a consumer group's?  That "
		"page now reads as zeros to the daemon",
		(unsigned long)atomic_load_explicit(&fault_addr,
						    memory_order_relaxed));
}
