/* SPDX-License-Identifier: MIT */
/*
 * repl.h - shmbusd's replication: the wire format, the transport
 * interface, and the agent's entry points (docs/replication.md).
 *
 *   crc32c.c     CRC-32C (ISA-L)
 *   (below)      what a transport offers the agent
 *   tcp.c        the TCP transport
 *   wire.c       frames: building, checking; the peer's proof of the key
 *   repl.c, repl_primary.c, repl_accept.c, repl_standby.c, epochs.c
 *                the agent (repl_int.h): roles, links, shipping,
 *                applying, epochs
 */
#ifndef SHMBUSD_REPL_H
#define SHMBUSD_REPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* ---------------------------------------------------------------- CRC */

/* The standard CRC-32C of buf, continuing from crc (0 to start). */

/* ------------------------------------------------------------- frames */

/*
 * Every frame is a 40-byte header and `len` bytes of body.  `crc` is the
 * CRC-32C of the header (with crc 0) followed by the body: a frame whose
 * bytes changed anywhere on the way is refused.  Integers are the
 * hosts' own byte order (the hello compares it through the magic).
 */
#define RW_MAGIC	0x31525342u	/* "BSR1" in memory order */
#define RW_VERSION	6u
#define RW_HDR		40u
#define RW_NONCE	32u
#define RW_MAC		32u		/* HMAC-SHA256 */
#define RW_REASON	256u

enum rw_type {
	RW_HELLO0 = 1,		/* client: its nonce */
	RW_CHALLENGE = 2,	/* server: its nonce, its proof */
	RW_AUTH = 3,		/* client: its proof */
	RW_HELLO = 4,		/* client: struct rw_hello */
	RW_ACCEPT = 5,		/* server: where shipping starts (pos), and
				 * struct rw_accept */
	RW_REFUSE = 6,		/* either: a reason, text */
	RW_DATA = 7,		/* primary: records at [pos, pos + len) */
	RW_ACK = 8,		/* standby: struct rw_ack */
	RW_PING = 9,		/* primary, idle: answered by an ACK */
	RW_PROMOTE = 10,	/* switchover: struct rw_promote */
	RW_PROMOTED = 11,	/* answer: the new epoch in the header */
	RW_GROUPS = 12,		/* primary: the channel's consumer groups,
				 * struct sb_group_state[len / its size] */
	RW_TYPE_MAX = 12,
};

/* RW_ACCEPT's body: how shipping starts, and the tag of the promotion
 * that began the primary's epoch (the header's; 0: not known), which the
 * standby records with the epoch (epochs.c). */
struct rw_accept {
	uint32_t restart;	/* RW_RESTART_* */
	uint32_t pad;
	uint64_t tag;
};

#define RW_RESTART_NONE	0u	/* pos is the standby's end */
#define RW_RESTART_GAP	1u	/* the standby skips ahead to pos (a gap) */
#define RW_RESTART_CUT	2u	/* the standby's records from pos on
				 * diverge: it cuts them off (rejoin.c) */

/* What a peer may say: an epoch, or a ring position, at or above these is
 * refused.  An epoch grows by one a promotion; a position by the bytes a
 * channel carries (2^62 bytes: 14 years at 10 GB/s).  Below them, no sum
 * the standby makes (a position plus a frame, plus a lap) wraps. */
#define RW_EPOCH_MAX	(UINT64_C(1) << 62)
#define RW_POS_MAX	SB_POS_MAX	/* lib/contract.h */

struct rw_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	uint32_t len;		/* body bytes */
	uint32_t crc;
	uint64_t epoch;
	uint64_t chan;		/* the channel's name hash, 0 for none */
	uint64_t pos;
};

/* What a hello says: a link for one channel, or a switchover's promote
 * (purpose RW_FOR_PROMOTE, channel empty). */
#define RW_FOR_LINK	1u
#define RW_FOR_PROMOTE	2u

struct rw_hello {
	char bus[64];
	char channel[256];
	uint32_t layout_version;
	uint32_t flags;		/* SHMBUS_F_* */
	uint64_t capacity;
	uint32_t max_msg;
	uint32_t purpose;	/* RW_FOR_* */
	uint64_t epoch;		/* the standby's newest epoch */
	uint64_t end;		/* the end of its committed records */
	uint64_t token;		/* not 0: its rings were made again since
				 * its last run; a random number of this
				 * run, which the primary's "in" record
				 * names once it has caught it up */
	uint64_t tag;		/* the tag of epoch's promotion here (0:
				 * not known): two hosts primary at one
				 * epoch differ in it */
};

struct rw_ack {
	uint64_t received;
	uint64_t applied;
	uint64_t persisted;	/* the standby's journal has synced it
				 * (0: no journal); at most applied */
};

/* Groups per RW_GROUPS frame, at most (struct sb_group_state each). */
#define RW_GROUPS_MAX	32u

#define RW_PROMOTE_MAX	64u

struct rw_promote {
	uint32_t n;
	uint32_t pad;
	struct {
		uint64_t chan;	/* name hash */
		uint64_t end;	/* the primary's final end */
	} e[RW_PROMOTE_MAX];
};

_Static_assert(sizeof(struct rw_hdr) == RW_HDR, "frame header size");

/* Fills a header and computes its CRC over the header and the body's
 * iovecs. */
void rw_seal(struct rw_hdr *h, uint16_t type, uint64_t epoch, uint64_t chan,
	     uint64_t pos, const struct iovec *body, int n);
/* Checks a received header's fixed fields: 0, or -EBADMSG with a reason.
 * The CRC is checked by rw_crc_ok() once the body is in. */
int rw_check_hdr(const struct rw_hdr *h, uint32_t max_body, char *why,
		 size_t n);
bool rw_crc_ok(const struct rw_hdr *h, const void *body);

/* ----------------------------------------------------------- transport */

/*
 * What the agent needs of a transport: a listener, a connection to the
 * peer, and whole frames each way.  Every call returns 0 or -errno; a
 * frame is sent whole or the link is to be dropped.  TCP is tcp.c; an
 * RDMA transport offers the same calls.
 */
struct sbd_link;

struct sbd_transport {
	const char *name;
	int (*listen)(const char *addr, int *lfd, char *why, size_t n);
	/* Accepts one connection on lfd (blocking, until shut down). */
	int (*accept)(int lfd, struct sbd_link **out);
	int (*connect)(const char *addr, int timeout_ms, struct sbd_link **out);
	/* Resolves the host of `addr` (the peer's listen address,
	 * host:port), before the listener starts; then whether an accepted
	 * link comes from it (its handshakes have places of their own,
	 * repl.c), asked by the listener thread alone. */
	int (*peer_host)(const char *addr);
	bool (*from_peer)(const struct sbd_link *l);
	/* The header and up to 3 body iovecs, whole, waiting at most
	 * timeout_ms for the peer to take them (-ETIMEDOUT). */
	int (*send)(struct sbd_link *l, const struct rw_hdr *h,
		    const struct iovec *body, int n, int timeout_ms);
	/* Exactly n bytes, waiting at most timeout_ms (-ETIMEDOUT). */
	int (*recv)(struct sbd_link *l, void *buf, size_t n, int timeout_ms);
	/* Whether bytes wait to be received (without waiting). */
	bool (*pending)(struct sbd_link *l);
	/* Whether the last read took all the socket held, and nothing is
	 * buffered: bytes may have come since (pending() would make a
	 * system call to see). */
	bool (*drained)(const struct sbd_link *l);
	/* Before it sleeps for data, recv looks again for up to spin_ns,
	 * yielding the CPU between looks, while when(arg) says so (NULL:
	 * always).  work(arg, true), if not NULL, runs before each look
	 * and says whether to make it (false: nothing is expected yet);
	 * work(arg, false) runs when the looking ends with nothing (recv
	 * sleeps next). */
	void (*set_spin)(struct sbd_link *l, int64_t spin_ns,
			 bool (*when)(void *arg),
			 bool (*work)(void *arg, bool more), void *arg);
	/* While a send waits for the peer to take its bytes, fn(arg) runs
	 * every millisecond or so, in the sending thread. */
	void (*set_send_wait)(struct sbd_link *l, void (*fn)(void *arg),
			      void *arg);
	/* Makes every blocked call on the link return (another thread). */
	void (*shutdown)(struct sbd_link *l);
	void (*close)(struct sbd_link *l);
	/* The peer's address, for log lines. */
	const char *(*peer)(const struct sbd_link *l);
};

extern const struct sbd_transport sbd_tcp;

/* ----------------------------------------------------------- key proof */

/* The pre-shared key: 16..1024 bytes from a file that only its owner may
 * read.  0 or -1 with a reason. */
int rw_key_load(const char *path, char *why, size_t n);
/* HMAC-SHA256 of the label and the pieces under the key. */
void rw_mac(const char *label, const void *a, size_t an, const void *b,
	    size_t bn, const char *bus, uint8_t out[RW_MAC]);
bool rw_mac_equal(const uint8_t *a, const uint8_t *b);
/* The two ends of the proof: the server's (listener) and the client's.
 * 0, or -EACCES (the peer does not hold the key), or a link error. */
int rw_auth_server(const struct sbd_transport *t, struct sbd_link *l,
		   const char *bus, int timeout_ms, char *why, size_t n);
int rw_auth_client(const struct sbd_transport *t, struct sbd_link *l,
		   const char *bus, int timeout_ms, char *why, size_t n);
/* Sends a frame with a text body (RW_REFUSE). */
void rw_refuse(const struct sbd_transport *t, struct sbd_link *l,
	       const char *why);
/* Receives one frame of at most max_body into hdr/body: 0, or -errno
 * with why (a refusal received is -ECONNREFUSED and its text). */
int rw_recv_frame(const struct sbd_transport *t, struct sbd_link *l,
		  struct rw_hdr *hdr, void *body, uint32_t max_body,
		  int timeout_ms, char *why, size_t n);

#endif /* SHMBUSD_REPL_H */
