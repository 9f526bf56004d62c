/* SPDX-License-Identifier: MIT */
/*
 * fork.c - what a fork does to the handles it copies.
 *
 * A child's copies of its parent's publishers, subscribers and group
 * members share the parent's slots and positions in shared memory while
 * each copy keeps its own private state: a copy that published would
 * write where the parent writes next (a single producer's head is
 * private), one that read would move the parent's cursor.  So every such
 * handle is listed here, and in the child each one is made to refuse its
 * use with -EPERM (sb_fork_track()'s callback); closing it frees the copy
 * alone, as before.  The list is taken at open and close only; on a
 * message's path, a single producer's copy and a subscriber's are sent to
 * their slow paths by the state the callback leaves (no added test), a
 * multi producer's claim looks at one flag of its handle first.
 *
 * pthread_atfork() handlers run for fork() and what calls it, not for
 * _Fork() nor a clone() of the kernel's: a child made so must not use
 * its parent's handles at all.
 */
#include <pthread.h>

#include "channel.h"

static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sb_forkable handles = { &handles, &handles, NULL };
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* The fork waits for a handle being listed or unlisted, so that the child
 * finds the list whole. */
static void prepare(void)
{
	pthread_mutex_lock(&handles_lock);
}

static void parent(void)
{
	pthread_mutex_unlock(&handles_lock);
}

static void child(void)
{
	for (struct sb_forkable *f = handles.next; f != &handles; f = f->next)
		f->forked(f);
	pthread_mutex_unlock(&handles_lock);
}

static void register_atfork(void)
{
	pthread_atfork(prepare, parent, child);
}

void sb_fork_track(struct sb_forkable *f, void (*forked)(struct sb_forkable *))
{
	pthread_once(&atfork_once, register_atfork);
	f->forked = forked;
	pthread_mutex_lock(&handles_lock);
	f->next = handles.next;
	f->prev = &handles;
	handles.next->prev = f;
	handles.next = f;
	pthread_mutex_unlock(&handles_lock);
}

void sb_fork_untrack(struct sb_forkable *f)
{
	if (!f->forked)
		return;		/* never listed */
	pthread_mutex_lock(&handles_lock);
	f->prev->next = f->next;
	f->next->prev = f->prev;
	pthread_mutex_unlock(&handles_lock);
	f->forked = NULL;
}
