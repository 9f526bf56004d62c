/* SPDX-License-Identifier: MIT */
/*
 * journal.h - reading and checking a channel's journal (format:
 * include/shmbus/journal.h, docs/journal.md), for the journal agent in
 * shmbusd, the replaying subscriber and shmbusctl's dump and verify.
 */
#ifndef SHMBUS_LIB_JOURNAL_H
#define SHMBUS_LIB_JOURNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shmbus/journal.h"

/* What a journal's segments must agree on. */
struct sb_jgeom {
	uint64_t seg_size;	/* a power of two >= capacity */
	uint64_t capacity;
	uint32_t max_msg;
	uint32_t flags;
	char channel[64];
};

/* The geometry a segment size and a ring make; -EINVAL with a reason if
 * the segment size is not a power of two in [max(capacity, MIN), MAX]. */
int sb_jgeom_make(struct sb_jgeom *g, const char *channel, uint64_t seg_size,
		  uint64_t capacity, uint32_t max_msg, uint32_t flags,
		  char *why, size_t n);

/* dir/%016llx.seg and dir/%016llx.tix: 0, or -ENAMETOOLONG. */
int sb_jseg_path(char *buf, size_t n, const char *dir, uint64_t base);
int sb_jtix_path(char *buf, size_t n, const char *dir, uint64_t base);

void sb_jseg_hdr_make(struct shmbus_jseg_hdr *h, const struct sb_jgeom *g,
		      uint64_t base, uint64_t start, uint64_t epoch);
/* Records in h that the journal held no sequence number above prev_seq
 * (UINT64_MAX: none) before h's segment, and seals h again. */
void sb_jseg_hdr_set_prev_seq(struct shmbus_jseg_hdr *h, uint64_t prev_seq);
/* Records in h that its segment follows a gap the journal left (the
 * segments between the one before and it were never made), and seals h
 * again. */
void sb_jseg_hdr_set_after_gap(struct shmbus_jseg_hdr *h);
/* Checks a header read from a file: its own checksum, magic, version and
 * sizes, then (g not NULL) that it belongs to the channel g describes and
 * (base not UINT64_MAX) that it covers base.  0, or -EBADMSG (damaged,
 * or another format) / -EXDEV (another channel or geometry) with why. */
int sb_jseg_hdr_check(const struct shmbus_jseg_hdr *h,
		      const struct sb_jgeom *g, uint64_t base, char *why,
		      size_t n);

/* Seals a copy of a ring record at pos in place: its lap tag becomes the
 * CRC (journal.h).  The record is known whole (size bytes). */
void sb_jrec_seal(uint8_t *rec, uint64_t pos);

/* One record of a journal. */
struct sb_jrec {
	uint64_t pos;
	uint64_t size;		/* bytes it occupies */
	uint64_t seq;		/* MSG, SKIP */
	uint32_t type;		/* SHMBUS_REC_* */
	uint32_t len;
	const uint8_t *data;	/* MSG: the payload */
};

/*
 * Checks the record at pos, whose bytes are p[0..avail): 1 with *r set
 * if it is whole and valid; 0 if it is not there (zero or impossible:
 * why says which); -EAGAIN if it may be valid but runs past avail.
 * *seq is the last seq seen (UINT64_MAX: none), raised by a valid MSG or
 * SKIP; a seq that does not grow makes the record invalid.
 */
int sb_jrec_check(const struct sb_jgeom *g, uint64_t pos, const uint8_t *p,
		  size_t avail, uint64_t *seq, struct sb_jrec *r, char *why,
		  size_t n);

/* Segments of a journal directory, in position order: their bases, in
 * a malloc'd array (*bases, *count).  0 or -errno. */
int sb_jlist(const char *dir, uint64_t **bases, size_t *count);

/*
 * A reader of a journal: segment by segment, through a buffer, checking
 * every record.  Readers hold a shared flock(2) on the segment they read,
 * which retention respects.
 */
struct shmbus_bus;

/* Why sb_jreader_next() returned no record (its `stop`): */
#define SB_JSTOP_NONE		0	/* it returned one, or the limit */
#define SB_JSTOP_UNWRITTEN	1	/* a zero record word: nothing written
					 * there (the end, or inside a gap
					 * the agent recorded from before) */
#define SB_JSTOP_NO_SEGMENT	2	/* no segment holds the position (past
					 * the newest, without a limit) */
#define SB_JSTOP_OTHER		3	/* damage, or an error (why says) */

struct sb_jreader {
	char dir[PATH_MAX];		/* the files by path, or */
	struct shmbus_bus *bus;		/* through shmbusd (SHMBUS_CTL_JOURNAL) */
	char chan[256];			/* ... for this channel */
	struct sb_jgeom g;
	bool have_g;		/* g known (given, or from the first header) */
	int fd;			/* the current segment, or -1 */
	uint64_t base;		/* its base */
	uint64_t start;		/* its header's start */
	uint64_t epoch;		/* its header's epoch */
	uint64_t pos;		/* the next record's position */
	uint64_t seq;		/* the last seq read (UINT64_MAX: none) */
	uint64_t skipped;	/* bytes of gaps passed so far */
	uint32_t version;	/* the segment's format (GAP records from 2) */
	bool unmarked_hole;	/* segments missing before it were not a
				 * gap the journal left (its header marks
				 * gaps, and marks none) */
	bool relook;		/* its lock was waited for (a cut, maybe):
				 * its first unwritten word is an end */
	bool has_prev_seq;	/* its header records prev_seq, */
	uint64_t prev_seq;	/* the last seq before it (UINT64_MAX:
				 * none) */
	bool gap;		/* passed positions the journal lacks (a GAP
				 * record, a segment missing or starting past
				 * its base; in format 1, any padding); the
				 * caller clears it */
	uint8_t *buf;
	size_t cap;
	uint64_t bpos;		/* buf holds [bpos, bpos + blen) */
	size_t blen;
	uint64_t blim;		/* ... of which only what lies below blim,
				 * the limit when it was read, is whole */
	char why[256];		/* the last error's reason */
	uint8_t stop;		/* where sb_jreader_next() last stopped
				 * short of a record (SB_JSTOP_*) */
};

/* g may be NULL (learnt from the first segment read). */
int sb_jreader_init(struct sb_jreader *r, const char *dir,
		    const struct sb_jgeom *g);
/* The same, the files handed out by shmbusd under the channel's
 * subscribe rule (a subscriber need not be able to open them). */
int sb_jreader_init_bus(struct sb_jreader *r, struct shmbus_bus *bus,
			const char *chan, const struct sb_jgeom *g);
/* The journal's segments, and one of its files, from wherever r reads. */
int sb_jreader_list(struct sb_jreader *r, uint64_t **bases, size_t *count);
int sb_jreader_file(struct sb_jreader *r, uint64_t base, bool tix);
void sb_jreader_close(struct sb_jreader *r);
/* Positions the reader at pos (a record boundary the journal holds, or
 * the start of a gap: reading goes on after the gap). */
int sb_jreader_seek(struct sb_jreader *r, uint64_t pos);
/* Back to pos, a record boundary where r read before: as
 * sb_jreader_seek(), and where no segment holds pos (r passed a gap
 * there), r passes the gap again at its next read. */
int sb_jreader_back(struct sb_jreader *r, uint64_t pos);
/*
 * The next record below `limit` (UINT64_MAX: as far as valid records
 * go).  1 with *rec (valid until the next call), 0 if there is none
 * before limit (or, without a limit, where valid records end: r->why
 * says why), -EBADMSG if a record below limit is damaged or a segment
 * is refused (r->why), -ERANGE if the segment to read next was removed
 * by retention, -errno on I/O errors.  A segment missing between two
 * others is a gap the journal never had: reading goes on after it.
 */
int sb_jreader_next(struct sb_jreader *r, uint64_t limit,
		    struct sb_jrec *rec);
/* After sb_jreader_next() stopped where nothing is written (a zero
 * record word): whether bytes are written after it in its segment, which
 * a clean end never leaves (damage: a word written over with zeros, or a
 * tail whose pages reached the disk out of order).  Says where in r->why
 * if so.  Reads the rest of the segment: for recovery and checks, not
 * for readers at the live end. */
bool sb_jreader_written_after(struct sb_jreader *r);

/* The position from which a replay by time starts: the last time-index
 * entry written before ns (all of the journal if none is); -ENOENT if
 * the journal holds nothing at or after ns. */
int sb_jtime_find(const char *dir, int64_t ns, uint64_t *pos);
/* The same, from wherever r reads. */
int sb_jtime_find_r(struct sb_jreader *r, int64_t ns, uint64_t *pos);

#endif
