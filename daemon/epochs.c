/* SPDX-License-Identifier: MIT */
/*
 * epochs.c - the replication's epoch history (docs/replication.md).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shmbusd.h"
#include "repl.h"
#include "repl_int.h"
#include "shmbus/layout.h"
#include "../lib/contract.h"

/*
 * state_dir/epochs: one line per (epoch, channel) start, "EPOCH CHANNEL
 * POSITION TAG", appended and fdatasync'd before the first record of the
 * epoch is written in that channel.  TAG (16 hex digits) names the
 * promotion that began the epoch, drawn at random by the host promoted
 * and copied by the hosts that follow it, so that two hosts made primary
 * at one epoch (a promotion forced on each while they were apart) are
 * told apart at link time (repl_accept.c).  Lines without one (written
 * before tags were) match any.  A last line cut short by a crash is cut
 * off at start; any other damage stops the daemon.
 */
struct hist_ent {
	uint64_t epoch, pos;
	uint64_t chan;
	uint64_t tag;		/* 0: not known */
};

static struct hist_ent *hist;
static size_t nhist;
/* The history is appended to by linkers (a new epoch seen) and role
 * changes, and read by handshakes. */
static pthread_mutex_t hist_mu = PTHREAD_MUTEX_INITIALIZER;

static int hist_add_mem(uint64_t epoch, uint64_t chan, uint64_t pos,
			uint64_t tag)
{
	struct hist_ent *g = realloc(hist, (nhist + 1) * sizeof(*hist));

	if (!g)
		return -ENOMEM;
	hist = g;
	hist[nhist++] = (struct hist_ent){ epoch, pos, chan, tag };
	return 0;
}

/* The tag of epoch e's lines, 0 if none has one.  hist_mu held (or
 * loading, before any thread starts).  The lines are in epoch order: a
 * look from the newest stops below e, so that loading a long history and
 * linking stay linear. */
static uint64_t epoch_tag(uint64_t e)
{
	for (size_t i = nhist; i-- > 0 && hist[i].epoch >= e;)
		if (hist[i].epoch == e && hist[i].tag)
			return hist[i].tag;
	return 0;
}

static int mkdirs(const char *path)
{
	char p[PATH_MAX];

	snprintf(p, sizeof(p), "%s", path);
	for (char *s = p + 1; *s; s++)
		if (*s == '/') {
			*s = 0;
			if (mkdir(p, 0700) && errno != EEXIST)
				return -errno;
			/* Held to the rule (rp_hist_load()) before anything
			 * is made in it: a link another user put here would
			 * have the next mkdir() make a directory where it
			 * leads. */
			if (sbd_path_is_ours(p) < 0) {
				errno = EPERM;
				return -EPERM;
			}
			*s = '/';
		}
	if (mkdir(p, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

static size_t count_lines(const char *s, size_t n)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++)
		k += s[i] == '\n';
	return k;
}

/* Decimal digits only, at most 2^62 - 1: no sign, no base, no wrap. */
static const char *parse_u62(const char *s, uint64_t *v)
{
	uint64_t x = 0;

	if (*s < '0' || *s > '9')
		return NULL;
	for (; *s >= '0' && *s <= '9'; s++) {
		x = x * 10 + (uint64_t)(*s - '0');
		if (x >= SB_POS_MAX)
			return NULL;
	}
	*v = x;
	return s;
}

/* Exactly 16 lowercase hex digits, not all 0, to the end of the line. */
static const char *parse_tag(const char *s, uint64_t *v)
{
	uint64_t x = 0;
	int i;

	for (i = 0; i < 16; i++, s++) {
		if (*s >= '0' && *s <= '9')
			x = x << 4 | (uint64_t)(*s - '0');
		else if (*s >= 'a' && *s <= 'f')
			x = x << 4 | (uint64_t)(*s - 'a' + 10);
		else
			return NULL;
	}
	if (*s || !x)
		return NULL;
	*v = x;
	return s;
}

/* One line of the history, "EPOCH CHANNEL POSITION [TAG]", exactly as
 * rp_hist_append() writes it: 0, or -1 for anything else. */
static int hist_parse(const char *line, uint64_t *e, char *name, size_t n,
		      uint64_t *p, uint64_t *tag)
{
	const char *s = parse_u62(line, e), *sp;

	if (!s || *s++ != ' ' || *e == 0 || *e >= RW_EPOCH_MAX)
		return -1;
	sp = strchr(s, ' ');
	if (!sp || (size_t)(sp - s) >= n)
		return -1;
	memcpy(name, s, (size_t)(sp - s));
	name[sp - s] = 0;
	if (!sb_name_ok(name, n - 1))
		return -1;
	s = parse_u62(sp + 1, p);
	if (!s || *p % SHMBUS_REC_ALIGN)
		return -1;
	*tag = 0;
	if (*s == ' ')
		s = parse_tag(s + 1, tag);
	return s && !*s ? 0 : -1;
}

int rp_hist_load(const char *dir, char *why, size_t wn)
{
	char path[PATH_MAX + 16], *text, *line, *save, *nl;
	struct stat st;
	off_t good = 0;
	size_t whole;
	ssize_t r;
	int fd, lineno = 0;

	if (mkdirs(dir)) {
		snprintf(why, wn, "state_dir %s: %s", dir, strerror(errno));
		return -1;
	}
	/* Held to shm_dir's rule (no other user's directory) at every level
	 * and where it resolves (a state_dir linked to a data volume is
	 * common): one that another user could write to would let them put
	 * a link here in place of the history, the host id or the rings'
	 * record, whose files are opened without following links, or the
	 * state_dir itself. */
	if (sbd_path_is_ours(dir) < 0) {
		snprintf(why, wn, "state_dir %s: refused (see above)", dir);
		return -1;
	}
	snprintf(path, sizeof(path), "%s/epochs", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_APPEND | O_NOFOLLOW |
		  O_NONBLOCK, 0600);
	if (fd < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		snprintf(why, wn, "%s: %s", path, fd < 0 && errno == ELOOP ?
			 "a symbolic link, not followed" : fd >= 0 &&
			 !S_ISREG(st.st_mode) ? "not a regular file" :
			 strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	/* One daemon appends to a history: two (one config run twice with
	 * other -d and -S) would each record epochs the other's rings do
	 * not have.  Held until rp_hist_close(). */
	for (int i = 0; i < 20 && flock(fd, LOCK_EX | LOCK_NB) &&
			errno == EWOULDBLOCK; i++)
		usleep(10000);	/* a daemon just killed lets go */
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		snprintf(why, wn, "%s: %s", path, errno == EWOULDBLOCK ?
			 "used by another shmbusd (its state_dir is this "
			 "one's)" : strerror(errno));
		close(fd);
		return -1;
	}
	text = calloc(1, (size_t)st.st_size + 1);
	if (!text) {
		close(fd);
		return -1;
	}
	r = pread(fd, text, (size_t)st.st_size, 0);
	if (r != st.st_size) {
		snprintf(why, wn, "%s: short read", path);
		free(text);
		close(fd);
		return -1;
	}
	/* Whole lines end at the last newline; after it, only the last
	 * append, which a crash may have cut short (some filesystems leave
	 * NUL bytes there).  Read as bytes: a NUL among the whole lines
	 * would end a string early and take the lines after it for one cut
	 * short. */
	nl = memrchr(text, '\n', (size_t)st.st_size);
	whole = nl ? (size_t)(nl - text) + 1 : 0;
	if (memchr(text, 0, whole)) {
		snprintf(why, wn, "%s: a NUL byte at offset %zu: the history "
			 "is damaged; move it aside only if this host's rings "
			 "are to be rebuilt from the peer", path,
			 (size_t)((char *)memchr(text, 0, whole) - text));
		free(text);
		close(fd);
		return -1;
	}
	if (whole < (size_t)st.st_size)
		sbd_log(SBD_WARN, 0, "%s: its last %zu bytes, after line %zu, "
			"are an append a crash cut short; cut off", path,
			(size_t)st.st_size - whole,
			count_lines(text, whole));
	text[whole] = 0;
	for (line = text; *line; line = save) {
		char name[SHMBUS_CTL_NAME];
		uint64_t e, p, tag;

		lineno++;
		nl = strchr(line, '\n');	/* there is one: whole lines */
		*nl = 0;
		save = nl + 1;
		if (hist_parse(line, &e, name, sizeof(name), &p, &tag) ||
		    (nhist && e < hist[nhist - 1].epoch)) {
			snprintf(why, wn, "%s:%d: not 'EPOCH CHANNEL POSITION "
				 "[TAG]' in order (an epoch from 1 to 2^62, a "
				 "channel name, a position below 2^62 and a "
				 "multiple of 8, a tag of 16 hex digits): the "
				 "history is damaged; move it aside only if this "
				 "host's rings are to be rebuilt from the peer",
				 path, lineno);
			free(text);
			close(fd);
			return -1;
		}
		if (tag && epoch_tag(e) && epoch_tag(e) != tag) {
			snprintf(why, wn, "%s:%d: epoch %" PRIu64 " with a "
				 "tag other than its earlier lines': the "
				 "history is damaged; move it aside only if this "
				 "host's rings are to be rebuilt from the peer",
				 path, lineno, e);
			free(text);
			close(fd);
			return -1;
		}
		if (hist_add_mem(e, sbd_name_hash(name), p, tag)) {
			free(text);
			close(fd);
			return -1;
		}
		good = save - text;
	}
	free(text);
	if (good != st.st_size && (ftruncate(fd, good) || fdatasync(fd))) {
		snprintf(why, wn, "%s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	repl.hist_fd = fd;
	for (size_t i = 0; i < nhist; i++)
		if (hist[i].epoch > repl.epoch)
			repl.epoch = hist[i].epoch;
	return 0;
}

/* Appends (epoch, channel, pos, tag), and raises the host's epoch to it;
 * tag 0: the epoch's, if any line of it has one; sync: fdatasync now.
 * 0, -EIO, -ESTALE for an epoch older than the newest recorded, or
 * -EXDEV for a tag other than the one the epoch has here. */
int rp_hist_append(uint64_t epoch, uint64_t tag, const struct rchan *rc,
		   uint64_t pos, bool sync)
{
	char line[SHMBUS_CTL_NAME + 96];
	uint64_t have;
	int n, rc2;

	pthread_mutex_lock(&hist_mu);
	/* The file's epochs never go down (rp_hist_load() takes that for
	 * damage): a channel's linker that checked an older frame's epoch
	 * while another's recorded a newer one is refused here. */
	if (nhist && epoch < hist[nhist - 1].epoch) {
		uint64_t newest = hist[nhist - 1].epoch;

		pthread_mutex_unlock(&hist_mu);
		sbd_log(SBD_WARN, 0, "epoch history: epoch %" PRIu64 " of %s "
			"is older than the newest recorded (%" PRIu64 "): "
			"refused", epoch, rc->name, newest);
		return -ESTALE;
	}
	/* One promotion begins an epoch: a channel that hears of it from
	 * another (two hosts primary at one epoch) is refused here. */
	have = epoch_tag(epoch);
	if (tag && have && tag != have) {
		pthread_mutex_unlock(&hist_mu);
		sbd_log(SBD_ERR, 0, "epoch history: epoch %" PRIu64 " of %s "
			"comes from promotion %016" PRIx64 ", this host's "
			"other channels from %016" PRIx64 ": two hosts were "
			"primary at that epoch; refused", epoch, rc->name, tag,
			have);
		return -EXDEV;
	}
	if (!tag)
		tag = have;
	if (tag)
		n = snprintf(line, sizeof(line), "%" PRIu64 " %s %" PRIu64
			     " %016" PRIx64 "\n", epoch, rc->name, pos, tag);
	else
		n = snprintf(line, sizeof(line), "%" PRIu64 " %s %" PRIu64
			     "\n", epoch, rc->name, pos);
	if (write(repl.hist_fd, line, (size_t)n) != n ||
	    (sync && fdatasync(repl.hist_fd))) {
		pthread_mutex_unlock(&hist_mu);
		sbd_log(SBD_ERR, errno, "epoch history: cannot append epoch "
			"%" PRIu64 " of %s", epoch, rc->name);
		return -EIO;
	}
	rc2 = hist_add_mem(epoch, rc->id, pos, tag);
	/* The host's epoch, under the same lock: it never goes down. */
	if (epoch > LOAD(&repl.epoch))
		STORE(&repl.epoch, epoch);
	pthread_mutex_unlock(&hist_mu);
	return rc2;
}

uint64_t rp_hist_tag(uint64_t e)
{
	uint64_t tag;

	pthread_mutex_lock(&hist_mu);
	tag = epoch_tag(e);
	pthread_mutex_unlock(&hist_mu);
	return tag;
}

uint64_t rp_new_tag(void)
{
	uint64_t tag = 0;

	while (!tag)
		if (getrandom(&tag, sizeof(tag), 0) != (ssize_t)sizeof(tag)) {
			if (errno != EINTR)
				return 0;
			tag = 0;
		}
	return tag;
}

/* Whether the channel has an entry for epoch e. */
bool rp_hist_has(uint64_t e, uint64_t chan)
{
	bool found = false;

	pthread_mutex_lock(&hist_mu);
	for (size_t i = 0; i < nhist && !found; i++)
		found = hist[i].epoch == e && hist[i].chan == chan;
	pthread_mutex_unlock(&hist_mu);
	return found;
}

uint64_t rp_hist_last(uint64_t chan)
{
	uint64_t e = 0;

	pthread_mutex_lock(&hist_mu);
	for (size_t i = 0; i < nhist; i++)
		if (hist[i].chan == chan && hist[i].epoch > e)
			e = hist[i].epoch;
	pthread_mutex_unlock(&hist_mu);
	return e;
}

uint64_t rp_hist_next_start(uint64_t e, uint64_t chan)
{
	uint64_t pos = UINT64_MAX;

	pthread_mutex_lock(&hist_mu);
	for (size_t i = 0; i < nhist && pos == UINT64_MAX; i++)
		if (hist[i].epoch > e && hist[i].chan == chan)
			pos = hist[i].pos;
	pthread_mutex_unlock(&hist_mu);
	return pos;
}

void rp_hist_close(void)
{
	free(hist);
	hist = NULL;
	nhist = 0;
	if (repl.hist_fd >= 0)
		close(repl.hist_fd);
	repl.hist_fd = -1;
}
