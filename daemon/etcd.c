/* SPDX-License-Identifier: MIT */
/*
 * etcd.c - a small client of etcd's v3 JSON gateway (etcd.h): POST a
 * JSON body to /v3/..., parse the JSON answer.  Every field of an answer
 * is checked before use (an etcd we talk to is trusted to be etcd, not to
 * be well-formed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "etcd.h"

#define ANSWER_MAX	(64u << 10)

struct endpoint {
	char url[160];		/* "http://host:port" or "http://localhost" */
	char sock[108];		/* a Unix socket's path, or "" */
};

struct etcd {
	CURL *h;
	struct endpoint ep[ETCD_MAX_ENDPOINTS];
	int n, cur;
	long timeout_ms;
	char buf[ANSWER_MAX + 1];
	size_t len;
	bool overflow;
};

static size_t on_data(char *p, size_t size, size_t nmemb, void *arg)
{
	struct etcd *e = arg;
	size_t n = size * nmemb;

	if (n > ANSWER_MAX - e->len) {
		e->overflow = true;
		return 0;	/* curl fails the transfer */
	}
	memcpy(e->buf + e->len, p, n);
	e->len += n;
	return n;
}

struct etcd *etcd_open(const char *endpoints, int timeout_ms, char *why,
		       size_t n)
{
	static bool inited;
	struct etcd *e = calloc(1, sizeof(*e));
	const char *p = endpoints;

	if (!e) {
		snprintf(why, n, "out of memory");
		return NULL;
	}
	if (!inited) {
		curl_global_init(CURL_GLOBAL_DEFAULT);
		inited = true;
	}
	while (*p) {
		size_t len = strcspn(p, ",");
		char one[200];

		if (e->n == ETCD_MAX_ENDPOINTS || len == 0 ||
		    len >= sizeof(one)) {
			snprintf(why, n, "etcd endpoints: at most %d, each a "
				 "URL of fewer than 160 characters",
				 ETCD_MAX_ENDPOINTS);
			free(e);
			return NULL;
		}
		memcpy(one, p, len);
		one[len] = 0;
		if (!strncmp(one, "unix:", 5) && one[5] == '/' &&
		    strlen(one + 5) < sizeof(e->ep[0].sock)) {
			strcpy(e->ep[e->n].sock, one + 5);
			strcpy(e->ep[e->n].url, "http://localhost");
		} else if (!strncmp(one, "http://", 7) && one[7] &&
			   !strchr(one + 7, '/')) {
			strcpy(e->ep[e->n].url, one);
		} else {
			snprintf(why, n, "etcd endpoint '%s': http://HOST:PORT "
				 "or unix:/PATH", one);
			free(e);
			return NULL;
		}
		e->n++;
		p += len;
		if (*p == ',')
			p++;
	}
	if (!e->n) {
		snprintf(why, n, "no etcd endpoint");
		free(e);
		return NULL;
	}
	e->h = curl_easy_init();
	if (!e->h) {
		snprintf(why, n, "curl_easy_init failed");
		free(e);
		return NULL;
	}
	e->timeout_ms = timeout_ms;
	return e;
}

void etcd_close(struct etcd *e)
{
	if (!e)
		return;
	curl_easy_cleanup(e->h);
	free(e);
}

/* What a failed transfer says, as an errno: a request that waited its
 * whole timeout (-ETIMEDOUT) may still have been applied by etcd, one that
 * found nobody listening (-ECONNREFUSED) or no host (-EHOSTUNREACH) was
 * never sent. */
static int curl_errno(CURLcode cc)
{
	switch (cc) {
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
		return -ECONNRESET;
	case CURLE_WRITE_ERROR:		/* on_data(): an answer too long */
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_HTTP_RETURNED_ERROR:
		return -EPROTO;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

/* POSTs body to path on an endpoint that answers (the last one that did
 * first); *out the parsed answer.  0, or the last endpoint's failure:
 * -ETIMEDOUT (no answer in time: the request may have been applied),
 * -ECONNREFUSED, -EHOSTUNREACH, -ECONNRESET, -EPROTO (an answer that does
 * not parse, or too long), -ENOMEM, -EIO.  A request that is not `again`
 * (a transaction, a put: applied twice, the second copy's compare fails
 * on what the first wrote, and its answer says the opposite of what
 * happened) goes to the next endpoint only if it was never sent (no
 * connection made); once sent, a failure is the caller's, whose outcome
 * is unknown. */
static int post_to(struct etcd *e, const char *path, json_t *body,
		   json_t **out, bool again)
{
	char *text = json_dumps(body, JSON_COMPACT);
	int rc = -EHOSTUNREACH;

	json_decref(body);
	*out = NULL;
	if (!text)
		return -ENOMEM;
	for (int k = 0; k < e->n; k++) {
		struct endpoint *ep = &e->ep[(e->cur + k) % e->n];
		char url[200];
		long code = 0;
		json_error_t err;
		CURLcode cc;

		snprintf(url, sizeof(url), "%s%s", ep->url, path);
		curl_easy_reset(e->h);
		curl_easy_setopt(e->h, CURLOPT_URL, url);
		if (ep->sock[0])
			curl_easy_setopt(e->h, CURLOPT_UNIX_SOCKET_PATH,
					 ep->sock);
		curl_easy_setopt(e->h, CURLOPT_POSTFIELDS, text);
		curl_easy_setopt(e->h, CURLOPT_TIMEOUT_MS, e->timeout_ms);
		curl_easy_setopt(e->h, CURLOPT_CONNECTTIMEOUT_MS,
				 e->timeout_ms);
		curl_easy_setopt(e->h, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(e->h, CURLOPT_WRITEFUNCTION, on_data);
		curl_easy_setopt(e->h, CURLOPT_WRITEDATA, e);
		curl_easy_setopt(e->h, CURLOPT_PROTOCOLS_STR, "http");
		e->len = 0;
		e->overflow = false;
		cc = curl_easy_perform(e->h);
		if (cc != CURLE_OK) {
			curl_off_t sent = 0;

			rc = curl_errno(cc);
			/* Connected: the request may have gone out whole. */
			curl_easy_getinfo(e->h, CURLINFO_PRETRANSFER_TIME_T,
					  &sent);
			if (!again && sent > 0)
				break;
			continue;	/* the next endpoint */
		}
		curl_easy_getinfo(e->h, CURLINFO_RESPONSE_CODE, &code);
		e->buf[e->len] = 0;
		*out = json_loadb(e->buf, e->len, 0, &err);
		/* An answer came, one it cannot use (a proxy's error
		 * page...): the request reached a server and may have been
		 * applied, so only a request that may go again does. */
		if (!*out || !json_is_object(*out)) {
			json_decref(*out);
			*out = NULL;
			rc = -EPROTO;
			if (!again)
				break;
			continue;
		}
		e->cur = (e->cur + k) % e->n;
		rc = 0;
		if (code != 200 && !json_object_get(*out, "error")) {
			json_decref(*out);
			*out = NULL;
			rc = -EPROTO;
			if (!again)
				break;
			continue;
		}
		break;
	}
	free(text);
	return rc;
}

/* A read, a lease's grant, keepalive or revoke: sent again to the next
 * endpoint after any failure (a second grant leaves a lease nobody uses,
 * which runs out; a second revoke finds the lease gone). */
static int post(struct etcd *e, const char *path, json_t *body, json_t **out)
{
	return post_to(e, path, body, out, true);
}

/* A JSON string holding a decimal int64 (etcd's encoding), or absent
 * (etcd leaves out a field that is 0): true with *x; false if it is
 * something else. */
static bool num(json_t *o, const char *key, int64_t *x)
{
	json_t *v = json_object_get(o, key);
	const char *s;
	char *end;
	long long n;

	*x = 0;
	if (!v)
		return true;
	if (json_is_integer(v)) {
		*x = (int64_t)json_integer_value(v);
		return true;
	}
	if (!json_is_string(v))
		return false;
	s = json_string_value(v);
	errno = 0;
	n = strtoll(s, &end, 10);
	if (errno || end == s || *end)
		return false;
	*x = (int64_t)n;
	return true;
}

/* A lease's TTL as etcd answers it: seconds, 0 to etcd's own bound. */
static bool ttl_num(json_t *o, const char *key, int64_t *x)
{
	return num(o, key, x) && *x >= 0 && *x <= ETCD_TTL_MAX;
}

static json_t *str64(int64_t x)
{
	char b[32];

	snprintf(b, sizeof(b), "%" PRId64, x);
	return json_string(b);
}

static json_t *b64(const char *s)
{
	size_t n = strlen(s);
	char out[4 * ((ETCD_VALUE_MAX + 2) / 3) + 8];

	if (n > ETCD_VALUE_MAX)
		n = ETCD_VALUE_MAX;
	EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
	return json_string(out);
}

/* Decodes a base64 value into kv->value; false if it is not valid. */
static bool unb64(const char *in, char *out, size_t cap)
{
	size_t n = strlen(in);
	unsigned char tmp[4 * ETCD_VALUE_MAX];
	int got;

	if (n % 4 || n / 4 * 3 > sizeof(tmp))
		return false;
	got = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)n);
	if (got < 0)
		return false;
	while (n && in[n - 1] == '=') {
		got--;
		n--;
	}
	if ((size_t)got >= cap || memchr(tmp, 0, (size_t)got))
		return false;
	memcpy(out, tmp, (size_t)got);
	out[got] = 0;
	return true;
}

/* The first key-value of a range answer into kv. */
static int read_kvs(json_t *range, struct etcd_kv *kv)
{
	json_t *kvs = json_object_get(range, "kvs"), *one;
	json_t *v;

	memset(kv, 0, sizeof(*kv));
	if (!kvs)
		return 0;	/* no such key */
	if (!json_is_array(kvs) || json_array_size(kvs) < 1)
		return json_is_array(kvs) ? 0 : -EPROTO;
	one = json_array_get(kvs, 0);
	if (!json_is_object(one))
		return -EPROTO;
	v = json_object_get(one, "value");
	if (v && (!json_is_string(v) ||
		  !unb64(json_string_value(v), kv->value, sizeof(kv->value))))
		return -EPROTO;
	kv->found = true;
	if (!num(one, "create_revision", &kv->create_rev) ||
	    !num(one, "mod_revision", &kv->mod_rev) ||
	    !num(one, "lease", &kv->lease) || kv->create_rev <= 0 ||
	    kv->mod_rev < kv->create_rev || kv->lease < 0)
		return -EPROTO;
	return 0;
}

int etcd_lease_grant(struct etcd *e, int ttl_s, int64_t *id, int64_t *ttl)
{
	json_t *ans;
	int rc = post(e, "/v3/lease/grant", json_pack("{s:i}", "TTL", ttl_s),
		      &ans);

	if (rc)
		return rc;
	rc = num(ans, "ID", id) && *id > 0 && ttl_num(ans, "TTL", ttl) &&
	     *ttl > 0 ? 0 : -EPROTO;
	json_decref(ans);
	return rc;
}

int etcd_lease_keepalive(struct etcd *e, int64_t id, int64_t *ttl_left)
{
	json_t *ans, *res;
	int64_t of;
	int rc = post(e, "/v3/lease/keepalive",
		      json_pack("{s:o}", "ID", str64(id)), &ans);

	*ttl_left = 0;
	if (rc)
		return rc;
	res = json_object_get(ans, "result");
	/* The answer must be about our lease: a proxy or a gateway that
	 * mixed answers up must not extend a term that etcd did not. */
	if (!json_is_object(res) || !num(res, "ID", &of) || of != id ||
	    !ttl_num(res, "TTL", ttl_left)) {
		*ttl_left = 0;
		rc = -EPROTO;
	}
	json_decref(ans);
	return rc;
}

int etcd_lease_revoke(struct etcd *e, int64_t id)
{
	json_t *ans, *err;
	int rc = post(e, "/v3/lease/revoke",
		      json_pack("{s:o}", "ID", str64(id)), &ans);

	if (rc)
		return rc;
	/* "requested lease not found": gone already (revoked, or run
	 * out).  Any other error (etcd's own "request timed out") may
	 * still be applied, or not. */
	err = json_object_get(ans, "error");
	if (err && !(json_is_string(err) &&
		     strstr(json_string_value(err), "lease not found")))
		rc = -EPROTO;
	json_decref(ans);
	return rc;
}

/* A transaction: compare (one condition, or an array of them), then put
 * (lease) on success, range on failure; *won, and kv from the failure's
 * range. */
/* If every comparison holds: key = value (under lease, 0: none) and, if
 * key2 is not NULL, key2 = value2 (no lease), in one revision: *won;
 * else kv (if not NULL) gets key as it is. */
static int txn2(struct etcd *e, json_t *compare, const char *key,
		const char *value, int64_t lease, const char *key2,
		const char *value2, bool *won, struct etcd_kv *kv)
{
	json_t *put = json_pack("{s:o,s:o}", "key", b64(key), "value",
				b64(value));
	json_t *ops, *ans, *resp;
	int rc;

	if (lease)
		json_object_set_new(put, "lease", str64(lease));
	ops = json_pack("[{s:o}]", "request_put", put);
	if (key2)
		json_array_append_new(ops, json_pack("{s:{s:o,s:o}}",
						     "request_put", "key",
						     b64(key2), "value",
						     b64(value2)));
	if (!json_is_array(compare)) {
		json_t *one = json_array();

		json_array_append_new(one, compare);
		compare = one;
	}
	rc = post_to(e, "/v3/kv/txn",
		  json_pack("{s:o,s:o,s:[{s:{s:o}}]}", "compare", compare,
			    "success", ops, "failure", "request_range", "key",
			    b64(key)),
		  &ans, false);
	if (rc)
		return rc;
	if (json_object_get(ans, "error")) {
		json_decref(ans);
		return -EPROTO;
	}
	*won = json_is_true(json_object_get(ans, "succeeded"));
	if (kv)
		memset(kv, 0, sizeof(*kv));
	resp = json_array_get(json_object_get(ans, "responses"), 0);
	if (!*won && kv && json_is_object(resp))
		rc = read_kvs(json_object_get(resp, "response_range"), kv);
	json_decref(ans);
	return rc;
}

static int txn(struct etcd *e, json_t *compare, const char *key,
	       const char *value, int64_t lease, bool *won,
	       struct etcd_kv *kv)
{
	return txn2(e, compare, key, value, lease, NULL, NULL, won, kv);
}

int etcd_create(struct etcd *e, const char *key, const char *value,
		int64_t lease, bool *won, struct etcd_kv *kv)
{
	int rc = txn(e, json_pack("{s:o,s:s,s:s,s:s}", "key", b64(key),
				  "target", "CREATE", "result", "EQUAL",
				  "create_revision", "0"),
		     key, value, lease, won, kv);

	if (rc == 0 && *won)
		rc = etcd_get(e, key, kv);
	return rc;
}

int etcd_put_if(struct etcd *e, const char *key, const char *value,
		int64_t lease, int64_t mod_rev, bool *won)
{
	char r[32];

	if (!mod_rev) {
		json_t *put = json_pack("{s:o,s:o}", "key", b64(key), "value",
					b64(value)), *ans;
		int rc;

		if (lease)
			json_object_set_new(put, "lease", str64(lease));
		rc = post_to(e, "/v3/kv/put", put, &ans, false);
		*won = rc == 0 && !json_object_get(ans, "error");
		json_decref(ans);
		return rc;
	}
	snprintf(r, sizeof(r), "%" PRId64, mod_rev);
	return txn(e, json_pack("{s:o,s:s,s:s,s:s}", "key", b64(key),
				"target", "MOD", "result", "EQUAL",
				"mod_revision", r),
		   key, value, lease, won, NULL);
}

int etcd_put_under(struct etcd *e, const char *key, const char *value,
		   const char *guard, int64_t lease, bool *won)
{
	return txn(e, json_pack("{s:o,s:s,s:s,s:o}", "key", b64(guard),
				"target", "LEASE", "result", "EQUAL", "lease",
				str64(lease)),
		   key, value, 0, won, NULL);
}

int etcd_create_if(struct etcd *e, const char *key, const char *value,
		   int64_t lease, const char *guard, int64_t guard_mod,
		   const char *guard_value, bool *won, struct etcd_kv *kv)
{
	char r[32];
	json_t *c;
	int rc;

	snprintf(r, sizeof(r), "%" PRId64, guard_mod);
	c = json_pack("[{s:o,s:s,s:s,s:s},{s:o,s:s,s:s,s:s}]", "key", b64(key),
		      "target", "CREATE", "result", "EQUAL", "create_revision",
		      "0", "key", b64(guard), "target", "MOD", "result", "EQUAL",
		      "mod_revision", r);
	rc = txn2(e, c, key, value, lease, guard_value ? guard : NULL,
		  guard_value, won, kv);
	if (rc == 0 && *won)
		rc = etcd_get(e, key, kv);
	return rc;
}

int etcd_restore_if(struct etcd *e, const char *key,
		    const struct etcd_kv *before, int64_t mod_rev, bool *won)
{
	char r[32];
	json_t *op, *ans;
	int rc;

	snprintf(r, sizeof(r), "%" PRId64, mod_rev);
	if (before->found)
		op = json_pack("{s:{s:o,s:o}}", "request_put", "key", b64(key),
			       "value", b64(before->value));
	else
		op = json_pack("{s:{s:o}}", "request_delete_range", "key",
			       b64(key));
	rc = post_to(e, "/v3/kv/txn",
		     json_pack("{s:[{s:o,s:s,s:s,s:s}],s:[o]}", "compare",
			       "key", b64(key), "target", "MOD", "result",
			       "EQUAL", "mod_revision", r, "success", op),
		     &ans, false);
	if (rc)
		return rc;
	rc = json_object_get(ans, "error") ? -EPROTO : 0;
	*won = rc == 0 && json_is_true(json_object_get(ans, "succeeded"));
	json_decref(ans);
	return rc;
}

int etcd_get(struct etcd *e, const char *key, struct etcd_kv *kv)
{
	json_t *ans;
	int rc = post(e, "/v3/kv/range", json_pack("{s:o}", "key", b64(key)),
		      &ans);

	if (rc)
		return rc;
	rc = json_object_get(ans, "error") ? -EPROTO : read_kvs(ans, kv);
	json_decref(ans);
	return rc;
}
