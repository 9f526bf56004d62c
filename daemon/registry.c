/* SPDX-License-Identifier: MIT */
/*
 * registry.c - the daemon's channels and clients, in two liburcu
 * lock-free hash tables (rculfhash).
 *
 * Only the main thread adds and removes entries.  The reaper thread and the
 * request handlers look entries up and walk the tables inside
 * rcu_read_lock() sections and take no lock.  A removed entry is freed by
 * call_rcu() after every reader that might still see it has left its
 * read-side section; a channel's rules are replaced the same way on reload.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmbusd.h"

static struct cds_lfht *chans;
static struct cds_lfht *clients;

/* FNV-1a: names are short, and the table only needs a spread. */
uint64_t sbd_name_hash(const char *name)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (; *name; name++)
		h = (h ^ (uint8_t)*name) * UINT64_C(0x100000001b3);
	return h;
}

static uint64_t fd_hash(int fd)
{
	return (uint64_t)fd * UINT64_C(0x9e3779b97f4a7c15);
}

int sbd_registry_init(void)
{
	chans = cds_lfht_new(64, 64, 0,
			     CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, NULL);
	clients = cds_lfht_new(64, 64, 0,
			       CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING,
			       NULL);
	return chans && clients ? 0 : -ENOMEM;
}

struct cds_lfht *sbd_chans(void)
{
	return chans;
}

struct cds_lfht *sbd_clients(void)
{
	return clients;
}

static int match_name(struct cds_lfht_node *node, const void *key)
{
	return strcmp(caa_container_of(node, struct sbd_chan, node)->name,
		      key) == 0;
}

struct sbd_chan *sbd_chan_find(const char *name)
{
	struct cds_lfht_iter it;
	struct cds_lfht_node *n;

	cds_lfht_lookup(chans, sbd_name_hash(name), match_name, name, &it);
	n = cds_lfht_iter_get_node(&it);
	if (!n)
		return NULL;
	sbd_tsan_acquire(caa_container_of(n, struct sbd_chan, node));
	return caa_container_of(n, struct sbd_chan, node);
}

int sbd_chan_add(struct sbd_chan *c)
{
	struct cds_lfht_node *n;

	/* Everything written to c so far is visible to whoever finds it:
	 * rcu_assign_pointer() semantics inside cds_lfht_add_unique(). */
	sbd_tsan_release(c);
	rcu_read_lock();
	n = cds_lfht_add_unique(chans, sbd_name_hash(c->name), match_name,
				c->name, &c->node);
	rcu_read_unlock();
	return n == &c->node ? 0 : -EEXIST;
}

static void free_rules(struct rcu_head *h)
{
	free(caa_container_of(h, struct sbd_rules, rcu));
}

static void free_chan(struct rcu_head *h)
{
	struct sbd_chan *c = caa_container_of(h, struct sbd_chan, rcu);

	/* No reader sees c now: the reaper's kept groups go first. */
	for (size_t i = 0; i < SBD_GROUPS_SEEN; i++)
		sbd_group_seen_clear(&c->gseen[i]);
	shmbus_channel_close(c->ch);
	close(c->fd);
	close(c->data_rw);
	close(c->data_ro);
	free(c->rules);
	free(c);
}

void sbd_chan_remove(struct sbd_chan *c)
{
	rcu_read_lock();
	cds_lfht_del(chans, &c->node);
	rcu_read_unlock();
	call_rcu(&c->rcu, free_chan);
}

void sbd_rules_replace(struct sbd_chan *c, struct sbd_rules *r)
{
	struct sbd_rules *old;

	sbd_tsan_release(r);
	old = rcu_xchg_pointer(&c->rules, r);

	if (old)
		call_rcu(&old->rcu, free_rules);
}

unsigned long sbd_chan_count(void)
{
	long before, after;
	unsigned long count;

	rcu_read_lock();
	cds_lfht_count_nodes(chans, &before, &count, &after);
	rcu_read_unlock();
	return count;
}

int sbd_client_add(struct sbd_client *cl)
{
	sbd_tsan_release(cl);
	rcu_read_lock();
	cds_lfht_add(clients, fd_hash(cl->fd), &cl->node);
	rcu_read_unlock();
	return 0;
}

static void free_client(struct rcu_head *h)
{
	free(caa_container_of(h, struct sbd_client, rcu));
}

void sbd_client_remove(struct sbd_client *cl)
{
	rcu_read_lock();
	cds_lfht_del(clients, &cl->node);
	rcu_read_unlock();
	call_rcu(&cl->rcu, free_client);
}

void sbd_registry_fini(void)
{
	struct cds_lfht_iter it;
	struct sbd_chan *c;
	struct sbd_client *cl;

	rcu_read_lock();
	cds_lfht_for_each_entry(chans, &it, c, node)
		sbd_chan_remove(c);
	cds_lfht_for_each_entry(clients, &it, cl, node)
		sbd_client_remove(cl);
	rcu_read_unlock();
	rcu_barrier();	/* every call_rcu() above has run */
	cds_lfht_destroy(chans, NULL);
	cds_lfht_destroy(clients, NULL);
}
