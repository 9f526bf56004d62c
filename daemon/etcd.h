/* SPDX-License-Identifier: MIT */
/*
 * etcd.h - the few calls of etcd's v3 JSON gateway that leadership needs
 * (etcd.c): leases, a create-if-absent transaction, reads and writes of
 * one key.  Over HTTP with libcurl, JSON with jansson; keys and values
 * are base64 on the wire, 64-bit numbers JSON strings.  Endpoints are
 * tried in turn ("http://HOST:PORT", or "unix:/path" for a Unix socket).
 * One thread uses a handle.
 */
#ifndef SHMBUSD_ETCD_H
#define SHMBUSD_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ETCD_MAX_ENDPOINTS	8
#define ETCD_VALUE_MAX		256
#define ETCD_TTL_MAX	9000000000LL	/* etcd's longest lease, seconds: a
					 * TTL answered past it is refused */

struct etcd;

/* endpoints: comma-separated.  NULL on a bad list (why says). */
struct etcd *etcd_open(const char *endpoints, int timeout_ms, char *why,
		       size_t n);
void etcd_close(struct etcd *e);

/* Every call: 0, or -errno, that of the last endpoint tried: -ETIMEDOUT
 * (no answer within the timeout: etcd may have applied the request all
 * the same), -ECONNREFUSED, -EHOSTUNREACH, -ECONNRESET (no request made,
 * or no answer to it), -EPROTO (an answer that does not parse, or says an
 * error), -ENOMEM, -EIO (another failure of the transfer). */

/* 0 with the lease's id and the TTL etcd granted (seconds, 1 to
 * ETCD_TTL_MAX: etcd may grant more than asked, a gateway less). */
int etcd_lease_grant(struct etcd *e, int ttl_s, int64_t *id, int64_t *ttl);
/* 0 with the seconds left (0: the lease is gone; at most ETCD_TTL_MAX),
 * or -errno. */
int etcd_lease_keepalive(struct etcd *e, int64_t id, int64_t *ttl_left);
int etcd_lease_revoke(struct etcd *e, int64_t id);

struct etcd_kv {
	bool found;
	char value[ETCD_VALUE_MAX];	/* NUL-terminated */
	int64_t create_rev, mod_rev, lease;
};

/* Creates key = value under lease if the key does not exist: *won, and
 * kv the key as it is after (ours, or the holder's).  0 or -errno. */
int etcd_create(struct etcd *e, const char *key, const char *value,
		int64_t lease, bool *won, struct etcd_kv *kv);
/* Replaces key's value, keeping it under lease (0: none), only if its
 * mod_revision is still mod_rev (0: whatever it is): *won. */
int etcd_put_if(struct etcd *e, const char *key, const char *value,
		int64_t lease, int64_t mod_rev, bool *won);
int etcd_get(struct etcd *e, const char *key, struct etcd_kv *kv);
/* Puts key = value (no lease) only while `guard` is held under lease
 * `lease` (a leader's writes): *won. */
int etcd_put_under(struct etcd *e, const char *key, const char *value,
		   const char *guard, int64_t lease, bool *won);
/* Creates key = value under lease if it does not exist and `guard`'s
 * mod revision is still guard_mod (0: guard absent), and with it, if
 * guard_value is not NULL, guard = guard_value (no lease): *won, and kv
 * the key as it is after. */
int etcd_create_if(struct etcd *e, const char *key, const char *value,
		   int64_t lease, const char *guard, int64_t guard_mod,
		   const char *guard_value, bool *won, struct etcd_kv *kv);

/* Puts key back as it was (before: its value, or absent if !found; no
 * lease) only if its mod_revision is still mod_rev: *won.  0 or -errno. */
int etcd_restore_if(struct etcd *e, const char *key,
		    const struct etcd_kv *before, int64_t mod_rev, bool *won);

#endif
