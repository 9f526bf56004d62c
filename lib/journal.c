/* SPDX-License-Identifier: MIT */
/*
 * journal.c - a channel's journal as files: segment headers, sealed
 * records, listing, and a checking reader (journal.h).  Every byte read
 * from a file is untrusted: a header is checked before its fields are
 * used, a record before its length is.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "channel.h"
#include "contract.h"
#include "journal.h"

SHMBUS_STATIC_ASSERT(SHMBUS_JREC_GAP == SHMBUS_REC_GAP,
		     "the journal writes the ring's GAP records as they are");

#define READ_CHUNK	(1u << 20)

int sb_jgeom_make(struct sb_jgeom *g, const char *channel, uint64_t seg_size,
		  uint64_t capacity, uint32_t max_msg, uint32_t flags,
		  char *why, size_t n)
{
	if (seg_size & (seg_size - 1) || seg_size < SHMBUS_JSEG_MIN ||
	    seg_size > SHMBUS_JSEG_MAX || seg_size < capacity) {
		snprintf(why, n, "segment size %llu: a power of two from "
			 "64 KiB to 1 GiB, and at least the capacity (%llu)",
			 (unsigned long long)seg_size,
			 (unsigned long long)capacity);
		return -EINVAL;
	}
	memset(g, 0, sizeof(*g));
	g->seg_size = seg_size;
	g->capacity = capacity;
	g->max_msg = max_msg;
	g->flags = flags;
	snprintf(g->channel, sizeof(g->channel), "%s", channel);
	return 0;
}

int sb_jseg_path(char *buf, size_t n, const char *dir, uint64_t base)
{
	int k = snprintf(buf, n, "%s/%016llx.seg", dir,
			 (unsigned long long)base);

	return k < 0 || (size_t)k >= n ? -ENAMETOOLONG : 0;
}

int sb_jtix_path(char *buf, size_t n, const char *dir, uint64_t base)
{
	int k = snprintf(buf, n, "%s/%016llx.tix", dir,
			 (unsigned long long)base);

	return k < 0 || (size_t)k >= n ? -ENAMETOOLONG : 0;
}

static uint32_t hdr_crc(const struct shmbus_jseg_hdr *h)
{
	return sb_crc32c(0, h, offsetof(struct shmbus_jseg_hdr, crc));
}

void sb_jseg_hdr_make(struct shmbus_jseg_hdr *h, const struct sb_jgeom *g,
		      uint64_t base, uint64_t start, uint64_t epoch)
{
	struct timespec ts;

	memset(h, 0, sizeof(*h));
	clock_gettime(CLOCK_REALTIME, &ts);
	h->magic = SHMBUS_JSEG_MAGIC;
	h->version = SHMBUS_JSEG_VERSION;
	h->hdr_size = SHMBUS_JSEG_HDR;
	h->base = base;
	h->seg_size = g->seg_size;
	h->start = start;
	h->capacity = g->capacity;
	h->max_msg = g->max_msg;
	h->flags = g->flags;
	h->epoch = epoch;
	h->create_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	memcpy(h->channel, g->channel, sizeof(h->channel));
	h->hflags = SHMBUS_JSEG_F_MARKS_GAPS;
	h->crc = hdr_crc(h);
}

void sb_jseg_hdr_set_prev_seq(struct shmbus_jseg_hdr *h, uint64_t prev_seq)
{
	h->prev_seq = prev_seq;
	h->hflags |= SHMBUS_JSEG_F_PREV_SEQ;
	h->crc = hdr_crc(h);
}

void sb_jseg_hdr_set_after_gap(struct shmbus_jseg_hdr *h)
{
	h->hflags |= SHMBUS_JSEG_F_AFTER_GAP;
	h->crc = hdr_crc(h);
}

int sb_jseg_hdr_check(const struct shmbus_jseg_hdr *h,
		      const struct sb_jgeom *g, uint64_t base, char *why,
		      size_t n)
{
	if (h->magic != SHMBUS_JSEG_MAGIC) {
		snprintf(why, n, "not a journal segment (magic %016llx)",
			 (unsigned long long)h->magic);
		return -EBADMSG;
	}
	if (h->crc != hdr_crc(h)) {
		snprintf(why, n, "header checksum %08x, computed %08x: "
			 "damaged", h->crc, hdr_crc(h));
		return -EBADMSG;
	}
	if (h->version < 1 || h->version > SHMBUS_JSEG_VERSION ||
	    h->hdr_size != SHMBUS_JSEG_HDR) {
		snprintf(why, n, "format version %u (header %u bytes); this "
			 "build reads versions 1 to %u", h->version,
			 h->hdr_size, SHMBUS_JSEG_VERSION);
		return -EBADMSG;
	}
	if (h->seg_size & (h->seg_size - 1) || h->seg_size < SHMBUS_JSEG_MIN ||
	    h->seg_size > SHMBUS_JSEG_MAX || h->base & (h->seg_size - 1) ||
	    h->start < h->base || h->start - h->base >= h->seg_size ||
	    h->start % SHMBUS_REC_ALIGN || h->capacity < SHMBUS_MIN_CAPACITY ||
	    h->capacity > h->seg_size || h->capacity & (h->capacity - 1) ||
	    h->max_msg > SHMBUS_MAX_MSG_LIMIT ||
	    memchr(h->channel, 0, sizeof(h->channel)) == NULL) {
		snprintf(why, n, "impossible geometry (base %llu, start %llu, "
			 "segment %llu, capacity %llu, max_msg %u)",
			 (unsigned long long)h->base,
			 (unsigned long long)h->start,
			 (unsigned long long)h->seg_size,
			 (unsigned long long)h->capacity, h->max_msg);
		return -EBADMSG;
	}
	/* The name is shown to operators (shmbusctl journal): one that no
	 * channel can have is damage, not text for their terminal. */
	if (!sb_name_ok(h->channel, sizeof(h->channel) - 1)) {
		snprintf(why, n, "a channel name that no channel can have");
		return -EBADMSG;
	}
	/* Zeros where a header of an older release had reserved bytes. */
	if (h->hflags & ~SHMBUS_JSEG_F_ALL ||
	    (!(h->hflags & SHMBUS_JSEG_F_PREV_SEQ) && h->prev_seq) ||
	    (h->prev_seq != UINT64_MAX &&
	     h->prev_seq >= SHMBUS_JSEG_SEQ_LIMIT)) {
		snprintf(why, n, "impossible header flags %#x or sequence "
			 "number %llu before the segment", h->hflags,
			 (unsigned long long)h->prev_seq);
		return -EBADMSG;
	}
	if (g && (strcmp(h->channel, g->channel) ||
		  h->seg_size != g->seg_size || h->capacity != g->capacity ||
		  h->max_msg != g->max_msg || h->flags != g->flags)) {
		snprintf(why, n, "belongs to channel '%s' (segment %llu, "
			 "capacity %llu, max_msg %u, flags %#x), not to '%s' "
			 "(segment %llu, capacity %llu, max_msg %u, flags %#x)",
			 h->channel, (unsigned long long)h->seg_size,
			 (unsigned long long)h->capacity, h->max_msg, h->flags,
			 g->channel, (unsigned long long)g->seg_size,
			 (unsigned long long)g->capacity, g->max_msg, g->flags);
		return -EXDEV;
	}
	if (base != UINT64_MAX && h->base != base) {
		snprintf(why, n, "covers %llu, named for %llu",
			 (unsigned long long)h->base, (unsigned long long)base);
		return -EXDEV;
	}
	return 0;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

static uint32_t rec_crc(uint64_t pos, uint32_t low, const uint8_t *rec,
			uint32_t type, uint32_t len)
{
	uint8_t head[12];
	uint32_t crc;

	memcpy(head, &pos, 8);
	memcpy(head + 8, &low, 4);
	crc = sb_crc32c(0, head, sizeof(head));
	if (type == SHMBUS_REC_MSG || type == SHMBUS_REC_SKIP)
		crc = sb_crc32c(crc, rec + 8, 8 + (size_t)len);
	return crc;
}

void sb_jrec_seal(uint8_t *rec, uint64_t pos)
{
	uint64_t w = get64(rec);
	uint32_t low = (uint32_t)w;

	w = (uint64_t)rec_crc(pos, low, rec, word_type(w), word_len(w)) << 32 |
	    low;
	memcpy(rec, &w, 8);
}

int sb_jrec_check(const struct sb_jgeom *g, uint64_t pos, const uint8_t *p,
		  size_t avail, uint64_t *seq, struct sb_jrec *r, char *why,
		  size_t n)
{
	uint64_t w, size, in_ring = pos & (g->capacity - 1), s;
	bool word_only;
	uint32_t type, len;

	if (avail < 8)
		return -EAGAIN;
	w = get64(p);
	if (!w) {
		snprintf(why, n, "nothing written at %llu",
			 (unsigned long long)pos);
		return 0;
	}
	type = word_type(w);
	len = word_len(w);
	word_only = type_word_only(type);
	if (word_only) {
		size = SHMBUS_REC_ALIGN + (uint64_t)len;
		if (len % SHMBUS_REC_ALIGN) {
			snprintf(why, n, "%s at %llu: length %u",
				 type == SHMBUS_JREC_GAP ? "gap" : "padding",
				 (unsigned long long)pos, len);
			return 0;
		}
	} else if (type == SHMBUS_REC_MSG || type == SHMBUS_REC_SKIP) {
		if (len > g->max_msg) {
			snprintf(why, n, "record at %llu: length %u over "
				 "max_msg %u", (unsigned long long)pos, len,
				 g->max_msg);
			return 0;
		}
		size = rec_size(len);
	} else {
		snprintf(why, n, "record at %llu: type %u",
			 (unsigned long long)pos, type);
		return 0;
	}
	/* A ring record never crosses the ring's end, nor (seg_size being a
	 * multiple of capacity) a segment's. */
	if (in_ring + size > g->capacity) {
		snprintf(why, n, "record at %llu: %llu bytes cross the "
			 "ring's end", (unsigned long long)pos,
			 (unsigned long long)size);
		return 0;
	}
	if (!word_only && (size > avail || avail < 16))
		return -EAGAIN;
	if ((uint32_t)(w >> 32) != rec_crc(pos, (uint32_t)w, p, type, len)) {
		snprintf(why, n, "record at %llu: checksum %08x, computed "
			 "%08x", (unsigned long long)pos, (uint32_t)(w >> 32),
			 rec_crc(pos, (uint32_t)w, p, type, len));
		return 0;
	}
	s = word_only ? 0 : get64(p + 8);
	if (!word_only) {
		if (*seq != UINT64_MAX && s <= *seq) {
			snprintf(why, n, "record at %llu: sequence %llu after "
				 "%llu", (unsigned long long)pos,
				 (unsigned long long)s,
				 (unsigned long long)*seq);
			return 0;
		}
		*seq = s;
	}
	*r = (struct sb_jrec){ .pos = pos, .size = size, .seq = s,
			       .type = type, .len = len,
			       .data = type == SHMBUS_REC_MSG ? p + 16 : NULL };
	return 1;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int sb_jlist(const char *dir, uint64_t **bases, size_t *count)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	uint64_t *v = NULL;
	size_t k = 0, cap = 0;

	*bases = NULL;
	*count = 0;
	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		uint64_t b;

		/* Exactly 16 lower-case hex digits and ".seg", as
		 * sb_jseg_path() names them: %llx alone would take "0x",
		 * a sign or spaces, and name another file. */
		if (sb_hex_digits(e->d_name, 16, &b) != 16 ||
		    strcmp(e->d_name + 16, ".seg"))
			continue;
		if (k == cap) {
			uint64_t *nv = realloc(v, (cap ? cap * 2 : 16) *
						  sizeof(*v));

			if (!nv) {
				free(v);
				closedir(d);
				return -ENOMEM;
			}
			v = nv;
			cap = cap ? cap * 2 : 16;
		}
		v[k++] = b;
	}
	closedir(d);
	if (k)
		qsort(v, k, sizeof(*v), cmp_u64);
	*bases = v;
	*count = k;
	return 0;
}

/* ------------------------------------------------------------ reading */

int sb_jreader_init(struct sb_jreader *r, const char *dir,
		    const struct sb_jgeom *g)
{
	memset(r, 0, sizeof(*r));
	r->fd = -1;
	r->seq = UINT64_MAX;
	if (strlen(dir) >= sizeof(r->dir))
		return -ENAMETOOLONG;
	strcpy(r->dir, dir);
	if (g) {
		r->g = *g;
		r->have_g = true;
	}
	return 0;
}

int sb_jreader_init_bus(struct sb_jreader *r, struct shmbus_bus *bus,
			const char *chan, const struct sb_jgeom *g)
{
	int rc = sb_jreader_init(r, "", g);

	if (rc)
		return rc;
	if (strlen(chan) >= sizeof(r->chan))
		return -ENAMETOOLONG;
	strcpy(r->chan, chan);
	r->bus = bus;
	return 0;
}

int sb_jreader_list(struct sb_jreader *r, uint64_t **bases, size_t *count)
{
	int rc;

	uint64_t *v = NULL, from = 0;
	size_t k = 0, n;

	if (!r->bus)
		return sb_jlist(r->dir, bases, count);
	/* Page by page, each from the last base answered + the least
	 * segment (every base is a multiple of it).  A daemon that does not
	 * page answers with the oldest again: its first base is not past
	 * the last one, and the list ends there. */
	for (;;) {
		uint64_t *nv = realloc(v, (k + SHMBUS_CTL_JNL_MAX) *
					       sizeof(*v));

		if (!nv) {
			rc = -ENOMEM;
			break;
		}
		v = nv;
		rc = sb_bus_journal(r->bus, r->chan, SHMBUS_CTL_JNL_LIST, from,
				    v + k, SHMBUS_CTL_JNL_MAX, &n);
		if (rc || (n && k && v[k] <= v[k - 1]))
			break;
		k += n;
		if (n < SHMBUS_CTL_JNL_MAX ||
		    v[k - 1] > UINT64_MAX - SHMBUS_JSEG_MIN)
			break;
		from = v[k - 1] + SHMBUS_JSEG_MIN;
	}
	if (rc) {
		free(v);
		v = NULL;
		k = 0;
	}
	*bases = v;
	*count = k;
	return rc;
}

int sb_jreader_file(struct sb_jreader *r, uint64_t base, bool tix)
{
	char path[PATH_MAX + 32];

	if (r->bus)
		return sb_bus_journal(r->bus, r->chan, tix ? SHMBUS_CTL_JNL_TIX :
				      SHMBUS_CTL_JNL_SEG, base, NULL, 0, NULL);
	if ((tix ? sb_jtix_path : sb_jseg_path)(path, sizeof(path), r->dir,
						 base))
		return -ENAMETOOLONG;
	return sb_open_file(path, O_RDONLY);
}

void sb_jreader_close(struct sb_jreader *r)
{
	if (r->fd >= 0)
		close(r->fd);	/* drops the flock */
	r->fd = -1;
	free(r->buf);
	r->buf = NULL;
}

/* Opens the segment covering pos (its base when the geometry is not yet
 * known: the caller's pos is then taken as a base to try). */
static int open_seg(struct sb_jreader *r, uint64_t base)
{
	struct shmbus_jseg_hdr h;
	struct stat st;
	bool waited;
	int fd, rc;

	r->blen = 0;
	fd = sb_jreader_file(r, base, false);
	/* Not a regular file (sb_open_file(): a directory is -EISDIR, as
	 * shmbus_channel_open_ro() says it): no segment, damage. */
	if (fd == -EISDIR)
		fd = -EBADMSG;
	if (fd == -EBADMSG)
		snprintf(r->why, sizeof(r->why), "segment %016llx: not a "
			 "regular file", (unsigned long long)base);
	else if (fd == -ELOOP)	/* O_NOFOLLOW */
		snprintf(r->why, sizeof(r->why), "segment %016llx: a "
			 "symbolic link, not followed",
			 (unsigned long long)base);
	else if (fd < 0 && fd != -ENOENT)
		snprintf(r->why, sizeof(r->why), "segment %016llx: %s",
			 (unsigned long long)base, strerror(-fd));
	if (fd < 0)
		return fd;
	/* Retention deletes a segment only after taking it exclusively, and
	 * oldest first: the lock on the segment we leave is dropped only
	 * once the next one is ours.  A rejoin's cut clears the journal's
	 * tail under the same lock: one we had to wait for may have been a
	 * cut, and the end the caller read before (its limit) may lie past
	 * what the segment holds now.  So the first unwritten word found in
	 * it is an end, for the caller to read the end again, not damage
	 * (sb_jreader_next(); damage is said at the next call). */
	waited = flock(fd, LOCK_SH | LOCK_NB) != 0;
	if ((waited && (errno != EWOULDBLOCK || flock(fd, LOCK_SH) != 0)) ||
	    fstat(fd, &st) != 0) {
		rc = -errno;
		snprintf(r->why, sizeof(r->why), "segment %016llx: %s",
			 (unsigned long long)base, strerror(-rc));
		close(fd);
		return rc;
	}
	if (st.st_nlink == 0) {
		/* Retention deleted it between our open and our lock. */
		close(fd);
		return -ENOENT;
	}
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
	if (pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
		snprintf(r->why, sizeof(r->why), "segment %016llx: no whole "
			 "header", (unsigned long long)base);
		close(fd);
		return -EBADMSG;
	}
	rc = sb_jseg_hdr_check(&h, r->have_g ? &r->g : NULL, base, r->why,
			       sizeof(r->why));
	if (rc == 0 && (uint64_t)st.st_size < SHMBUS_JSEG_HDR) {
		snprintf(r->why, sizeof(r->why), "shorter than its header");
		rc = -EBADMSG;
	}
	if (rc) {
		char w[sizeof(r->why)];

		snprintf(w, sizeof(w), "%s", r->why);
		snprintf(r->why, sizeof(r->why), "segment %016llx: %.200s",
			 (unsigned long long)base, w);
		close(fd);
		return -EBADMSG;
	}
	if (!r->have_g) {
		r->g = (struct sb_jgeom){ .seg_size = h.seg_size,
					  .capacity = h.capacity,
					  .max_msg = h.max_msg,
					  .flags = h.flags };
		memcpy(r->g.channel, h.channel, sizeof(r->g.channel));
		r->have_g = true;
	}
	if (!r->buf) {
		size_t need = (size_t)rec_size(r->g.max_msg);

		r->cap = need > READ_CHUNK ? need : READ_CHUNK;
		r->buf = malloc(r->cap);
		if (!r->buf) {
			close(fd);
			return -ENOMEM;
		}
	}
	r->fd = fd;
	r->base = h.base;
	r->start = h.start;
	r->version = h.version;
	r->epoch = h.epoch;
	r->relook = waited;
	r->has_prev_seq = h.hflags & SHMBUS_JSEG_F_PREV_SEQ;
	r->unmarked_hole = (h.hflags & SHMBUS_JSEG_F_MARKS_GAPS) &&
			   !(h.hflags & SHMBUS_JSEG_F_AFTER_GAP);
	r->prev_seq = h.prev_seq;
	return 0;
}

int sb_jreader_seek(struct sb_jreader *r, uint64_t pos)
{
	uint64_t base;
	int rc;

	if (pos % SHMBUS_REC_ALIGN)
		return -EINVAL;
	if (!r->have_g) {
		/* Learn the geometry from any segment. */
		uint64_t *b;
		size_t k;

		rc = sb_jreader_list(r, &b, &k);
		if (rc)
			return rc;
		rc = k ? open_seg(r, b[0]) : -ENOENT;
		free(b);
		if (rc)
			return rc;
	}
	base = pos & ~(r->g.seg_size - 1);
	if (r->fd < 0 || r->base != base) {
		rc = open_seg(r, base);
		if (rc)
			return rc;
	}
	r->pos = pos < r->start ? r->start : pos;
	if (r->pos > pos) {
		r->skipped += r->pos - pos;
		r->gap = true;
	}
	r->seq = UINT64_MAX;
	r->blen = 0;
	return 0;
}

int sb_jreader_back(struct sb_jreader *r, uint64_t pos)
{
	int rc = sb_jreader_seek(r, pos);

	if (rc != -ENOENT || !r->have_g)
		return rc;
	/* sb_jreader_next() seeks there again and skips what is missing,
	 * keeping the segment it holds (and its lock) meanwhile. */
	r->pos = pos;
	r->blen = 0;
	return 0;
}

/* Makes buf hold at least `want` bytes from r->pos that were whole when
 * read (below `limit`, or fewer at the segment's or the file's end).  A
 * buffer read under a lower limit is read again: bytes past that limit
 * may have been caught half written. */
static int fill(struct sb_jreader *r, size_t want, uint64_t limit)
{
	uint64_t end = r->base + r->g.seg_size, have;
	size_t n;
	ssize_t got;

	if (r->pos >= r->bpos && r->pos - r->bpos <= r->blen) {
		have = r->bpos + r->blen;
		if (have > r->blim)
			have = r->blim;
		if (have >= r->pos && have - r->pos >= want)
			return 0;
	}
	n = r->cap;
	if (n > end - r->pos)
		n = (size_t)(end - r->pos);
	got = pread(r->fd, r->buf, n,
		    (off_t)(SHMBUS_JSEG_HDR + (r->pos - r->base)));
	if (got < 0)
		return -errno;
	r->bpos = r->pos;
	r->blen = (size_t)got;
	r->blim = limit;
	return 0;
}

/* No segment for `at`: the journal never had those positions (it went
 * past a gap) if a later segment below limit exists; reading goes on at
 * its start. */
static int skip_missing(struct sb_jreader *r, uint64_t at, uint64_t limit)
{
	uint64_t *b, next = UINT64_MAX;
	size_t k;
	int rc = sb_jreader_list(r, &b, &k);

	if (rc)
		return rc;
	if (k && at < b[0]) {
		/* Older than the oldest segment: retention removed it. */
		free(b);
		snprintf(r->why, sizeof(r->why), "%llu: removed by retention",
			 (unsigned long long)at);
		return -ERANGE;
	}
	for (size_t i = 0; i < k; i++)
		if (b[i] > at) {
			next = b[i];
			break;
		}
	free(b);
	if (next == UINT64_MAX || (next > limit && limit != UINT64_MAX))
		return -ENOENT;
	rc = sb_jreader_seek(r, next);
	if (rc == 0) {
		r->skipped += next - at;
		r->gap = true;
	}
	return rc;
}

/* What sb_jreader_written_after() reads at a time: from the heap, not
 * thread-local (a static array of a thread's would cost every thread of
 * every process linked with the library 64 KiB, zeroed when the thread
 * starts), nor on the stack of a caller that may have little. */
#define WRITTEN_AFTER_CHUNK	65536

bool sb_jreader_written_after(struct sb_jreader *r)
{
	uint64_t stop = r->pos, at = stop + 8, end = r->base + r->g.seg_size;
	uint64_t small[64], *chunk;
	size_t cap = WRITTEN_AFTER_CHUNK;
	bool found = false;

	if (r->fd < 0 || stop < r->base || stop >= end)
		return false;
	chunk = malloc(cap);
	if (!chunk) {	/* slower, not wrong */
		chunk = small;
		cap = sizeof(small);
	}
	while (at < end && !found) {
		size_t want = end - at < cap ? (size_t)(end - at) : cap;
		ssize_t n = pread(r->fd, chunk, want,
				  (off_t)(SHMBUS_JSEG_HDR + (at - r->base)));

		if (n <= 0)
			break;	/* the file ends: nothing after */
		for (size_t i = 0; i < (size_t)n / 8 && !found; i++) {
			if (!chunk[i])
				continue;
			snprintf(r->why, sizeof(r->why), "a zero record word at "
				 "%llu, but bytes are written at %llu after it",
				 (unsigned long long)stop,
				 (unsigned long long)(at + i * 8));
			found = true;
		}
		at += (uint64_t)n & ~(uint64_t)7;
		if ((size_t)n < 8)
			break;
	}
	if (chunk != small)
		free(chunk);
	return found;
}

int sb_jreader_next(struct sb_jreader *r, uint64_t limit,
		    struct sb_jrec *rec)
{
	r->stop = SB_JSTOP_OTHER;
	for (;;) {
		size_t off, avail;
		int rc;

		if (r->pos >= limit) {
			r->stop = SB_JSTOP_NONE;
			return 0;
		}
		if (r->fd < 0 || r->pos < r->base ||
		    r->pos >= r->base + r->g.seg_size) {
			uint64_t at = r->pos, seq = r->seq;
			/* Read to the end of a segment: one missing after it
			 * is a range the journal never had only if the next
			 * one says it follows a gap. */
			bool on = r->fd >= 0 && at == r->base + r->g.seg_size;

			rc = sb_jreader_seek(r, at);
			if (rc == -ENOENT && r->have_g) {
				rc = skip_missing(r, at, limit);
				if (rc == 0 && on && r->unmarked_hole) {
					snprintf(r->why, sizeof(r->why),
						 "segments [%llu, %llu) are "
						 "missing, and the journal left "
						 "no gap there (segment %016llx "
						 "does not follow one): removed "
						 "by hand?",
						 (unsigned long long)at,
						 (unsigned long long)r->base,
						 (unsigned long long)r->base);
					return -EBADMSG;
				}
			}
			r->seq = seq;	/* seqs go on growing across segments */
			if (rc == -ENOENT && limit == UINT64_MAX) {
				snprintf(r->why, sizeof(r->why), "no segment "
					 "for %llu: the journal ends",
					 (unsigned long long)at);
				r->stop = SB_JSTOP_NO_SEGMENT;
				return 0;
			}
			if (rc)
				return rc;
			continue;
		}
		rc = fill(r, 16, limit);
		if (rc)
			return rc;
		off = (size_t)(r->pos - r->bpos);
		avail = r->blen - off;
		if (r->blim - r->pos < avail)
			avail = (size_t)(r->blim - r->pos);
		rc = sb_jrec_check(&r->g, r->pos, r->buf + off, avail, &r->seq,
				   rec, r->why, sizeof(r->why));
		if (rc == -EAGAIN) {
			if (r->bpos == r->pos && r->blim >= limit) {
				/* The buffer starts at the record and holds
				 * all the file has (it is longer than any
				 * record): the file ends inside it. */
				snprintf(r->why, sizeof(r->why), "record at "
					 "%llu: the file ends inside it",
					 (unsigned long long)r->pos);
				return limit == UINT64_MAX ? 0 : -EBADMSG;
			}
			r->blen = 0;	/* read again, from the record */
			rc = fill(r, 16, limit);
			if (rc)
				return rc;
			continue;
		}
		if (rc == 0) {
			if (avail >= 8 && get64(r->buf + off) == 0) {
				r->stop = SB_JSTOP_UNWRITTEN;
				if (r->relook) {	/* open_seg() */
					r->relook = false;
					return 0;
				}
			}
			return limit == UINT64_MAX ? 0 : -EBADMSG;
		}
		r->stop = SB_JSTOP_NONE;
		r->pos += rec->size;
		/* Format 1 wrote a gap as padding: any padding may be one. */
		if (rec->type == SHMBUS_JREC_GAP ||
		    (rec->type == SHMBUS_REC_PAD && r->version < 2))
			r->gap = true;
		return 1;
	}
}

/* ---------------------------------------------------------- time index */

int sb_jtime_find(const char *dir, int64_t ns, uint64_t *pos)
{
	struct sb_jreader r;
	int rc = sb_jreader_init(&r, dir, NULL);

	if (!rc)
		rc = sb_jtime_find_r(&r, ns, pos);
	sb_jreader_close(&r);
	return rc;
}

int sb_jtime_find_r(struct sb_jreader *r, int64_t ns, uint64_t *pos)
{
	uint64_t *b, best = UINT64_MAX, b0 = 0;
	size_t k;
	int rc = sb_jreader_list(r, &b, &k);
	bool later = false;

	if (rc)
		return rc;
	if (k)
		b0 = b[0];
	for (size_t i = 0; i < k && !later; i++) {
		struct shmbus_jtix e;
		int fd = sb_jreader_file(r, b[i], true);

		if (fd < 0)
			continue;
		for (off_t o = 0;
		     pread(fd, &e, sizeof(e), o) == (ssize_t)sizeof(e);
		     o += (off_t)sizeof(e)) {
			if (e.crc != sb_crc32c(0, &e, 16) ||
			    (best != UINT64_MAX && e.pos < best))
				break;	/* damaged from here: a cache */
			if (e.ns >= ns) {
				later = true;
				break;
			}
			best = e.pos;
		}
		close(fd);
	}
	free(b);
	if (!later && best == UINT64_MAX)
		return -ENOENT;
	if (!later) {
		/* Every entry is older: what follows the last one may still
		 * be at or after ns. */
		*pos = best;
		return 0;
	}
	/* Every entry is at or after ns: from the journal's start (the
	 * oldest segment's index may be missing), where its header says it
	 * starts (past its base, if the journal began in its middle). */
	if (best == UINT64_MAX) {
		rc = sb_jreader_seek(r, b0);
		if (rc)
			return rc == -ENOENT ? -ERANGE : rc;
		best = r->start;
	}
	*pos = best;
	return 0;
}
