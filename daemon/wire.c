/* SPDX-License-Identifier: MIT */
/*
 * wire.c - replication frames, and the proof that the peer holds the
 * pre-shared key.
 *
 * The proof is a challenge-response both ways, before anything else is
 * read: the client sends a nonce; the server answers with its own nonce
 * and HMAC-SHA256(key, "server" | client nonce | server nonce | bus); the
 * client checks it and answers HMAC-SHA256(key, "client" | server nonce |
 * client nonce | bus).  Each side has proved the key on a nonce it did
 * not choose; a recorded exchange is worth nothing later.  The key
 * authenticates the peer; it does not encrypt the link.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "repl.h"
#include "../lib/contract.h"

#define KEY_MIN 16u
#define KEY_MAX 1024u

static uint8_t key[KEY_MAX];
static size_t key_len;

/*
 * The nonces of this host's handshakes as a client, while they last.  A
 * listener that is offered one of them is being played our own
 * handshake back (an attacker relaying the challenge of our listener to
 * our client, to get both proofs without the key): it refuses.
 */
#define OUTSTANDING 64
static uint8_t outstanding[OUTSTANDING][RW_NONCE];
static bool in_use[OUTSTANDING];
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

static int nonce_hold(const uint8_t *n)
{
	int slot = -1;

	pthread_mutex_lock(&out_mu);
	for (int i = 0; i < OUTSTANDING && slot < 0; i++)
		if (!in_use[i]) {
			in_use[i] = true;
			memcpy(outstanding[i], n, RW_NONCE);
			slot = i;
		}
	pthread_mutex_unlock(&out_mu);
	return slot;
}

static void nonce_drop(int slot)
{
	if (slot < 0)
		return;
	pthread_mutex_lock(&out_mu);
	in_use[slot] = false;
	pthread_mutex_unlock(&out_mu);
}

static bool nonce_ours(const uint8_t *n)
{
	bool ours = false;

	pthread_mutex_lock(&out_mu);
	for (int i = 0; i < OUTSTANDING && !ours; i++)
		ours = in_use[i] && !memcmp(outstanding[i], n, RW_NONCE);
	pthread_mutex_unlock(&out_mu);
	return ours;
}

void rw_seal(struct rw_hdr *h, uint16_t type, uint64_t epoch, uint64_t chan,
	     uint64_t pos, const struct iovec *body, int n)
{
	uint32_t len = 0, crc;

	for (int i = 0; i < n; i++)
		len += (uint32_t)body[i].iov_len;
	*h = (struct rw_hdr){ .magic = RW_MAGIC, .version = RW_VERSION,
			      .type = type, .len = len, .epoch = epoch,
			      .chan = chan, .pos = pos };
	crc = sb_crc32c(0, h, sizeof(*h));
	for (int i = 0; i < n; i++)
		crc = sb_crc32c(crc, body[i].iov_base, body[i].iov_len);
	h->crc = crc;
}

int rw_check_hdr(const struct rw_hdr *h, uint32_t max_body, char *why,
		 size_t n)
{
	if (h->magic != RW_MAGIC) {
		snprintf(why, n, "bad magic 0x%08x", h->magic);
		return -EBADMSG;
	}
	if (h->version != RW_VERSION) {
		snprintf(why, n, "frame version %u (this is %u)", h->version,
			 RW_VERSION);
		return -EBADMSG;
	}
	if (h->type == 0 || h->type > RW_TYPE_MAX) {
		snprintf(why, n, "unknown frame type %u", h->type);
		return -EBADMSG;
	}
	if (h->len > max_body) {
		snprintf(why, n, "a frame of %u bytes (at most %u here)",
			 h->len, max_body);
		return -EBADMSG;
	}
	if (h->epoch >= RW_EPOCH_MAX || h->pos >= RW_POS_MAX) {
		snprintf(why, n, "epoch %" PRIu64 " or position %" PRIu64
			 " out of range", h->epoch, h->pos);
		return -EBADMSG;
	}
	return 0;
}

bool rw_crc_ok(const struct rw_hdr *h, const void *body)
{
	struct rw_hdr c = *h;
	uint32_t crc;

	c.crc = 0;
	crc = sb_crc32c(0, &c, sizeof(c));
	crc = sb_crc32c(crc, body, h->len);
	return crc == h->crc;
}

int rw_key_load(const char *path, char *why, size_t n)
{
	struct stat st;
	ssize_t r;
	/* Not blocking: a FIFO would wait for a writer (the check below
	 * refuses it). */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);

	if (fd < 0) {
		snprintf(why, n, "key file %s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) ||
	    (st.st_mode & (S_IRWXG | S_IRWXO))) {
		snprintf(why, n, "key file %s: not a regular file that only "
			 "its owner may read (chmod 600)", path);
		close(fd);
		return -1;
	}
	r = read(fd, key, sizeof(key));
	close(fd);
	if (r < (ssize_t)KEY_MIN || r >= (ssize_t)sizeof(key)) {
		snprintf(why, n, "key file %s: %zd bytes; a key has %u to %u",
			 path, r, KEY_MIN, KEY_MAX - 1);
		return -1;
	}
	key_len = (size_t)r;
	return 0;
}

void rw_mac(const char *label, const void *a, size_t an, const void *b,
	    size_t bn, const char *bus, uint8_t out[RW_MAC])
{
	uint8_t msg[64 + 2 * RW_NONCE + 64];
	size_t ln = strlen(label), bl = strnlen(bus, 63), o = 0;
	unsigned int outl = RW_MAC;

	memcpy(msg + o, label, ln);
	o += ln;
	memcpy(msg + o, a, an);
	o += an;
	memcpy(msg + o, b, bn);
	o += bn;
	memcpy(msg + o, bus, bl);
	o += bl;
	HMAC(EVP_sha256(), key, (int)key_len, msg, o, out, &outl);
}

bool rw_mac_equal(const uint8_t *a, const uint8_t *b)
{
	return CRYPTO_memcmp(a, b, RW_MAC) == 0;
}

static int send_body(const struct sbd_transport *t, struct sbd_link *l,
		     uint16_t type, const void *body, size_t len)
{
	struct iovec iov = { (void *)body, len };
	struct rw_hdr h;

	rw_seal(&h, type, 0, 0, 0, &iov, 1);
	return t->send(l, &h, &iov, 1, 2000);
}

void rw_refuse(const struct sbd_transport *t, struct sbd_link *l,
	       const char *why)
{
	send_body(t, l, RW_REFUSE, why, strnlen(why, RW_REASON - 1) + 1);
}

int rw_recv_frame(const struct sbd_transport *t, struct sbd_link *l,
		  struct rw_hdr *hdr, void *body, uint32_t max_body,
		  int timeout_ms, char *why, size_t n)
{
	char reason[RW_REASON];

	int rc = t->recv(l, hdr, sizeof(*hdr), timeout_ms);

	if (rc) {
		snprintf(why, n, "%s", rc == -ETIMEDOUT ? "timed out" :
			 rc == -ECONNRESET ? "closed by the peer" :
			 strerror(-rc));
		return rc;
	}
	/* A refusal's text is accepted whatever max_body says, into our
	 * own buffer. */
	rc = rw_check_hdr(hdr, hdr->type == RW_REFUSE ? RW_REASON : max_body,
			  why, n);
	if (rc)
		return rc;
	if (hdr->type == RW_REFUSE)
		body = reason;
	rc = t->recv(l, body, hdr->len, timeout_ms);
	if (rc) {
		snprintf(why, n, "%s", strerror(-rc));
		return rc;
	}
	if (!rw_crc_ok(hdr, body)) {
		snprintf(why, n, "CRC mismatch in a frame of type %u",
			 hdr->type);
		return -EBADMSG;
	}
	if (hdr->type == RW_REFUSE) {
		char *s = body;

		s[hdr->len ? hdr->len - 1 : 0] = 0;
		for (char *c = s; *c; c++)
			if (*c < ' ' || *c > '~')
				*c = '?';
		snprintf(why, n, "refused by the peer: %s", s);
		return -ECONNREFUSED;
	}
	return 0;
}

int rw_auth_server(const struct sbd_transport *t, struct sbd_link *l,
		   const char *bus, int timeout_ms, char *why, size_t n)
{
	uint8_t body[RW_REASON], mine[RW_NONCE], theirs[RW_NONCE];
	uint8_t chal[RW_NONCE + RW_MAC], mac[RW_MAC];
	struct rw_hdr h;
	int rc;

	rc = rw_recv_frame(t, l, &h, body, RW_NONCE, timeout_ms, why, n);
	if (rc)
		return rc;
	if (h.type != RW_HELLO0 || h.len != RW_NONCE) {
		snprintf(why, n, "frame type %u before the key's proof",
			 h.type);
		return -EACCES;
	}
	memcpy(theirs, body, RW_NONCE);
	if (nonce_ours(theirs)) {
		snprintf(why, n, "offered a nonce of this host's own "
			 "handshake: a reflected handshake");
		return -EACCES;
	}
	if (getrandom(mine, sizeof(mine), 0) != (ssize_t)sizeof(mine))
		return -EIO;
	memcpy(chal, mine, RW_NONCE);
	rw_mac("shmbus-repl-1 server", theirs, RW_NONCE, mine, RW_NONCE, bus,
	       chal + RW_NONCE);
	rc = send_body(t, l, RW_CHALLENGE, chal, sizeof(chal));
	if (rc)
		return rc;
	rc = rw_recv_frame(t, l, &h, body, RW_MAC, timeout_ms, why, n);
	if (rc) {
		snprintf(why, n, "the peer left during the key's proof (it "
			 "may hold another key)");
		return rc;
	}
	rw_mac("shmbus-repl-1 client", mine, RW_NONCE, theirs, RW_NONCE, bus,
	       mac);
	if (h.type != RW_AUTH || h.len != RW_MAC || !rw_mac_equal(body, mac)) {
		snprintf(why, n, "the peer does not prove the key (or serves "
			 "another bus)");
		rw_refuse(t, l, "authentication failed");
		return -EACCES;
	}
	return 0;
}

static int auth_client(const struct sbd_transport *t, struct sbd_link *l,
		       const char *bus, int timeout_ms, char *why, size_t n,
		       const uint8_t *mine);

int rw_auth_client(const struct sbd_transport *t, struct sbd_link *l,
		   const char *bus, int timeout_ms, char *why, size_t n)
{
	uint8_t mine[RW_NONCE];
	int rc, slot;

	if (getrandom(mine, sizeof(mine), 0) != (ssize_t)sizeof(mine))
		return -EIO;
	slot = nonce_hold(mine);
	rc = auth_client(t, l, bus, timeout_ms, why, n, mine);
	nonce_drop(slot);
	return rc;
}

static int auth_client(const struct sbd_transport *t, struct sbd_link *l,
		       const char *bus, int timeout_ms, char *why, size_t n,
		       const uint8_t *mine)
{
	uint8_t body[RW_REASON], mac[RW_MAC];
	struct rw_hdr h;
	int rc;

	rc = send_body(t, l, RW_HELLO0, mine, RW_NONCE);
	if (rc)
		return rc;
	rc = rw_recv_frame(t, l, &h, body, RW_NONCE + RW_MAC, timeout_ms, why,
			   n);
	if (rc)
		return rc;
	if (h.type != RW_CHALLENGE || h.len != RW_NONCE + RW_MAC) {
		snprintf(why, n, "frame type %u instead of the challenge",
			 h.type);
		return -EACCES;
	}
	rw_mac("shmbus-repl-1 server", mine, RW_NONCE, body, RW_NONCE, bus,
	       mac);
	if (!rw_mac_equal(body + RW_NONCE, mac)) {
		snprintf(why, n, "the peer does not prove the key (or serves "
			 "another bus)");
		return -EACCES;
	}
	rw_mac("shmbus-repl-1 client", body, RW_NONCE, mine, RW_NONCE, bus,
	       mac);
	return send_body(t, l, RW_AUTH, mac, sizeof(mac));
}
