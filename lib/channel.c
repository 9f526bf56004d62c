/* SPDX-License-Identifier: MIT */
/*
 * channel.c - creating, validating and mapping channel files.
 *
 * A channel is born under a temporary name, fully initialised, its pages
 * allocated and faulted in, its magic stored last with release order; only
 * then is it linked under its real name.  A reader that opens a name
 * therefore never sees a half-built channel, and a crash during creation
 * leaves at most a dot-file that nobody opens.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <numa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "channel.h"

#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define DEFAULT_DIR "/dev/shm"

struct geometry {
	uint64_t cap;
	uint64_t slots_off;
	uint64_t data_off;
	uint64_t file_size;
	uint32_t cap_log2;
	uint32_t seg_log2;
};

static uint64_t round_up(uint64_t v, uint64_t to)
{
	return (v + to - 1) / to * to;
}

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* The geometry that a capacity implies; the same code serves create and
 * the validation on open, so the two cannot disagree. */
static int geometry_for(uint64_t cap, uint64_t page, struct geometry *g)
{
	uint64_t ctl;

	if (!is_pow2(cap) || cap < SHMBUS_MIN_CAPACITY ||
	    cap > SHMBUS_MAX_CAPACITY)
		return -EINVAL;
	g->cap = cap;
	g->cap_log2 = (uint32_t)__builtin_ctzll(cap);
	g->seg_log2 = g->cap_log2 - (uint32_t)__builtin_ctz(SHMBUS_NSEG);
	g->slots_off = SHMBUS_HDR_SIZE;
	ctl = g->slots_off +
	      SHMBUS_MAX_PRODUCERS * sizeof(struct shmbus_prod_slot) +
	      SHMBUS_MAX_SLOTS * sizeof(struct shmbus_sub_slot) +
	      SHMBUS_NSEG * sizeof(struct shmbus_seg);
	g->data_off = round_up(ctl, page);
	g->file_size = round_up(g->data_off + cap, page);
	return 0;
}

static uint32_t max_msg_for(uint64_t cap)
{
	/* A claim (wrap padding + record + the next header word it
	 * invalidates) must fit in one lap even when it pads: see
	 * max_claim() in channel.h. */
	uint64_t m = cap / 2 - SHMBUS_REC_HDR - 2 * SHMBUS_REC_ALIGN;

	return m > SHMBUS_MAX_MSG_LIMIT ? SHMBUS_MAX_MSG_LIMIT : (uint32_t)m;
}

static int valid_name(const char *name)
{
	size_t n = name ? strlen(name) : 0;

	if (n == 0 || n > 200 || name[0] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == '-'))
			return 0;
	}
	return 1;
}

static int make_path(char *buf, size_t len, const char *dir, const char *name)
{
	int n;

	if (!valid_name(name))
		return -EINVAL;
	n = snprintf(buf, len, "%s/%s", dir ? dir : DEFAULT_DIR, name);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static uint64_t page_size_of(int fd)
{
	struct statfs sfs;

	if (fstatfs(fd, &sfs) == 0 && (unsigned long)sfs.f_type ==
	    HUGETLBFS_MAGIC)
		return (uint64_t)sfs.f_bsize;
	return (uint64_t)sysconf(_SC_PAGESIZE);
}

SHMBUS_EXPORT void shmbus_channel_attr_init(struct shmbus_channel_attr *attr)
{
	memset(attr, 0, sizeof(*attr));
	attr->capacity = UINT64_C(1) << 20;
	attr->max_msg = 64u << 10;
	attr->policy = SHMBUS_BLOCK;
	attr->producers = SHMBUS_SINGLE_PRODUCER;
	attr->numa_node = -1;
	attr->mode = 0600;
}

/* Fills the handle from a validated header. */
static void fill_handle(struct shmbus_channel *ch, void *base,
			const struct geometry *g, uint32_t max_msg,
			uint32_t flags, uint64_t page)
{
	uint8_t *b = base;

	ch->hdr = base;
	ch->prods = (struct shmbus_prod_slot *)(b + g->slots_off);
	ch->subs = (struct shmbus_sub_slot *)(ch->prods + SHMBUS_MAX_PRODUCERS);
	ch->segs = (struct shmbus_seg *)(ch->subs + SHMBUS_MAX_SLOTS);
	ch->data = b + g->data_off;
	ch->map_len = g->file_size;
	ch->cap = g->cap;
	ch->mask = g->cap - 1;
	ch->cap_log2 = g->cap_log2;
	ch->seg_log2 = g->seg_log2;
	ch->max_msg = max_msg;
	ch->flags = flags;
	ch->nslots = SHMBUS_MAX_SLOTS;
	ch->huge = page > (uint64_t)sysconf(_SC_PAGESIZE);
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

/* Faults every page of the mapping in for writing, so that no page fault
 * lands on the data path. */
static void prefault(void *base, size_t len, size_t page, bool rdonly)
{
	if (rdonly) {
		madvise(base, len, MADV_POPULATE_READ);
		return;
	}
	if (madvise(base, len, MADV_POPULATE_WRITE) == 0)
		return;
	/* Older kernels: touch one byte per page with an atomic add of 0,
	 * which faults the page writable without changing it under a
	 * concurrent writer. */
	for (size_t off = 0; off < len; off += page)
		atomic_fetch_add_explicit((_Atomic uint8_t *)((uint8_t *)base +
							      off),
					  0, memory_order_relaxed);
}

/*
 * Validates the header of a mapped file of `size` bytes against the layout
 * and returns the geometry.  Every field is checked before any is used.
 */
static int validate(const struct shmbus_hdr *h, uint64_t size, uint64_t page,
		    struct geometry *g)
{
	uint64_t cap;

	if (size < sizeof(*h))
		return -EPROTO;
	/* A1: pairs with R0 in init_header(): the magic is stored last, so
	 * every field below is the creator's. */
	if (load_acquire64(&h->magic) != SHMBUS_MAGIC)
		return -EPROTO;
	if (h->version != SHMBUS_LAYOUT_VERSION)
		return -EPROTONOSUPPORT;
	cap = h->capacity;
	if (h->hdr_size != SHMBUS_HDR_SIZE || geometry_for(cap, page, g))
		return -EBADMSG;
	if (h->cap_log2 != g->cap_log2 || h->seg_log2 != g->seg_log2 ||
	    h->slots_offset != g->slots_off || h->data_offset != g->data_off ||
	    h->file_size != g->file_size || size != g->file_size ||
	    h->nslots != SHMBUS_MAX_SLOTS || h->nseg != SHMBUS_NSEG ||
	    (h->flags & ~SHMBUS_F_KNOWN) || h->max_msg > max_msg_for(cap))
		return -EBADMSG;
	return 0;
}

static void init_header(struct shmbus_hdr *h, const struct geometry *g,
			const struct shmbus_channel_attr *a, uint64_t page)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	h->version = SHMBUS_LAYOUT_VERSION;
	h->hdr_size = SHMBUS_HDR_SIZE;
	h->file_size = g->file_size;
	h->capacity = g->cap;
	h->data_offset = g->data_off;
	h->slots_offset = g->slots_off;
	h->max_msg = a->max_msg;
	h->flags = (a->policy == SHMBUS_OVERWRITE ? SHMBUS_F_OVERWRITE : 0) |
		   (a->producers == SHMBUS_MULTI_PRODUCER ?
			    SHMBUS_F_MULTI_PRODUCER : 0);
	h->nslots = SHMBUS_MAX_SLOTS;
	h->cap_log2 = g->cap_log2;
	h->create_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	h->page_size = (uint32_t)page;
	h->numa_node = a->numa_node;
	h->nseg = SHMBUS_NSEG;
	h->seg_log2 = g->seg_log2;
	/* R0: pairs with A1 in validate(): everything above is visible to a
	 * process that sees the magic. */
	store_release64(&h->magic, SHMBUS_MAGIC);
}

static int check_attr(const struct shmbus_channel_attr *a)
{
	struct geometry g;

	if (!a || geometry_for(a->capacity, 4096, &g))
		return -EINVAL;
	if (a->max_msg > max_msg_for(a->capacity))
		return -EMSGSIZE;
	if ((a->policy != SHMBUS_BLOCK && a->policy != SHMBUS_OVERWRITE) ||
	    (a->producers != SHMBUS_SINGLE_PRODUCER &&
	     a->producers != SHMBUS_MULTI_PRODUCER) || a->numa_node < -1)
		return -EINVAL;
	if (a->numa_node >= 0 &&
	    (numa_available() < 0 ? a->numa_node != 0
				  : a->numa_node > numa_max_node()))
		return -EINVAL;
	return 0;
}

/* Maps an open channel file and validates it. */
struct shmbus_channel *sb_channel_map_fd(int fd, enum sb_map_mode mode,
					 int *err)
{
	bool rdonly = mode == SB_MAP_RO;
	struct shmbus_channel *ch = NULL;
	struct geometry g;
	struct stat st;
	uint64_t page = page_size_of(fd);
	void *base = MAP_FAILED;
	int rc;

	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto fail;
	}
	if ((uint64_t)st.st_size < sizeof(struct shmbus_hdr)) {
		rc = -EPROTO;
		goto fail;
	}
	base = mmap(NULL, (size_t)st.st_size,
		    rdonly ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED,
		    fd, 0);
	if (base == MAP_FAILED) {
		rc = -errno;
		goto fail;
	}
	rc = validate(base, (uint64_t)st.st_size, page, &g);
	if (rc)
		goto fail;
	ch = calloc(1, sizeof(*ch));
	if (!ch) {
		rc = -ENOMEM;
		goto fail;
	}
	fill_handle(ch, base, &g, ((struct shmbus_hdr *)base)->max_msg,
		    ((struct shmbus_hdr *)base)->flags, page);
	ch->rdonly = rdonly;
	ch->no_pub = mode == SB_MAP_SUB;
	ch->no_sub = mode == SB_MAP_PUB;
	if (mode == SB_MAP_SUB) {
		/* A subscriber writes its cursor slot, never a message: a
		 * stray write into the data region faults. */
		if (mprotect(ch->data, g.cap, PROT_READ) < 0) {
			rc = -errno;
			free(ch);
			ch = NULL;
			goto fail;
		}
		prefault(base, g.data_off, page, false);
		prefault(ch->data, g.cap, page, true);
		return ch;
	}
	prefault(base, g.file_size, page, rdonly);
	return ch;
fail:
	if (base != MAP_FAILED)
		munmap(base, (size_t)st.st_size);
	*err = rc;
	return NULL;
}

static struct shmbus_channel *open_path(const char *path, bool rdonly,
					int *err)
{
	struct shmbus_channel *ch;
	int fd = open(path, (rdonly ? O_RDONLY : O_RDWR) | O_CLOEXEC |
				    O_NOFOLLOW);

	if (fd < 0) {
		*err = -errno;
		return NULL;
	}
	ch = sb_channel_map_fd(fd, rdonly ? SB_MAP_RO : SB_MAP_RW, err);
	close(fd);
	return ch;
}

static shmbus_channel *open_named(const char *dir, const char *name,
				  bool rdonly)
{
	char path[PATH_MAX];
	struct shmbus_channel *ch;
	int rc = make_path(path, sizeof(path), dir, name);

	if (rc) {
		errno = -rc;
		return NULL;
	}
	ch = open_path(path, rdonly, &rc);
	if (!ch)
		errno = -rc;
	return ch;
}

SHMBUS_EXPORT shmbus_channel *shmbus_channel_open(const char *dir,
						  const char *name)
{
	return open_named(dir, name, false);
}

SHMBUS_EXPORT shmbus_channel *shmbus_channel_open_ro(const char *dir,
						     const char *name)
{
	return open_named(dir, name, true);
}

/* Builds a complete channel in a new temporary file; returns its fd. */
static int build_tmp(const char *tmp, const struct shmbus_channel_attr *a)
{
	struct geometry g;
	uint64_t page;
	void *base;
	int fd, rc;

	fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	page = page_size_of(fd);
	geometry_for(a->capacity, page, &g);
	if (fchmod(fd, a->mode ? a->mode : 0600) < 0 ||
	    ftruncate(fd, (off_t)g.file_size) < 0) {
		rc = -errno;
		goto fail;
	}
	base = mmap(NULL, g.file_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		    0);
	if (base == MAP_FAILED) {
		rc = -errno;
		goto fail;
	}
	/* Bind before the pages exist: tmpfs allocates them under the
	 * mapping's shared policy. */
	if (a->numa_node >= 0 && numa_available() >= 0)
		numa_tonode_memory((uint8_t *)base + g.data_off, g.cap,
				   a->numa_node);
	madvise((uint8_t *)base + g.data_off, g.cap, MADV_HUGEPAGE);
	/* Allocate every page now: /dev/shm running full is -ENOSPC here,
	 * not a SIGBUS in the middle of a publish. */
	rc = -posix_fallocate(fd, 0, (off_t)g.file_size);
	if (rc == 0) {
		prefault(base, g.file_size, page, false);
		init_header(base, &g, a, page);
	}
	munmap(base, g.file_size);
	if (rc)
		goto fail;
	return fd;
fail:
	close(fd);
	unlink(tmp);
	return rc;
}

/* The existing file at `path` is acceptable to a non-replacing create if it
 * is a valid channel of the same geometry. */
static struct shmbus_channel *adopt_existing(const char *path,
					     const struct shmbus_channel_attr *a,
					     unsigned flags, int *err)
{
	struct shmbus_channel *ch;
	uint32_t want = (a->policy == SHMBUS_OVERWRITE ? SHMBUS_F_OVERWRITE
						       : 0) |
			(a->producers == SHMBUS_MULTI_PRODUCER ?
				 SHMBUS_F_MULTI_PRODUCER : 0);

	if (flags & SHMBUS_CREATE_EXCL) {
		*err = -EEXIST;
		return NULL;
	}
	ch = open_path(path, false, err);
	if (!ch)
		return NULL;
	if (ch->cap != a->capacity || ch->max_msg != a->max_msg ||
	    ch->flags != want) {
		shmbus_channel_close(ch);
		*err = -EEXIST;
		return NULL;
	}
	return ch;
}

SHMBUS_EXPORT shmbus_channel *
shmbus_channel_create(const char *dir, const char *name,
		      const struct shmbus_channel_attr *attr, unsigned flags)
{
	static _Atomic unsigned counter;
	char path[PATH_MAX], tmp[PATH_MAX];
	struct shmbus_channel *ch = NULL;
	int fd = -1, rc, n;

	rc = make_path(path, sizeof(path), dir, name);
	if (!rc)
		rc = check_attr(attr);
	if (rc)
		goto out;
	if ((flags & ~(SHMBUS_CREATE_EXCL | SHMBUS_CREATE_REPLACE)) ||
	    (flags & SHMBUS_CREATE_EXCL && flags & SHMBUS_CREATE_REPLACE)) {
		rc = -EINVAL;
		goto out;
	}
	n = snprintf(tmp, sizeof(tmp), "%s/.%s.%d.%u.tmp",
		     dir ? dir : DEFAULT_DIR, name, (int)getpid(),
		     atomic_fetch_add(&counter, 1));
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		rc = -ENAMETOOLONG;
		goto out;
	}
	fd = build_tmp(tmp, attr);
	if (fd < 0) {
		rc = fd;
		goto out;
	}
	if (flags & SHMBUS_CREATE_REPLACE) {
		if (rename(tmp, path) < 0) {
			rc = -errno;
			unlink(tmp);
			goto out;
		}
	} else {
		/* link() never replaces: two creators race safely, and the
		 * loser adopts the winner's channel. */
		if (link(tmp, path) < 0) {
			rc = -errno;
			unlink(tmp);
			if (rc == -EEXIST)
				ch = adopt_existing(path, attr, flags, &rc);
			goto out;
		}
		unlink(tmp);
	}
	ch = sb_channel_map_fd(fd, SB_MAP_RW, &rc);
out:
	if (fd >= 0)
		close(fd);
	if (!ch)
		errno = -rc;
	return ch;
}

SHMBUS_EXPORT void shmbus_channel_close(shmbus_channel *ch)
{
	if (!ch)
		return;
	if (ch->bus)
		sb_bus_forget(ch->bus, ch->bus_ref);
	munmap(ch->hdr, ch->map_len);
	free(ch);
}

SHMBUS_EXPORT int shmbus_channel_unlink(const char *dir, const char *name)
{
	char path[PATH_MAX];
	int rc = make_path(path, sizeof(path), dir, name);

	if (rc)
		return rc;
	return unlink(path) < 0 ? -errno : 0;
}

SHMBUS_EXPORT int shmbus_channel_info(shmbus_channel *ch,
				      struct shmbus_channel_info *info)
{
	const struct shmbus_hdr *h;
	uint32_t nsub = 0, nprod = 0;

	if (!ch || !info)
		return -EINVAL;
	h = ch->hdr;
	memset(info, 0, sizeof(*info));
	info->capacity = ch->cap;
	info->max_msg = ch->max_msg;
	info->policy = ch_overwrite(ch) ? SHMBUS_OVERWRITE : SHMBUS_BLOCK;
	info->producers = ch_multi(ch) ? SHMBUS_MULTI_PRODUCER
				       : SHMBUS_SINGLE_PRODUCER;
	info->numa_node = h->numa_node;
	info->create_ns = h->create_ns;
	info->head = load_relaxed64(&h->head);	/* statistics: no edge */
	info->published = load_relaxed64(&h->seq);
	info->bytes = load_relaxed64(&h->bytes);
	info->backpressure = load_relaxed64(&h->backpressure);
	info->wakeups = load_relaxed64(&h->wakeups);
	info->aborts = load_relaxed64(&h->aborts);
	info->repairs = load_relaxed64(&h->repairs);
	info->reaped = load_relaxed64(&h->reaped);
	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++)
		nsub += owner_state(load_relaxed64(&ch->subs[i].owner)) ==
			SHMBUS_SLOT_ACTIVE;
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++)
		nprod += owner_state(load_relaxed64(&ch->prods[i].owner)) ==
			 SHMBUS_SLOT_ACTIVE;
	info->subscribers = nsub;
	info->producers_active = nprod;
	info->huge_pages = ch->huge;
	return 0;
}

/* The owner of a slot, as shared memory says: pid, name (always
 * NUL-terminated here) and whether that process exists. */
static void slot_owner(uint64_t owner, const char comm[16],
		       pid_t *opid, char ocomm[16], int *alive)
{
	uint32_t p = owner_pid(owner);

	*opid = (pid_t)(p > INT32_MAX ? 0 : p);
	memcpy(ocomm, comm, 16);
	ocomm[15] = 0;
	*alive = sb_pid_alive(p);
}

SHMBUS_EXPORT int shmbus_channel_subscriber(shmbus_channel *ch, unsigned slot,
					    struct shmbus_sub_info *out)
{
	const struct shmbus_sub_slot *s;
	uint64_t head, seq, next, o;
	uint32_t w;

	if (!ch || !out || slot >= SHMBUS_MAX_SLOTS)
		return -EINVAL;
	s = &ch->subs[slot];
	/* A7: pairs with R7 (the slot's ACTIVE store). */
	o = load_acquire64(&s->owner);
	if (owner_state(o) != SHMBUS_SLOT_ACTIVE)
		return -ENOENT;
	memset(out, 0, sizeof(*out));
	slot_owner(o, s->comm, &out->pid, out->comm, &out->alive);
	w = load_relaxed32(&s->wait);
	out->wait = w <= SHMBUS_WAIT_SLEEP ? (enum shmbus_wait)w
					   : SHMBUS_WAIT_SPIN;
	out->sleeping = load_relaxed32(&s->sleeping) != 0;
	out->pos = load_relaxed64(&s->pos);
	out->delivered = load_relaxed64(&s->delivered);
	out->lost = load_relaxed64(&s->lost);
	head = load_relaxed64(&ch->hdr->head);
	seq = load_relaxed64(&ch->hdr->seq);
	next = load_relaxed64(&s->next_seq);
	/* Untrusted values: a cursor past head or a count from the future
	 * shows as no lag rather than as a huge one. */
	out->lag_bytes = head > out->pos ? head - out->pos : 0;
	out->lag_msgs = seq > next ? seq - next : 0;
	return 0;
}

SHMBUS_EXPORT int shmbus_channel_producer(shmbus_channel *ch, unsigned slot,
					  struct shmbus_prod_info *out)
{
	const struct shmbus_prod_slot *s;
	uint64_t c, o;

	if (!ch || !out || slot >= SHMBUS_MAX_PRODUCERS)
		return -EINVAL;
	s = &ch->prods[slot];
	/* A7: pairs with R7 (the slot's ACTIVE store). */
	o = load_acquire64(&s->owner);
	if (owner_state(o) != SHMBUS_SLOT_ACTIVE)
		return -ENOENT;
	memset(out, 0, sizeof(*out));
	slot_owner(o, s->comm, &out->pid, out->comm, &out->alive);
	out->published = load_relaxed64(&s->published);
	c = load_relaxed64(&s->claim_pos);
	out->claiming = ch_multi(ch) && c != UINT64_MAX;
	out->claim_pos = out->claiming ? c : 0;
	return 0;
}
