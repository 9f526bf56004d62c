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
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <numa.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "channel.h"
#include "contract.h"

#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define DEFAULT_DIR "/dev/shm"

struct geometry {
	uint64_t cap;
	uint64_t page;
	uint64_t slots_off;
	uint64_t ctl_size;	/* control file */
	uint64_t data_size;	/* data file: capacity + one page */
	uint32_t cap_log2;
	uint32_t seg_log2;
};

/* What a handle keeps of its header besides the geometry: each read once
 * from the mapping and checked by validate(). */
struct hdr_fields {
	uint64_t data_id;
	uint32_t max_msg;
	uint32_t flags;
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
	if (!is_pow2(cap) || cap < SHMBUS_MIN_CAPACITY ||
	    cap > SHMBUS_MAX_CAPACITY)
		return -EINVAL;
	g->cap = cap;
	g->page = page;
	g->cap_log2 = (uint32_t)__builtin_ctzll(cap);
	g->seg_log2 = g->cap_log2 - (uint32_t)__builtin_ctz(SHMBUS_NSEG);
	g->slots_off = SHMBUS_HDR_SIZE;
	g->ctl_size = round_up(g->slots_off +
			       SHMBUS_MAX_SLOTS * sizeof(struct shmbus_sub_slot),
			       page);
	g->data_size = cap + page;
	return 0;
}

_Static_assert(SHMBUS_NSEG * sizeof(struct shmbus_seg) +
	       sizeof(struct shmbus_data_trailer) <= 4096,
	       "the index and the trailer fit the data file's last page");

static uint32_t max_msg_for(uint64_t cap)
{
	/* A claim (wrap padding + record + the next header word it
	 * invalidates) must fit in one lap even when it pads: see
	 * max_need() in channel.h.  The record's header is 16 bytes and the
	 * padding and the next word take 8 each: capacity/2 - 32. */
	uint64_t m = cap / 2 - SHMBUS_REC_HDR - 2 * SHMBUS_REC_ALIGN;

	return m > SHMBUS_MAX_MSG_LIMIT ? SHMBUS_MAX_MSG_LIMIT : (uint32_t)m;
}

/* The one rule for max_msg: the library's create and open, shmbusd's
 * config and requests, and shmbusctl all ask this. */
SHMBUS_EXPORT uint32_t shmbus_max_msg(uint64_t capacity)
{
	struct geometry g;

	return geometry_for(capacity, 4096, &g) ? 0 : max_msg_for(capacity);
}

/* The max_msg a channel made with *a gets: 0 asks for the default. */
uint32_t sb_attr_max_msg(const struct shmbus_channel_attr *a)
{
	uint32_t lim;

	if (a->max_msg)
		return a->max_msg;
	lim = shmbus_max_msg(a->capacity);
	return lim < SHMBUS_DEFAULT_MAX_MSG ? lim : SHMBUS_DEFAULT_MAX_MSG;
}

/* "16 GiB", "4 KiB", or the number of bytes if it is not a whole number
 * of KiB. */
static const char *size_text(char *buf, size_t len, uint64_t v)
{
	static const char *const units[] = { "KiB", "MiB", "GiB", "TiB",
					     "PiB", "EiB" };
	int u = -1;

	while (v && !(v & 1023) && u < 5) {
		v >>= 10;
		u++;
	}
	if (u < 0)
		snprintf(buf, len, "%llu", (unsigned long long)v);
	else
		snprintf(buf, len, "%llu %s", (unsigned long long)v, units[u]);
	return buf;
}

SHMBUS_EXPORT int shmbus_channel_attr_check(const struct shmbus_channel_attr *a,
					    char *why, size_t len)
{
	char c[32], lo[32], hi[32];
	uint64_t cap;
	uint32_t lim;
	int max;

	if (!why || !len) {
		why = c;	/* the caller wants no text */
		len = sizeof(c);
	}
	if (!a) {
		snprintf(why, len, "no attributes given");
		return -EINVAL;
	}
	cap = a->capacity;
	size_text(lo, sizeof(lo), SHMBUS_MIN_CAPACITY);
	size_text(hi, sizeof(hi), SHMBUS_MAX_CAPACITY);
	if (!is_pow2(cap)) {
		snprintf(why, len, "capacity %llu is not a power of two from "
			 "%s to %s", (unsigned long long)cap, lo, hi);
		return -EINVAL;
	}
	if (cap < SHMBUS_MIN_CAPACITY || cap > SHMBUS_MAX_CAPACITY) {
		snprintf(why, len, "capacity %llu (%s) is %s than %s: a "
			 "power of two from %s to %s", (unsigned long long)cap,
			 size_text(c, sizeof(c), cap),
			 cap < SHMBUS_MIN_CAPACITY ? "less" : "more",
			 cap < SHMBUS_MIN_CAPACITY ? lo : hi, lo, hi);
		return -EINVAL;
	}
	lim = shmbus_max_msg(cap);
	if (sb_attr_max_msg(a) > lim) {
		snprintf(why, len, "max_msg %u is too large for capacity %llu "
			 "(%s): at most %u (capacity/2 - 32)", a->max_msg,
			 (unsigned long long)cap, size_text(c, sizeof(c), cap),
			 lim);
		return -EMSGSIZE;
	}
	if (a->policy != SHMBUS_BLOCK && a->policy != SHMBUS_OVERWRITE) {
		snprintf(why, len, "policy %d: expected %d (block) or %d "
			 "(overwrite)", (int)a->policy, SHMBUS_BLOCK,
			 SHMBUS_OVERWRITE);
		return -EINVAL;
	}
	if (a->producers != SHMBUS_SINGLE_PRODUCER &&
	    a->producers != SHMBUS_MULTI_PRODUCER) {
		snprintf(why, len, "producers %d: expected %d (single) or %d "
			 "(multi)", (int)a->producers, SHMBUS_SINGLE_PRODUCER,
			 SHMBUS_MULTI_PRODUCER);
		return -EINVAL;
	}
	max = numa_available() < 0 ? 0 : numa_max_node();
	if (a->numa_node < -1) {
		snprintf(why, len, "numa_node %d: expected a NUMA node number "
			 "or -1", a->numa_node);
		return -EINVAL;
	}
	if (a->numa_node > max ||
	    (a->numa_node >= 0 && numa_available() >= 0 &&
	     !numa_bitmask_isbitset(numa_nodes_ptr, (unsigned)a->numa_node))) {
		snprintf(why, len, "NUMA node %d does not exist on this "
			 "machine (nodes 0..%d)", a->numa_node, max);
		return -EINVAL;
	}
	/* The files are opened read-write by their owner (shmbusd, or
	 * the creator in direct mode): a mode without that is refused here,
	 * as shmbusd refuses it, not left to fail later. */
	if (a->mode & ~(mode_t)0777 || (a->mode && (a->mode & 0600) != 0600)) {
		snprintf(why, len, "mode %o: expected permission bits, 0777 at "
			 "most, the owner's read and write included (0: 0600)",
			 (unsigned)a->mode);
		return -EINVAL;
	}
	why[0] = 0;
	return 0;
}

uint32_t sb_channel_flags(enum shmbus_policy policy,
			  enum shmbus_producers producers)
{
	return (policy == SHMBUS_OVERWRITE ? SHMBUS_F_OVERWRITE : 0) |
	       (producers == SHMBUS_MULTI_PRODUCER ? SHMBUS_F_MULTI_PRODUCER
						   : 0);
}

void sb_channel_mark_damaged(shmbus_channel *ch)
{
	uint8_t *at = (uint8_t *)ch->ident +
		      offsetof(struct shmbus_hdr, flags);
	uint32_t fl;

	/* Part of the identity from now on, for sb_ident_restore() (which
	 * runs on shmbusd's reaper thread, as this does). */
	memcpy(&fl, at, sizeof(fl));
	fl |= SHMBUS_F_DAMAGED;
	memcpy(at, &fl, sizeof(fl));
	/* No edge: read by opens that come after (validate()); the
	 * handles open now keep the flags they read. */
	or_relaxed32(&ch->hdr->flags, SHMBUS_F_DAMAGED);
}

unsigned sb_ident_restore(shmbus_channel *ch)
{
	uint64_t *w = (uint64_t *)(void *)ch->hdr;
	unsigned put = 0;

	if (ch->rdonly)
		return 0;
	for (unsigned i = 1; i < SB_IDENT_WORDS; i++)
		if (load_relaxed64(&w[i]) != ch->ident[i]) {
			store_relaxed64(&w[i], ch->ident[i]);
			put++;
		}
	if (put || load_relaxed64(&w[0]) != ch->ident[0]) {
		/* The magic last, as at creation: an open that sees it sees
		 * the words put back before it (one that read a word before
		 * it was put back refuses the channel, once).  R0: pairs with
		 * A0 in snapshot_ident(). */
		store_release64(&w[0], ch->ident[0]);
		put++;
	}
	return put;
}

int sb_parse_size(const char *s, uint64_t *out)
{
	uint64_t x = 0;
	unsigned shift = 0;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (x > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return -ERANGE;
		x = x * 10 + (uint64_t)(*p - '0');
	}
	switch (*p) {
	case 'k': case 'K': shift = 10; break;
	case 'm': case 'M': shift = 20; break;
	case 'g': case 'G': shift = 30; break;
	case 0: break;
	default: return -EINVAL;
	}
	if (shift) {
		p++;
		if ((p[0] == 'i' || p[0] == 'I') && (p[1] == 'b' || p[1] == 'B'))
			p += 2;
		if (x >> (64 - shift))
			return -ERANGE;
	}
	if (*p)
		return -EINVAL;
	*out = x << shift;
	return 0;
}

int sb_name_ok(const char *name, size_t max)
{
	size_t n = name ? strlen(name) : 0;

	if (n == 0 || n > max || name[0] == '.')
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

static int valid_name(const char *name)
{
	return sb_name_ok(name, 200);
}

size_t sb_hex_digits(const char *s, size_t max, uint64_t *v)
{
	size_t n = strspn(s, "0123456789abcdef");
	uint64_t x = 0;

	if (!n || n > max || max > 16)
		return 0;
	for (size_t i = 0; i < n; i++)
		x = x << 4 | (uint64_t)(s[i] <= '9' ? s[i] - '0'
						    : s[i] - 'a' + 10);
	*v = x;
	return n;
}

int sb_open_file(const char *path, int flags)
{
	/* O_NONBLOCK: opening a FIFO for reading would wait for a writer. */
	int fd = open(path, flags | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK), fl;
	struct stat st = { 0 };

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) ||
	    (fl = fcntl(fd, F_GETFL)) < 0 ||
	    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK)) {
		close(fd);
		/* A directory is EISDIR read-only too, as open(2) says it
		 * when asked to write (st starts zeroed: after a failed
		 * fstat() it says no directory). */
		return S_ISDIR(st.st_mode) ? -EISDIR : -EBADMSG;
	}
	return fd;
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
	if (!attr)
		return;
	memset(attr, 0, sizeof(*attr));
	attr->capacity = UINT64_C(1) << 20;
	attr->max_msg = 0;	/* min(64 KiB, shmbus_max_msg(capacity)) */
	attr->policy = SHMBUS_BLOCK;
	attr->producers = SHMBUS_SINGLE_PRODUCER;
	attr->numa_node = -1;
	attr->mode = 0600;
}

/* dir/.name.<id>.data */
static int data_path(char *buf, size_t len, const char *dir, const char *name,
		     uint64_t id)
{
	char file[256];
	int n = snprintf(file, sizeof(file), SHMBUS_DATA_NAME_FMT, name,
			 (unsigned long long)id);

	if (n < 0 || (size_t)n >= sizeof(file))
		return -ENAMETOOLONG;
	n = snprintf(buf, len, "%s/%s", dir ? dir : DEFAULT_DIR, file);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static void fill_handle(struct shmbus_channel *ch, void *base,
			const struct geometry *g, uint32_t max_msg,
			uint32_t flags)
{
	uint8_t *b = base;

	ch->hdr = base;
	ch->subs = (struct shmbus_sub_slot *)(b + g->slots_off);
	ch->map_len = g->ctl_size;
	ch->data_len = g->data_size;
	ch->cap = g->cap;
	ch->mask = g->cap - 1;
	ch->cap_log2 = g->cap_log2;
	ch->seg_log2 = g->seg_log2;
	ch->max_msg = max_msg;
	ch->flags = flags;
	ch->nslots = SHMBUS_MAX_SLOTS;
	ch->huge = g->page > (uint64_t)sysconf(_SC_PAGESIZE);
}


#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

/* Set by shmbusd (sb_channel_no_prefault()): faulting a large ring's
 * pages into its mappings held its main thread (and every client) for as
 * long again as allocating them.  Its own readers and writers of rings
 * (replication, the journal, dead letters) take each page's first fault
 * as they reach it instead. */
static atomic_bool no_prefault;

void sb_channel_no_prefault(void)
{
	atomic_store_explicit(&no_prefault, true, memory_order_relaxed);
}

/* Faults every page of the mapping in for writing, so that no page fault
 * lands on the data path. */
static void prefault(void *base, size_t len, size_t page, bool rdonly)
{
	/* No edge: set once, before any channel is mapped. */
	if (atomic_load_explicit(&no_prefault, memory_order_relaxed))
		return;
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

/*
 * Validates the header of a mapped control file of `size` bytes against
 * the layout and returns the geometry.  Every field is checked before any
 * is used.
 */
static int validate(const struct shmbus_hdr *h, uint64_t size, uint64_t page,
		    struct geometry *g, struct hdr_fields *f)
{
	uint64_t cap, slots_off, data_off, file_size, data_size;
	uint32_t hdr_size, cap_log2, seg_log2, nslots, nseg;

	if (size < sizeof(*h))
		return -EPROTO;
	/* No edge: h is a private copy (snapshot_ident() made the acquire
	 * load of the magic). */
	if (load_relaxed64(&h->magic) != SHMBUS_MAGIC)
		return -EPROTO;
	if (load_relaxed32(&h->version) != SHMBUS_LAYOUT_VERSION)
		return -EPROTONOSUPPORT;
	/* Each field is read once, checked, and only the checked value is
	 * used: any process that maps the file may rewrite it meanwhile (a
	 * max_msg read again after its check could be anything). */
	cap = load_relaxed64(&h->capacity);
	hdr_size = load_relaxed32(&h->hdr_size);
	cap_log2 = load_relaxed32(&h->cap_log2);
	seg_log2 = load_relaxed32(&h->seg_log2);
	slots_off = load_relaxed64(&h->slots_offset);
	data_off = load_relaxed64(&h->data_offset);
	file_size = load_relaxed64(&h->file_size);
	data_size = load_relaxed64(&h->data_size);
	nslots = load_relaxed32(&h->nslots);
	nseg = load_relaxed32(&h->nseg);
	f->data_id = load_relaxed64(&h->data_id);
	f->flags = load_relaxed32(&h->flags);
	f->max_msg = load_relaxed32(&h->max_msg);
	if (hdr_size != SHMBUS_HDR_SIZE || geometry_for(cap, page, g))
		return -EBADMSG;
	if (cap_log2 != g->cap_log2 || seg_log2 != g->seg_log2 ||
	    slots_off != g->slots_off || data_off != 0 ||
	    file_size != g->ctl_size || size != g->ctl_size ||
	    data_size != g->data_size || f->data_id == 0 ||
	    nslots != SHMBUS_MAX_SLOTS || nseg != SHMBUS_NSEG ||
	    (f->flags & ~SHMBUS_F_KNOWN) || f->max_msg > max_msg_for(cap))
		return -EBADMSG;
	return 0;
}

/* The data file must be the one the control file names, of its size. */
static int validate_data(const uint8_t *base, uint64_t size,
			 const struct geometry *g, uint64_t id)
{
	const struct shmbus_data_trailer *t =
		(const void *)(base + g->cap +
			       SHMBUS_NSEG * sizeof(struct shmbus_seg));

	if (size != g->data_size)
		return -EBADMSG;
	/* A10: pairs with R10 in build_data(), the trailer's magic (stored
	 * before the control file exists anyway). */
	if (load_acquire64(&t->magic) != SHMBUS_DATA_MAGIC ||
	    t->data_id != id || t->capacity != g->cap)
		return -EBADMSG;
	return 0;
}

static uint64_t random_id(void)
{
	uint64_t id = 0;

	if (getrandom(&id, sizeof(id), 0) != sizeof(id))
		id = (uint64_t)sb_now_ns() ^ ((uint64_t)getpid() << 32);
	return id ? id : 1;
}

static void init_header(struct shmbus_hdr *h, const struct geometry *g,
			const struct shmbus_channel_attr *a, uint64_t id)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	h->version = SHMBUS_LAYOUT_VERSION;
	h->hdr_size = SHMBUS_HDR_SIZE;
	h->file_size = g->ctl_size;
	h->capacity = g->cap;
	h->data_offset = 0;
	h->slots_offset = g->slots_off;
	h->max_msg = sb_attr_max_msg(a);
	h->flags = sb_channel_flags(a->policy, a->producers);
	h->nslots = SHMBUS_MAX_SLOTS;
	h->cap_log2 = g->cap_log2;
	h->create_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	h->page_size = (uint32_t)g->page;
	h->numa_node = a->numa_node;
	h->nseg = SHMBUS_NSEG;
	h->seg_log2 = g->seg_log2;
	h->data_id = id;
	h->data_size = g->data_size;
	/* R0: pairs with A0 in validate(): everything above is visible to a
	 * process that sees the magic. */
	store_release64(&h->magic, SHMBUS_MAGIC);
}


/* Maps an open channel file and validates it. */

/* Copies the header's identity lines from the mapping into ident, the
 * magic first. */
static void snapshot_ident(const struct shmbus_hdr *h, uint64_t *ident)
{
	const uint64_t *w = (const uint64_t *)(const void *)h;

	/* A0: pairs with R0 in init_header() and in sb_ident_restore(): the
	 * magic is stored last, so every word after it is the creator's. */
	ident[0] = load_acquire64(&w[0]);
	for (unsigned i = 1; i < SB_IDENT_WORDS; i++)
		ident[i] = load_relaxed64(&w[i]);
}

/* Maps and validates a control file; the data is mapped by map_data().
 * What is validated is a copy of the identity lines, taken once: the
 * copy is what the handle keeps (ident), and any process that maps the
 * file may rewrite the lines meanwhile. */
static struct shmbus_channel *map_ctl(int fd, bool rdonly, struct geometry *g,
				      int *err)
{
	struct shmbus_channel *ch = NULL;
	union {
		struct shmbus_hdr h;	/* only its identity lines are set */
		uint64_t w[SB_IDENT_WORDS];
	} ident;
	struct hdr_fields f;
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
	snapshot_ident(base, ident.w);
	rc = validate(&ident.h, (uint64_t)st.st_size, page, g, &f);
	if (rc)
		goto fail;
	ch = calloc(1, sizeof(*ch));
	if (!ch) {
		rc = -ENOMEM;
		goto fail;
	}
	sb_gmap_init(ch);
	fill_handle(ch, base, g, f.max_msg, f.flags);
	memcpy(ch->ident, ident.w, sizeof(ch->ident));
	ch->rdonly = rdonly;
	ch->data_id = f.data_id;
	/* An inspector (busstat) touches a few lines of the control file and
	 * the data file's index: faulting the rest in at every look would
	 * cost it the whole ring's page tables (1.5 ms for 64 MiB). */
	if (!rdonly)
		prefault(base, g->ctl_size, page, false);
	return ch;
fail:
	if (base != MAP_FAILED)
		munmap(base, (size_t)st.st_size);
	*err = rc;
	return NULL;
}

/* Maps the data file (read-only if asked) into a handle from map_ctl();
 * on failure the handle is freed. */
static struct shmbus_channel *map_data(struct shmbus_channel *ch, int fd,
				       bool rdonly, const struct geometry *g,
				       int *err)
{
	struct stat st;
	void *base;
	int rc;

	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto fail;
	}
	if ((uint64_t)st.st_size != g->data_size) {
		rc = -EBADMSG;
		goto fail;
	}
	base = mmap(NULL, g->data_size,
		    rdonly ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED,
		    fd, 0);
	if (base == MAP_FAILED) {
		rc = -errno;
		goto fail;
	}
	rc = validate_data(base, (uint64_t)st.st_size, g, ch->data_id);
	if (rc) {
		munmap(base, g->data_size);
		goto fail;
	}
	ch->data = base;
	ch->segs = (struct shmbus_seg *)((uint8_t *)base + g->cap);
	ch->mbox = (struct shmbus_mbox *)((uint8_t *)base + g->cap +
					  SHMBUS_MBOX_OFFSET);
	ch->daemon = (struct shmbus_daemon_area *)((uint8_t *)base + g->cap +
						   SHMBUS_DAEMON_OFFSET);
	ch->prods = (struct shmbus_prod_slot *)((uint8_t *)base + g->cap +
						SHMBUS_PRODS_OFFSET);
	ch->pl = (struct shmbus_prod_line *)((uint8_t *)base + g->cap +
					     SHMBUS_PLINE_OFFSET);
	if (!ch->rdonly)
		prefault(base, g->data_size, g->page, rdonly);
	return ch;
fail:
	munmap(ch->hdr, ch->map_len);
	free(ch);
	*err = rc;
	return NULL;
}

struct shmbus_channel *sb_channel_map_fds(int ctl_fd, int data_fd,
					  enum sb_map_mode mode, int *err)
{
	struct shmbus_channel *ch;
	struct geometry g;

	ch = map_ctl(ctl_fd, mode == SB_MAP_RO, &g, err);
	if (!ch)
		return NULL;
	/* A subscriber writes its cursor slot, never a message: its data
	 * descriptor is read-only, and so is the mapping. */
	ch = map_data(ch, data_fd, mode == SB_MAP_RO || mode == SB_MAP_SUB, &g,
		      err);
	if (!ch)
		return NULL;
	ch->no_pub = mode == SB_MAP_SUB;
	ch->no_sub = mode == SB_MAP_PUB;
	return ch;
}

/* The data_id a control file names, without mapping it; 0 if it is not a
 * channel of this layout. */
static uint64_t peek_data_id(int fd)
{
	struct shmbus_hdr h;

	if (pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
	    h.magic != SHMBUS_MAGIC || h.version != SHMBUS_LAYOUT_VERSION)
		return 0;
	return h.data_id;
}

uint64_t sb_channel_data_id(const shmbus_channel *ch)
{
	return ch->data_id;
}

void sb_channel_file_sizes(shmbus_channel *ch, uint64_t *ctl, uint64_t *data)
{
	*ctl = ch->map_len;
	*data = ch->data_len;
}

int sb_channel_open_fds(const char *dir, const char *name, int *ctl_fd,
			int *data_rw, int *data_ro)
{
	char path[PATH_MAX];
	uint64_t id;
	int rc = make_path(path, sizeof(path), dir, name);

	*ctl_fd = *data_rw = *data_ro = -1;
	if (rc)
		return rc;
	*ctl_fd = sb_open_file(path, O_RDWR);
	if (*ctl_fd < 0) {
		rc = *ctl_fd;
		*ctl_fd = -1;
		return rc;
	}
	id = peek_data_id(*ctl_fd);
	rc = id ? data_path(path, sizeof(path), dir, name, id) : -EBADMSG;
	if (rc == 0) {
		*data_rw = sb_open_file(path, O_RDWR);
		*data_ro = sb_open_file(path, O_RDONLY);
		rc = *data_rw < 0 ? *data_rw : *data_ro < 0 ? *data_ro : 0;
		if (*data_rw < 0)
			*data_rw = -1;
		if (*data_ro < 0)
			*data_ro = -1;
	}
	if (rc) {
		for (int *f = ctl_fd; f; f = f == ctl_fd ? data_rw :
					      f == data_rw ? data_ro : NULL)
			if (*f >= 0) {
				close(*f);
				*f = -1;
			}
	}
	return rc;
}

/* Direct mode: where the channel's file is, for its groups' files. */
static void remember_place(struct shmbus_channel *ch, const char *dir,
			   const char *name)
{
	snprintf(ch->dir, sizeof(ch->dir), "%s", dir ? dir : DEFAULT_DIR);
	snprintf(ch->name, sizeof(ch->name), "%s", name);
}

/* Whether the control file `name` in dir is still the one open as fd. */
static bool still_named(int fd, const char *dir, const char *name)
{
	char path[PATH_MAX];
	struct stat a, b;

	return make_path(path, sizeof(path), dir, name) == 0 &&
	       fstat(fd, &a) == 0 && stat(path, &b) == 0 &&
	       a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static shmbus_channel *open_named_once(const char *dir, const char *name,
				       bool rdonly)
{
	char path[PATH_MAX];
	struct shmbus_channel *ch = NULL;
	struct geometry g;
	int fd, dfd = -1, rc;

	rc = make_path(path, sizeof(path), dir, name);
	if (rc)
		goto out;
	fd = sb_open_file(path, rdonly ? O_RDONLY : O_RDWR);
	if (fd < 0) {
		rc = fd;
		goto out;
	}
	ch = map_ctl(fd, rdonly, &g, &rc);
	if (!ch) {
		close(fd);
		goto out;
	}
	rc = data_path(path, sizeof(path), dir, name, ch->data_id);
	if (rc == 0) {
		dfd = sb_open_file(path, rdonly ? O_RDONLY : O_RDWR);
		/* A control file whose data file is missing is broken,
		 * unless the channel was deleted (or replaced) meanwhile:
		 * the name no longer leads to the file we opened. */
		rc = dfd < 0 ? dfd : 0;
		if (dfd == -ENOENT && still_named(fd, dir, name))
			rc = -EBADMSG;
	}
	close(fd);
	if (rc) {
		munmap(ch->hdr, ch->map_len);
		free(ch);
		ch = NULL;
		goto out;
	}
	ch = map_data(ch, dfd, rdonly, &g, &rc);
	close(dfd);
	if (ch)
		remember_place(ch, dir, name);
out:
	if (!ch)
		errno = -rc;
	return ch;
}

/* A channel replaced (SHMBUS_CREATE_REPLACE) while we opened it: its
 * name leads to the new one now, which a second look opens. */
static shmbus_channel *open_named(const char *dir, const char *name,
				  bool rdonly)
{
	shmbus_channel *ch = NULL;

	for (int tries = 0; tries < 8 && !ch; tries++)
		if (!(ch = open_named_once(dir, name, rdonly)) &&
		    errno != ENOENT)
			break;
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

/* Makes a new file of `size` bytes, allocated (so /dev/shm running full is
 * -ENOSPC here, not a SIGBUS in a publish) and mapped. */
static int new_file(const char *path, mode_t mode, bool data,
		    const struct shmbus_channel_attr *a, struct geometry *g,
		    void **basep)
{
	uint64_t size;
	void *base;
	int fd, rc;

	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	geometry_for(a->capacity, page_size_of(fd), g);
	size = data ? g->data_size : g->ctl_size;
	/* A tmpfs page is charged to our memory cgroup as it is allocated,
	 * and one past its limit runs the OOM killer on us (memcg.c). */
	if (data && size > sb_memcg_room() &&
	    page_size_of(fd) == (uint64_t)sysconf(_SC_PAGESIZE)) {
		rc = -ENOMEM;
		goto fail;
	}
	if (fchmod(fd, mode) < 0 || ftruncate(fd, (off_t)size) < 0) {
		rc = -errno;
		goto fail;
	}
	base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		rc = -errno;
		goto fail;
	}
	if (data) {
		/* Bind before the pages exist: tmpfs allocates them under
		 * the mapping's shared policy. */
		if (a->numa_node >= 0 && numa_available() >= 0)
			numa_tonode_memory(base, size, a->numa_node);
		madvise(base, g->cap, MADV_HUGEPAGE);
	}
	/* Every page allocated now (a full tmpfs says ENOSPC here, not
	 * SIGBUS later); the mapping that uses them faults them in when it
	 * is made (map_data()), not this one, which only builds the file. */
	rc = -posix_fallocate(fd, 0, (off_t)size);
	if (rc) {
		munmap(base, size);
		goto fail;
	}
	*basep = base;
	return fd;
fail:
	close(fd);
	unlink(path);
	return rc;
}

/* Builds the data file under its final (hidden, unique) name. */
static int build_data(const char *path, const struct shmbus_channel_attr *a,
		      uint64_t id)
{
	struct shmbus_data_trailer *t;
	struct geometry g;
	void *base;
	int fd = new_file(path, a->mode ? a->mode : 0600, true, a, &g, &base);

	if (fd < 0)
		return fd;
	t = (void *)((uint8_t *)base + g.cap +
		     SHMBUS_NSEG * sizeof(struct shmbus_seg));
	t->data_id = id;
	t->capacity = g.cap;
	/* R10: pairs with A10 in validate_data(). */
	store_release64(&t->magic, SHMBUS_DATA_MAGIC);
	munmap(base, g.data_size);
	return fd;
}

/* Builds a complete control file under a temporary name. */
static int build_ctl(const char *tmp, const struct shmbus_channel_attr *a,
		     uint64_t id)
{
	struct geometry g;
	void *base;
	int fd = new_file(tmp, a->mode ? a->mode : 0600, false, a, &g, &base);

	if (fd < 0)
		return fd;
	init_header(base, &g, a, id);
	munmap(base, g.ctl_size);
	return fd;
}

/* The existing file at `path` is acceptable to a non-replacing create if it
 * is a valid channel of the same geometry. */
static struct shmbus_channel *adopt_existing(const char *dir, const char *name,
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
	ch = open_named(dir, name, false);
	if (!ch) {
		*err = -errno;
		return NULL;
	}
	if (ch->cap != a->capacity || ch->max_msg != sb_attr_max_msg(a) ||
	    ch->flags != want) {
		shmbus_channel_close(ch);
		*err = -EEXIST;
		return NULL;
	}
	return ch;
}

/* The data_id of the channel file at path, 0 if none. */
static uint64_t data_id_at(const char *path)
{
	int fd = sb_open_file(path, O_RDONLY);
	uint64_t id;

	if (fd < 0)
		return 0;
	id = peek_data_id(fd);
	close(fd);
	return id;
}

SHMBUS_EXPORT shmbus_channel *
shmbus_channel_create(const char *dir, const char *name,
		      const struct shmbus_channel_attr *attr, unsigned flags)
{
	static _Atomic unsigned counter;
	char path[PATH_MAX], tmp[PATH_MAX], dpath[PATH_MAX];
	struct shmbus_channel *ch = NULL;
	uint64_t id = random_id(), old_id = 0;
	int fd = -1, dfd = -1, rc, n;

	rc = make_path(path, sizeof(path), dir, name);
	if (!rc)
		rc = shmbus_channel_attr_check(attr, NULL, 0);
	if (!rc)
		rc = data_path(dpath, sizeof(dpath), dir, name, id);
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
	/* A channel already there is adopted (or refused) before a ring is
	 * built and faulted in for nothing; link() below still settles a
	 * race with another creator. */
	if (!(flags & SHMBUS_CREATE_REPLACE)) {
		struct stat st;

		if (lstat(path, &st) == 0) {
			ch = adopt_existing(dir, name, attr, flags, &rc);
			if (ch || rc != -ENOENT)
				goto out;
		}
	}
	/* The data file first, under its own unique name that nothing
	 * refers to yet; then the control file that names it, built under
	 * a temporary name and linked last. */
	dfd = build_data(dpath, attr, id);
	if (dfd < 0) {
		rc = dfd;
		goto out;
	}
	fd = build_ctl(tmp, attr, id);
	if (fd < 0) {
		rc = fd;
		goto drop_data;
	}
	/* Mapped (and its pages faulted in) before it is linked in place:
	 * a create that fails for want of memory or address space leaves
	 * no channel behind. */
	ch = sb_channel_map_fds(fd, dfd, SB_MAP_RW, &rc);
	if (!ch) {
		unlink(tmp);
		goto drop_data;
	}
	if (flags & SHMBUS_CREATE_REPLACE) {
		old_id = data_id_at(path);
		if (rename(tmp, path) < 0) {
			rc = -errno;
			unlink(tmp);
			goto unmap;
		}
		/* Mappers of the old channel keep their memory. */
		if (old_id && old_id != id &&
		    data_path(tmp, sizeof(tmp), dir, name, old_id) == 0)
			unlink(tmp);
	} else {
		/* link() never replaces: two creators race safely, and the
		 * loser adopts the winner's channel, or links its own again
		 * if that one was deleted meanwhile. */
		for (int tries = 0;; tries++) {
			if (link(tmp, path) == 0)
				break;
			rc = -errno;
			if (rc != -EEXIST) {
				unlink(tmp);
				goto unmap;
			}
			/* Ours unmapped first: the room for the winner's. */
			shmbus_channel_close(ch);
			ch = adopt_existing(dir, name, attr, flags, &rc);
			if (ch || rc != -ENOENT || tries == 8) {
				unlink(tmp);
				unlink(dpath);
				goto out;
			}
			ch = sb_channel_map_fds(fd, dfd, SB_MAP_RW, &rc);
			if (!ch) {
				unlink(tmp);
				goto drop_data;
			}
		}
		unlink(tmp);
	}
	remember_place(ch, dir, name);
	goto out;
unmap:
	shmbus_channel_close(ch);
	ch = NULL;
drop_data:
	unlink(dpath);
out:
	if (fd >= 0)
		close(fd);
	if (dfd >= 0)
		close(dfd);
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
	munmap(ch->data, ch->data_len);
	munmap(ch->hdr, ch->map_len);
	/* A fork's copy of a lock may be held by a thread of the parent.
	 * No edge: gmap_pid is this thread's to read here (the handle is
	 * being closed: no other thread uses it). */
	if (load_relaxed32(&ch->gmap_pid) == (uint32_t)getpid())
		pthread_mutex_destroy(&ch->gmap_lock);
	free(ch);
}

/* The files of the channel's consumer groups (".NAME@GROUP.group"). */
static void unlink_groups(const char *dir, const char *name)
{
	size_t n = strlen(name);
	struct dirent *e;
	DIR *d = opendir(dir);

	if (!d)
		return;
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);

		if (len > n + 8 && e->d_name[0] == '.' &&
		    !strncmp(e->d_name + 1, name, n) && e->d_name[n + 1] == '@' &&
		    !strcmp(e->d_name + len - 6, ".group"))
			unlinkat(dirfd(d), e->d_name, 0);
	}
	closedir(d);
}

/* Removes channel `name`'s files.  With `want` (a data id), only if the
 * control file names it: -ESTALE, that file left, if it names another;
 * the data file of `want` goes in every case (named by its id, it is that
 * channel's alone).  A control file that cannot be read for want of a
 * descriptor (EMFILE, ENFILE) is removed by its name; one that cannot be
 * read otherwise is left, and the open's error returned. */
static int unlink_channel(const char *dir, const char *name, uint64_t want)
{
	char path[PATH_MAX], dpath[PATH_MAX];
	uint64_t id = 0;
	int rc = make_path(path, sizeof(path), dir, name), fd;

	if (rc)
		return rc;
	fd = sb_open_file(path, O_RDONLY);
	if (fd >= 0) {
		id = peek_data_id(fd);
		close(fd);
	}
	if (want && fd >= 0 && id != want)
		rc = -ESTALE;
	else if (want && fd < 0 && fd != -EMFILE && fd != -ENFILE &&
		 fd != -ENOENT)
		rc = fd;
	else if (unlink(path) < 0)
		rc = -errno;
	if (want)
		id = want;
	else if (rc)
		return rc;
	/* The control file is gone first: nobody opens the pair again. */
	if (id && data_path(dpath, sizeof(dpath), dir, name, id) == 0)
		unlink(dpath);
	if (!rc)
		unlink_groups(dir ? dir : DEFAULT_DIR, name);
	return rc;
}

SHMBUS_EXPORT int shmbus_channel_unlink(const char *dir, const char *name)
{
	return unlink_channel(dir, name, 0);
}

int sb_channel_unlink_id(const char *dir, const char *name, uint64_t data_id)
{
	return data_id ? unlink_channel(dir, name, data_id) : -EINVAL;
}
