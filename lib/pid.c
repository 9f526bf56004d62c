/* SPDX-License-Identifier: MIT */
/*
 * pid.c - whether the process a slot names is gone for good.
 *
 * A slot is repaired (its claim padded, its cursor released) only when its
 * process can never touch it again: no such process, or a zombie with no
 * thread left, which has closed everything and never runs again.  A
 * zombie leader with live threads (its main thread called pthread_exit())
 * is alive: those threads may still publish.  A stopped or slow process
 * is alive, and so is one still on its way out.  shmbusd, a producer
 * taking over a role, and a producer releasing what holds it back all ask
 * the same question here, so that they agree on who is dead.
 *
 * Pid reuse: a slot names a pid, and a pid may be given to another process
 * once its owner is dead.  A producer or subscriber slot's owner word, and
 * the single producer's role word, also carry the owner's start tag
 * (layout.h: its start time, from /proc/PID/stat, folded to 24 bits), so
 * that a slot whose pid now names a process of another start is gone
 * (sb_owner_gone()), whatever that process is.  A word without a tag (a
 * consumer group's member, a word written over) is judged by its pid
 * alone, and a pid reused by an unrelated process makes it look alive
 * until that process exits; as is a slot whose pid's start cannot be
 * read (a /proc that hides other users' processes), and any word written
 * or judged by a process whose time namespace offsets the starts it
 * reads (start_shifted()).  Every repair compares the whole word in the
 * CAS that takes the slot, so a verdict is never applied to a slot taken
 * since.  The process that was given the pid must not take a
 * single producer's role that names it for its own: it asks
 * sb_sp_role_gone() (producer.c), which knows the roles its handles hold;
 * of a producer or subscriber slot that names it with no tag, or with
 * its own, sb_slot_gone() or sb_slot_alive(), which know the slots its
 * threads hold (below).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "channel.h"

/* Field `field` (counted as proc(5) counts them, from 3: the state) of a
 * /proc/PID/stat line's part after the name, or NULL. */
static const char *stat_field(const char *p, int field)
{
	for (int f = 3; f < field && p; f++)
		p = strchr(p + 1, ' ');
	return p ? p + 1 : NULL;
}

/* A start time folded to a tag: never 0, which says "no tag". */
static uint32_t tag_of(unsigned long long start)
{
	return (uint32_t)(start % SHMBUS_OWNER_TAG_MAX) + 1;
}

/* What /proc/PID/stat says of pid (PROC_NONE: no such process, or a
 * failure to look); *tag its start tag (0 if not read). */
enum { PROC_NONE, PROC_RUNS, PROC_ZOMBIE_LAST, PROC_ZOMBIE_THREADS };

static int proc_stat(uint32_t pid, uint32_t *tag)
{
	char path[32], buf[512];
	const char *p, *f;
	ssize_t n;
	int fd;

	*tag = 0;
	snprintf(path, sizeof(path), "/proc/%u/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return PROC_NONE;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return PROC_NONE;
	buf[n] = 0;
	p = strrchr(buf, ')');	/* the name may hold anything but this */
	if (!p || p[1] != ' ')
		return PROC_NONE;
	p += 2;
	/* Field 22, starttime. */
	if ((f = stat_field(p, 22)))
		*tag = tag_of(strtoull(f, NULL, 10));
	if (*p != 'Z' && *p != 'X')
		return PROC_RUNS;
	/* Field 20, num_threads: a zombie leader counts itself. */
	f = stat_field(p, 20);
	return f && strtoul(f, NULL, 10) == 1 ? PROC_ZOMBIE_LAST
					       : PROC_ZOMBIE_THREADS;
}

/*
 * Whether the start times this process reads are shifted from everyone
 * else's: /proc/PID/stat gives a start in the reader's time namespace
 * (time_namespaces(7)), which adds its boottime offset.  Tags compare
 * only between processes that read with no offset: a process that would
 * read with one writes no tag and trusts none (the pid alone says who
 * owns a slot).  Its own time namespace and its children's are compared
 * too, as timens_offsets shows the children's.  A kernel without time
 * namespaces shifts nothing; any other failure to look is a shift.
 */
static bool start_shifted(void)
{
	struct stat a, b;
	char buf[256], *p;
	ssize_t n;
	int fd;

	if (stat("/proc/self/ns/time", &a) < 0)
		return errno != ENOENT;
	if (stat("/proc/self/ns/time_for_children", &b) < 0 ||
	    a.st_dev != b.st_dev || a.st_ino != b.st_ino)
		return true;
	fd = open("/proc/self/timens_offsets", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return true;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return true;
	buf[n] = 0;
	/* "boottime <seconds> <nanoseconds>" (or its clock id, 7). */
	for (p = buf; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		long long sec, nsec;
		char clock[16];

		if (sscanf(p, "%15s %lld %lld", clock, &sec, &nsec) == 3 &&
		    (!strcmp(clock, "boottime") || !strcmp(clock, "7")))
			return sec || nsec;
	}
	return true;
}

/* Whether tag, a slot's, names another start than `now`, the start tag
 * of the process that has its pid now. */
static bool other_start(uint32_t tag, uint32_t now)
{
	return tag && now && now != tag && !start_shifted();
}

bool sb_owner_gone_as(uint32_t pid, uint32_t tag)
{
	uint32_t now;
	int st;

	if (pid == 0 || pid > INT32_MAX)
		return true;
	if (kill((pid_t)pid, 0) < 0 && errno == ESRCH)
		return true;
	st = proc_stat(pid, &now);
	/* The process existed a moment ago.  A /proc that hides other
	 * users' processes (hidepid=2) says ENOENT for a live one: it is
	 * gone only if the kernel says so again, and any other failure to
	 * look leaves it alive. */
	if (st == PROC_NONE)
		return errno == ENOENT && kill((pid_t)pid, 0) < 0 &&
		       errno == ESRCH;
	/* Another process than the owner, given its pid. */
	if (other_start(tag, now))
		return true;
	return st == PROC_ZOMBIE_LAST;
}

bool sb_pid_gone(uint32_t pid)
{
	return sb_owner_gone_as(pid, 0);
}

bool sb_owner_gone(uint64_t o)
{
	return sb_owner_gone_as(owner_pid(o), owner_tag(o));
}

bool sb_owner_alive(uint64_t o)
{
	return sb_owner_alive_as(owner_pid(o), owner_tag(o));
}

bool sb_owner_alive_as(uint32_t pid, uint32_t tag)
{
	uint32_t now;

	if (!sb_pid_alive(pid))
		return false;
	return !tag || proc_stat(pid, &now) == PROC_NONE ||
	       !other_start(tag, now);
}

/*
 * The slots this process holds: its publishers' and subscribers' slots,
 * and those its repairs adopted, each named by its channel's data id, its
 * kind and its index (another mapping of the same channel names it the
 * same way).  A slot is listed before the CAS that writes our pid into
 * it and unlisted after the store that takes our pid out, so that while
 * the word names us for our own reasons, every thread of ours finds it
 * listed.  A slot that names our pid and is not listed was left by a dead
 * process whose pid we were given.  Taking such a slot is a CAS from a
 * word naming our pid to another naming it: a thread of ours that took
 * the slot between our verdict and our CAS wrote a word the CAS cannot
 * tell from the dead one's, so the verdict is made again, and the CAS,
 * under held_lock (sb_held_begin(), sb_held_end()).  Should the table
 * run full, every slot that names us counts as ours from then on: the
 * judgement by pid alone, as before it was kept.  A fork's child holds
 * none of its parent's slots: its table starts empty.
 */
#define HELD_MAX	1024

struct held {
	uint64_t data_id;
	uint32_t key;		/* kind << 16 | index */
	uint32_t n;
};

/* sb_self_tag()'s: this process's pid << 32 | its start tag, once read. */
static uint64_t self_tag_word;
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t held_once = PTHREAD_ONCE_INIT;
static struct held held[HELD_MAX];
static unsigned nheld;
static bool held_full;

static void held_prepare(void)
{
	pthread_mutex_lock(&held_lock);
}

static void held_parent(void)
{
	pthread_mutex_unlock(&held_lock);
}

static void held_child(void)
{
	nheld = 0;
	held_full = false;
	store_relaxed64(&self_tag_word, 0);	/* sb_self_tag() */
	pthread_mutex_unlock(&held_lock);
}

static void held_atfork(void)
{
	pthread_atfork(held_prepare, held_parent, held_child);
}

/* This process's start tag, read once per process and kept with its pid
 * in one word, so that every thread writes the same tag once one has read
 * it (a role taken in one thread is given back in another by the same
 * word); a failure to read is not kept, and reads again next time.  A
 * fork's child reads its own: the copy is forgotten in the child
 * (held_child()), for the child of a child may be given the pid of a dead
 * ancestor that read it, whose start is not the child's. */
uint32_t sb_self_tag(void)
{
	uint32_t me = (uint32_t)getpid(), tag;
	/* No edge: the pid and the tag are one word, whole in one load. */
	uint64_t w = load_relaxed64(&self_tag_word);

	if ((uint32_t)(w >> 32) == me)
		return (uint32_t)w;
	pthread_once(&held_once, held_atfork);
	if (proc_stat(me, &tag) == PROC_NONE || tag == 0)
		return 0;
	if (start_shifted())
		tag = 0;
	/* No edge, as above; threads that race store the same word. */
	store_relaxed64(&self_tag_word, (uint64_t)me << 32 | tag);
	return tag;
}

/* Under held_lock. */
static struct held *held_find(uint64_t id, uint32_t key)
{
	for (unsigned k = 0; k < nheld; k++)
		if (held[k].data_id == id && held[k].key == key)
			return &held[k];
	return NULL;
}

void sb_held_add(const struct shmbus_channel *ch, unsigned kind, uint32_t i)
{
	uint32_t key = (uint32_t)kind << 16 | i;
	struct held *e;

	pthread_once(&held_once, held_atfork);
	pthread_mutex_lock(&held_lock);
	if ((e = held_find(ch->data_id, key)))
		e->n++;
	else if (nheld < HELD_MAX)
		held[nheld++] = (struct held){ ch->data_id, key, 1 };
	else
		held_full = true;
	pthread_mutex_unlock(&held_lock);
}

void sb_held_drop(const struct shmbus_channel *ch, unsigned kind, uint32_t i)
{
	uint32_t key = (uint32_t)kind << 16 | i;
	struct held *e;

	pthread_once(&held_once, held_atfork);
	pthread_mutex_lock(&held_lock);
	if ((e = held_find(ch->data_id, key)) && --e->n == 0)
		*e = held[--nheld];
	pthread_mutex_unlock(&held_lock);
}

int sb_held_begin(const struct shmbus_channel *ch, unsigned kind, uint32_t i,
		  uint64_t o)
{
	uint32_t key = (uint32_t)kind << 16 | i;

	if (owner_pid(o) == 0 || owner_pid(o) != (uint32_t)getpid()) {
		sb_held_add(ch, kind, i);
		return 1;
	}
	pthread_once(&held_once, held_atfork);
	pthread_mutex_lock(&held_lock);
	if (held_full || held_find(ch->data_id, key)) {
		pthread_mutex_unlock(&held_lock);
		return 0;	/* a thread of ours holds it */
	}
	if (nheld < HELD_MAX)
		held[nheld++] = (struct held){ ch->data_id, key, 1 };
	else
		held_full = true;
	return 2;		/* held_lock kept until sb_held_end() */
}

void sb_held_end(const struct shmbus_channel *ch, unsigned kind, uint32_t i,
		 int token, bool took)
{
	struct held *e;

	if (token == 1) {
		if (!took)
			sb_held_drop(ch, kind, i);
		return;
	}
	if (token != 2)
		return;
	if (!took && (e = held_find(ch->data_id, (uint32_t)kind << 16 | i)) &&
	    --e->n == 0)
		*e = held[--nheld];
	pthread_mutex_unlock(&held_lock);
}

bool sb_held_here(const struct shmbus_channel *ch, unsigned kind, uint32_t i)
{
	bool mine;

	pthread_once(&held_once, held_atfork);
	pthread_mutex_lock(&held_lock);
	mine = held_full || held_find(ch->data_id, (uint32_t)kind << 16 | i);
	pthread_mutex_unlock(&held_lock);
	return mine;
}

/* A word naming our pid with another process's tag is a dead process's
 * whose pid we were given; one with no tag, or ours, is judged by the list
 * of what our threads hold. */
bool sb_word_is_ours(uint64_t o)
{
	uint32_t pid = owner_pid(o), tag = owner_tag(o);

	return pid != 0 && pid == (uint32_t)getpid() &&
	       (!tag || !sb_self_tag() || tag == sb_self_tag());
}

bool sb_slot_gone(const struct shmbus_channel *ch, unsigned kind, uint32_t i,
		  uint64_t o)
{
	if (sb_word_is_ours(o))
		return !sb_held_here(ch, kind, i);
	return sb_owner_gone(o);
}

bool sb_slot_alive(const struct shmbus_channel *ch, unsigned kind,
		   uint32_t i, uint64_t o)
{
	if (sb_word_is_ours(o))
		return sb_held_here(ch, kind, i);
	return sb_owner_alive(o);
}
