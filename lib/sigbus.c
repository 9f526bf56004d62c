/* SPDX-License-Identifier: MIT */
/*
 * sigbus.c - a process that only inspects shared files (shmbusd, busstat)
 * outlives one cut short under it.
 *
 * Any process that holds a channel's or a group's file writable can cut it
 * with ftruncate(2); the next touch of a mapping past the new end faults
 * with SIGBUS (BUS_ADRERR).  The handler maps an anonymous zero page over
 * the faulting page and returns, so that the access is retried and reads
 * zeros, which every reader of shared memory takes for damage (no magic,
 * nothing committed).  What the process writes there afterwards reaches
 * nobody: hence for the daemon, which marks such a channel damaged and
 * stops serving it (daemon/faults.c), and the tools, which only read; never
 * for a producer, whose messages would be lost without a word.  A fault of
 * any other kind keeps the default action.  Only shmbusd and the tools call
 * these, through contract.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "contract.h"

/* Relaxed: no edge; readers of the count and the address only learn that
 * they should look (what they act on is the files themselves). */
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

int sb_sigbus_guard(void)
{
	struct sigaction sa = { .sa_sigaction = on_sigbus,
				.sa_flags = SA_SIGINFO };

	page_sizes[0] = (uintptr_t)sysconf(_SC_PAGESIZE);
	page_sizes[1] = (uintptr_t)2 << 20;
	page_sizes[2] = (uintptr_t)1 << 30;
	sigemptyset(&sa.sa_mask);
	return sigaction(SIGBUS, &sa, NULL) ? -errno : 0;
}

unsigned long sb_sigbus_faults(uintptr_t *last_addr)
{
	if (last_addr)
		*last_addr = atomic_load_explicit(&fault_addr,
						  memory_order_relaxed);
	return atomic_load_explicit(&faults, memory_order_relaxed);
}
