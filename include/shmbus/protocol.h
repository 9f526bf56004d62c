/* SPDX-License-Identifier: MIT */
/*
 * shmbus/protocol.h - the control protocol between clients and shmbusd.
 *
 * A Unix socket of type SOCK_SEQPACKET: every request and every reply is
 * one datagram, at most SHMBUS_CTL_MAX bytes: a struct shmbus_ctl_hdr and
 * `len` bytes of body.  Integers are in host order (both ends are on one
 * host).  Strings are fixed-size, NUL-padded fields; a field without a NUL
 * is malformed.  The client's identity is never taken from the message:
 * the daemon reads it from the socket (SO_PEERCRED, SO_PEERGROUPS).
 *
 * A reply carries the request's type | SHMBUS_CTL_REPLY, the same id,
 * the request's version, and a status (0 or a negative errno).  OPEN's
 * reply carries the channel's two descriptors as SCM_RIGHTS ancillary
 * data.  From version 2 on, a refusal (status < 0) may carry a reason as
 * its body: 2 to SHMBUS_CTL_REASON bytes of printable text ending with a
 * NUL ("capacity 5000 is not a power of two...").  Version 3 adds GROUP's
 * data_id.  A daemon answers every version from SHMBUS_CTL_VERSION_MIN to
 * its own, each with that version's bodies.  docs/protocol.md is the full
 * description.
 */
#ifndef SHMBUS_PROTOCOL_H
#define SHMBUS_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#include "static_assert.h"

#define SHMBUS_CTL_MAGIC	0x31434253u	/* "SBC1" */
#define SHMBUS_CTL_VERSION	3u	/* what this header describes */
#define SHMBUS_CTL_VERSION_MIN	1u	/* the oldest a daemon still answers */
#define SHMBUS_CTL_MAX		65536u		/* one datagram, header included */
#define SHMBUS_CTL_NAME		256u		/* name fields, NUL included */
#define SHMBUS_CTL_REPLY	0x8000u
#define SHMBUS_CTL_REASON	256u		/* a refusal's reason, NUL included */

enum shmbus_ctl_type {
	SHMBUS_CTL_HELLO = 1,	 /* body: none; reply: struct shmbus_ctl_hello */
	SHMBUS_CTL_OPEN = 2,	 /* body: struct shmbus_ctl_open; reply: fd */
	SHMBUS_CTL_ATTACH = 3,	 /* body: struct shmbus_ctl_open; no fd */
	SHMBUS_CTL_CREATE = 4,	 /* body: struct shmbus_ctl_create */
	SHMBUS_CTL_DELETE = 5,	 /* body: struct shmbus_ctl_name */
	SHMBUS_CTL_LIST = 6,	 /* body: struct shmbus_ctl_list; reply: same
				  * + entries */
	SHMBUS_CTL_DESCRIBE = 7, /* body: struct shmbus_ctl_name; reply:
				  * struct shmbus_ctl_desc */
	SHMBUS_CTL_REPL = 8,	 /* body: struct shmbus_ctl_repl; reply:
				  * struct shmbus_ctl_repl_reply (admins) */
	SHMBUS_CTL_GROUP = 9,	 /* body: struct shmbus_ctl_group; reply: the
				  * group file's fd (subscribe rule), or
				  * with SHMBUS_CTL_GROUP_DELETE none
				  * (admins) */
	SHMBUS_CTL_JOURNAL = 10, /* body: struct shmbus_ctl_journal; reply:
				  * a journal file's fd, read-only, or the
				  * list of its segments (subscribe rule) */
};

/* Roles, in OPEN and ATTACH. */
#define SHMBUS_CTL_ROLE_PUB	1u
#define SHMBUS_CTL_ROLE_SUB	2u

struct shmbus_ctl_hdr {
	uint32_t magic;		/* SHMBUS_CTL_MAGIC */
	uint16_t version;	/* SHMBUS_CTL_VERSION */
	uint16_t type;		/* enum shmbus_ctl_type, | REPLY in replies */
	uint32_t id;		/* chosen by the client, echoed */
	uint32_t len;		/* body bytes after this header */
	int32_t status;		/* replies: 0 or -errno; requests: 0 */
	uint32_t reserved;	/* 0 */
};

struct shmbus_ctl_hello {
	uint32_t daemon_pid;
	uint32_t channels;
	char bus[64];
};

struct shmbus_ctl_name {
	char name[SHMBUS_CTL_NAME];
};

struct shmbus_ctl_open {
	uint32_t role;		/* SHMBUS_CTL_ROLE_* */
	uint32_t flags;		/* 0 */
	char name[SHMBUS_CTL_NAME];
};

/* Joining a consumer group: the daemon creates the group (from its config,
 * else from these settings) and hands out its file. */
struct shmbus_ctl_group {
	char channel[SHMBUS_CTL_NAME];
	char group[64];
	char dead_letter[SHMBUS_CTL_NAME];	/* "" : none */
	uint32_t mode;		/* SHMBUS_GMODE_* */
	uint32_t window;
	uint32_t lanes;
	uint32_t max_deliveries;
	int64_t lease_ns;
	uint32_t start;		/* enum shmbus_start */
	uint32_t flags;		/* 0, or SHMBUS_CTL_GROUP_DELETE */
	/* Version 3: the channel the client has mapped (its data id), or
	 * 0 for whichever the name leads to.  A channel deleted and made
	 * again under the name since is another: -ESTALE, nothing done. */
	uint64_t data_id;
};

/* The body of GROUP in versions 1 and 2: without data_id. */
#define SHMBUS_CTL_GROUP_V2_LEN	608u

/* shmbus_ctl_group.flags: delete the group (its file and its hold on the
 * channel) instead of joining it; the settings are not read. */
#define SHMBUS_CTL_GROUP_DELETE	1u

/* A channel's journal (docs/journal.md), for a replaying subscriber:
 * LIST answers with the bases (uint64_t each, ascending) of the segments
 * whose base is at least `base` (a multiple of SHMBUS_JSEG_MIN, as every
 * base is), at most SHMBUS_CTL_JNL_MAX of them (the oldest): a journal of
 * more is listed page by page, each asked from the last base answered +
 * SHMBUS_JSEG_MIN; SEG and TIX with the read-only fd of segment `base` or
 * of its time index. */
#define SHMBUS_CTL_JNL_LIST	0u
#define SHMBUS_CTL_JNL_SEG	1u
#define SHMBUS_CTL_JNL_TIX	2u
#define SHMBUS_CTL_JNL_MAX	8000u

struct shmbus_ctl_journal {
	char channel[SHMBUS_CTL_NAME];
	uint32_t what;		/* SHMBUS_CTL_JNL_* */
	uint32_t flags;		/* 0 */
	uint64_t base;		/* LIST: the lowest to list; SEG, TIX */
};

struct shmbus_ctl_create {
	char name[SHMBUS_CTL_NAME];
	uint64_t capacity;
	uint32_t max_msg;
	uint32_t policy;	/* enum shmbus_policy */
	uint32_t producers;	/* enum shmbus_producers */
	int32_t numa_node;
	uint32_t mode;
	uint32_t reserved;
};

/* LIST: the request's offset is the first entry wanted; the reply's body
 * is this struct (total channels, entries in this reply) and then `count`
 * entries.  Page with offset += count until offset == total. */
struct shmbus_ctl_list {
	uint32_t offset;
	uint32_t total;
	uint32_t count;
	uint32_t reserved;
};

struct shmbus_ctl_entry {
	char name[SHMBUS_CTL_NAME];
	uint64_t capacity;
	uint32_t max_msg;
	uint32_t flags;		/* SHMBUS_F_* of the layout */
	uint32_t subscribers;
	uint32_t producers;
	uint64_t published;
};

struct shmbus_ctl_desc {
	struct shmbus_ctl_entry e;
	int32_t numa_node;
	uint32_t mode;
	uint64_t head;
	uint64_t bytes;
	uint64_t backpressure;
	uint64_t repairs;
	uint64_t reaped;
	uint32_t clients;	/* connected clients that opened it */
	uint32_t configured;	/* 1: from the config file; 0: created */
	char publish[SHMBUS_CTL_NAME];	/* the rules, as configured */
	char subscribe[SHMBUS_CTL_NAME];
};

/* Replication requests (shmbusctl status, promote, demote, switchover). */
#define SHMBUS_REPL_OP_STATUS		1u
#define SHMBUS_REPL_OP_PROMOTE		2u
#define SHMBUS_REPL_OP_DEMOTE		3u
#define SHMBUS_REPL_OP_SWITCHOVER	4u
#define SHMBUS_REPL_FORCE		0x1u	/* demote: do not wait for the
						 * standby to apply everything */

struct shmbus_ctl_repl {
	uint32_t op;		/* SHMBUS_REPL_OP_* */
	uint32_t flags;		/* SHMBUS_REPL_FORCE */
};

struct shmbus_ctl_repl_reply {
	uint32_t role;		/* 1 primary, 2 standby */
	uint32_t pad;
	uint64_t epoch;
	uint64_t duration_ns;	/* of the request */
	char text[512];		/* what happened, in words */
};

#define SHMBUS_CTL_LIST_PAGE \
	((SHMBUS_CTL_MAX - sizeof(struct shmbus_ctl_hdr) - \
	  sizeof(struct shmbus_ctl_list)) / sizeof(struct shmbus_ctl_entry))

SHMBUS_STATIC_ASSERT(sizeof(struct shmbus_ctl_hdr) == 24, "ctl hdr size");
SHMBUS_STATIC_ASSERT(offsetof(struct shmbus_ctl_group, data_id) ==
			     SHMBUS_CTL_GROUP_V2_LEN &&
		     sizeof(struct shmbus_ctl_group) ==
			     SHMBUS_CTL_GROUP_V2_LEN + 8, "ctl group size");
SHMBUS_STATIC_ASSERT(sizeof(struct shmbus_ctl_create) == 288,
		     "ctl create size");
SHMBUS_STATIC_ASSERT(sizeof(struct shmbus_ctl_entry) == 288, "ctl entry size");

#endif /* SHMBUS_PROTOCOL_H */
