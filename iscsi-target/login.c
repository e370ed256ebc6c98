/*
 * Login phase (RFC 7143 sections 6 and 13): text keys, stage transitions, operational
 * negotiation and CHAP (RFC 1994, algorithms numbered as the IANA PPP registry and libiscsi
 * number them: 5 MD5, 6 SHA1, 7 SHA-256).
 *
 * Stages: SECURITY (0) -> OPERATIONAL (1) -> FULL FEATURE (3). The initiator may skip the
 * security stage only when the target requires no authentication; the operational stage may
 * be skipped (all defaults). A transition happens only when the initiator sets T and we
 * agree; we hold T back while a CHAP exchange is incomplete.
 *
 * Every key the initiator sends gets an answer unless it is declarative (InitiatorName,
 * TargetName, SessionType, InitiatorAlias, MaxRecvDataSegmentLength): a value, Irrelevant,
 * Reject, or NotUnderstood for a key we do not know (RFC 7143 6.2.1).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "common/log.h"
#include "internal.h"

#define ISC_TEXT_MAX (64 * 1024)

int isc_text_append(struct isc_text *t, const void *data, size_t len)
{
	if (t->len + len > ISC_TEXT_MAX)
		return -E2BIG;
	if (t->len + len + 1 > t->cap) {
		size_t cap = t->cap ? t->cap : 512;
		while (cap < t->len + len + 1)
			cap *= 2;
		char *p = realloc(t->buf, cap);
		if (!p)
			return -ENOMEM;
		t->buf = p;
		t->cap = cap;
	}
	memcpy(t->buf + t->len, data, len);
	t->len += len;
	t->buf[t->len] = '\0';
	return 0;
}

int isc_text_addf(struct isc_text *t, const char *key, const char *fmt, ...)
{
	char val[ISC_VALUE_MAX];
	va_list ap;
	int n, rc;

	va_start(ap, fmt);
	n = vsnprintf(val, sizeof(val), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(val))
		return -E2BIG;
	rc = isc_text_append(t, key, strlen(key));
	if (!rc)
		rc = isc_text_append(t, "=", 1);
	if (!rc)
		rc = isc_text_append(t, val, (size_t)n + 1);
	return rc;
}

void isc_text_free(struct isc_text *t)
{
	free(t->buf);
	t->buf = NULL;
	t->len = t->cap = 0;
}

int isc_text_parse(struct isc_text *t, struct isc_kv *kv, size_t max)
{
	size_t off = 0;
	int n = 0;

	while (off < t->len) {
		char *pair = t->buf + off;
		size_t plen = strnlen(pair, t->len - off);
		char *eq;

		off += plen + 1;
		if (plen == 0)
			continue; /* padding NULs */
		if (off > t->len + 1)
			return -EINVAL;
		eq = memchr(pair, '=', plen);
		if (!eq || eq == pair || (size_t)(eq - pair) > ISC_KEY_MAX)
			return -EINVAL;
		if (plen - (size_t)(eq - pair) - 1 > ISC_VALUE_MAX)
			return -EINVAL;
		if ((size_t)n == max)
			return -E2BIG;
		*eq = '\0';
		kv[n].key = pair;
		kv[n].val = eq + 1;
		n++;
	}
	return n;
}

void isc_params_default(struct isc_params *p)
{
	*p = (struct isc_params){
		.header_digest = false,
		.data_digest = false,
		.initial_r2t = true,
		.immediate_data = true,
		.data_pdu_in_order = true,
		.data_seq_in_order = true,
		.max_xmit_dsl = 8192,
		.max_burst = 262144,
		.first_burst = 65536,
		.max_outstanding_r2t = 1,
		.time2wait = 2,
		.time2retain = 20,
		.erl = 0,
		.max_connections = 1,
	};
}

/* Parse a decimal or 0x-hex number in [lo, hi]. Returns 0 or -EINVAL. */
static int parse_num(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!*s || *s == '-' || *s == '+' || *s == ' ')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

/* "Yes" -> 1, "No" -> 0, else -EINVAL. */
static int parse_bool(const char *s)
{
	if (!strcmp(s, "Yes"))
		return 1;
	if (!strcmp(s, "No"))
		return 0;
	return -EINVAL;
}

/* Is item in the comma-separated list? */
static bool list_has(const char *list, const char *item)
{
	size_t n = strlen(item);
	const char *p = list;

	while (*p) {
		const char *c = strchr(p, ',');
		size_t len = c ? (size_t)(c - p) : strlen(p);
		if (len == n && !strncmp(p, item, n))
			return true;
		if (!c)
			break;
		p = c + 1;
	}
	return false;
}

/* First item of a list that is CRC32C or None. */
static const char *pick_digest(const char *list)
{
	const char *p = list;

	while (*p) {
		const char *c = strchr(p, ',');
		size_t len = c ? (size_t)(c - p) : strlen(p);
		if (len == 6 && !strncmp(p, "CRC32C", 6))
			return "CRC32C";
		if (len == 4 && !strncmp(p, "None", 4))
			return "None";
		if (!c)
			break;
		p = c + 1;
	}
	return NULL;
}

static int answer_num(struct isc_text *out, const char *key, const char *val, uint64_t lo,
		      uint64_t hi, uint32_t *dst, int how, uint32_t ours)
{
	uint64_t v;

	if (parse_num(val, lo, hi, &v))
		return isc_text_addf(out, key, "Reject");
	/* how: 0 minimum, 1 maximum */
	if (how == 0)
		*dst = v < ours ? (uint32_t)v : ours;
	else
		*dst = v > ours ? (uint32_t)v : ours;
	return isc_text_addf(out, key, "%u", *dst);
}

static int answer_bool(struct isc_text *out, const char *key, const char *val, bool *dst,
		       bool is_or, bool ours)
{
	int b = parse_bool(val);

	if (b < 0)
		return isc_text_addf(out, key, "Reject");
	*dst = is_or ? (b || ours) : (b && ours);
	return isc_text_addf(out, key, "%s", *dst ? "Yes" : "No");
}

int isc_negotiate_key(struct isc_login *l, const char *key, const char *val, struct isc_text *out)
{
	struct isc_params *p = &l->params;
	uint64_t v;

	if (!strcmp(key, "HeaderDigest") || !strcmp(key, "DataDigest")) {
		const char *d = pick_digest(val);
		if (!d)
			return isc_text_addf(out, key, "Reject");
		if (key[0] == 'H')
			p->header_digest = d[0] == 'C';
		else
			p->data_digest = d[0] == 'C';
		return isc_text_addf(out, key, "%s", d);
	}
	if (!strcmp(key, "MaxConnections"))
		return answer_num(out, key, val, 1, 65535, &p->max_connections, 0, 1);
	if (!strcmp(key, "InitialR2T"))
		return answer_bool(out, key, val, &p->initial_r2t, true, false);
	if (!strcmp(key, "ImmediateData"))
		return answer_bool(out, key, val, &p->immediate_data, false, true);
	if (!strcmp(key, "MaxRecvDataSegmentLength")) {
		/* Declarative: the most the initiator accepts in one PDU from us. */
		if (parse_num(val, 512, 16777215, &v))
			return isc_text_addf(out, key, "Reject");
		p->max_xmit_dsl = (uint32_t)v;
		return 0;
	}
	if (!strcmp(key, "MaxBurstLength")) {
		int rc = answer_num(out, key, val, 512, 16777215, &p->max_burst, 0,
				    ISC_OUR_MAX_BURST);
		if (p->first_burst > p->max_burst)
			p->first_burst = p->max_burst;
		return rc;
	}
	if (!strcmp(key, "FirstBurstLength")) {
		uint32_t lim = ISC_OUR_FIRST_BURST;
		return answer_num(out, key, val, 512, 16777215, &p->first_burst, 0, lim);
	}
	if (!strcmp(key, "DefaultTime2Wait"))
		return answer_num(out, key, val, 0, 3600, &p->time2wait, 1, 2);
	if (!strcmp(key, "DefaultTime2Retain"))
		return answer_num(out, key, val, 0, 3600, &p->time2retain, 0, 20);
	if (!strcmp(key, "MaxOutstandingR2T"))
		return answer_num(out, key, val, 1, 65535, &p->max_outstanding_r2t, 0, 1);
	if (!strcmp(key, "DataPDUInOrder"))
		return answer_bool(out, key, val, &p->data_pdu_in_order, true, true);
	if (!strcmp(key, "DataSequenceInOrder"))
		return answer_bool(out, key, val, &p->data_seq_in_order, true, true);
	if (!strcmp(key, "ErrorRecoveryLevel"))
		return answer_num(out, key, val, 0, 2, &p->erl, 0, 0);
	if (!strcmp(key, "IFMarker") || !strcmp(key, "OFMarker") ||
	    !strcmp(key, "RDMAExtensions")) {
		bool dummy;
		return answer_bool(out, key, val, &dummy, false, false);
	}
	if (!strcmp(key, "IFMarkInt") || !strcmp(key, "OFMarkInt"))
		return isc_text_addf(out, key, "Irrelevant");
	if (!strcmp(key, "iSCSIProtocolLevel")) {
		uint32_t lvl;
		return answer_num(out, key, val, 0, 31, &lvl, 0, 1);
	}
	if (!strcmp(key, "TaskReporting"))
		return isc_text_addf(out, key, "RFC3720");
	if (!strcmp(key, "InitiatorAlias")) {
		snprintf(l->initiator_alias, sizeof(l->initiator_alias), "%s", val);
		return 0;
	}
	if (!strcmp(key, "TargetAlias") || !strcmp(key, "TargetAddress") ||
	    !strcmp(key, "TargetPortalGroupTag"))
		return isc_text_addf(out, key, "Irrelevant");
	return isc_text_addf(out, key, "NotUnderstood");
}

/* ---- CHAP ---- */

static int chap_gnutls_alg(int alg, gnutls_digest_algorithm_t *out)
{
	switch (alg) {
	case ISC_CHAP_MD5:
		*out = GNUTLS_DIG_MD5;
		return 16;
	case ISC_CHAP_SHA1:
		*out = GNUTLS_DIG_SHA1;
		return 20;
	case ISC_CHAP_SHA256:
		*out = GNUTLS_DIG_SHA256;
		return 32;
	default:
		return -EINVAL;
	}
}

int isc_chap_hash(int alg, uint8_t id, const char *secret, const uint8_t *chal, size_t chal_len,
		  uint8_t *out)
{
	gnutls_digest_algorithm_t dig;
	size_t slen = strlen(secret);
	uint8_t buf[1 + 256 + 1024];
	int n = chap_gnutls_alg(alg, &dig);

	if (n < 0 || slen > 256 || chal_len > 1024)
		return -EINVAL;
	buf[0] = id;
	memcpy(buf + 1, secret, slen);
	memcpy(buf + 1 + slen, chal, chal_len);
	if (gnutls_hash_fast(dig, buf, 1 + slen + chal_len, out) < 0)
		return -EIO;
	return n;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int b64val(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int isc_chap_decode(const char *s, uint8_t *out, size_t max)
{
	size_t n = 0;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		size_t len = strlen(s + 2);
		const char *p = s + 2;
		if (len == 0)
			return -EINVAL;
		if (len & 1) { /* odd: leading nibble */
			int v = hexval(*p++);
			if (v < 0 || max < 1)
				return -EINVAL;
			out[n++] = (uint8_t)v;
		}
		while (*p) {
			int hi = hexval(p[0]), lo = hexval(p[1]);
			if (hi < 0 || lo < 0 || n == max)
				return -EINVAL;
			out[n++] = (uint8_t)(hi << 4 | lo);
			p += 2;
		}
		return (int)n;
	}
	if (s[0] == '0' && (s[1] == 'b' || s[1] == 'B')) {
		uint32_t acc = 0;
		int bits = 0;
		for (const char *p = s + 2; *p && *p != '='; p++) {
			int v = b64val(*p);
			if (v < 0)
				return -EINVAL;
			acc = acc << 6 | (uint32_t)v;
			bits += 6;
			if (bits >= 8) {
				bits -= 8;
				if (n == max)
					return -EINVAL;
				out[n++] = (uint8_t)(acc >> bits);
			}
		}
		return n ? (int)n : -EINVAL;
	}
	return -EINVAL;
}

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

/* Pick the first algorithm in the initiator's CHAP_A list that we support. */
static int chap_pick(const char *list)
{
	const char *p = list;

	while (*p) {
		char *end;
		long v = strtol(p, &end, 10);
		if (end != p && (v == ISC_CHAP_MD5 || v == ISC_CHAP_SHA1 || v == ISC_CHAP_SHA256))
			return (int)v;
		p = strchr(p, ',');
		if (!p)
			break;
		p++;
	}
	return -1;
}

void isc_login_init(struct isc_login *l, const struct isc_login_ops *ops)
{
	memset(l, 0, sizeof(*l));
	l->ops = ops;
	l->first = true;
	l->stage = ISC_STAGE_SECURITY;
	isc_params_default(&l->params);
}

void isc_login_free(struct isc_login *l)
{
	isc_text_free(&l->in);
}

static void fail(struct isc_login_result *res, uint8_t cls, uint8_t detail)
{
	res->status_class = cls;
	res->status_detail = detail;
	res->transit = false;
	res->done = false;
}

struct chap_in {
	const char *a, *n, *r, *i, *c;
};

/* Handle the CHAP keys of one request. Returns 0, or 1 for authentication failure. */
static int chap_step(struct isc_login *l, const struct chap_in *in, struct isc_text *out)
{
	if (l->chap == ISC_CHAP_WANT_A) {
		if (!in->a)
			return 0; /* may come in a later PDU */
		int alg = chap_pick(in->a);
		char hex[2 * sizeof(l->chap_challenge) + 1];
		if (alg < 0) {
			isc_text_addf(out, "CHAP_A", "Reject");
			return 1;
		}
		l->chap_alg = alg;
		l->chap_challenge_len = 16;
		if (gnutls_rnd(GNUTLS_RND_NONCE, &l->chap_id, 1) < 0 ||
		    gnutls_rnd(GNUTLS_RND_NONCE, l->chap_challenge, l->chap_challenge_len) < 0)
			return 1;
		hex_encode(l->chap_challenge, l->chap_challenge_len, hex);
		isc_text_addf(out, "CHAP_A", "%d", alg);
		isc_text_addf(out, "CHAP_I", "%u", l->chap_id);
		isc_text_addf(out, "CHAP_C", "0x%s", hex);
		l->chap = ISC_CHAP_WANT_R;
		return 0;
	}
	if (l->chap == ISC_CHAP_WANT_R) {
		uint8_t got[64], want[64];
		int glen, wlen;
		if (!in->n || !in->r)
			return 1;
		if (strcmp(in->n, l->auth.user))
			return 1;
		glen = isc_chap_decode(in->r, got, sizeof(got));
		wlen = isc_chap_hash(l->chap_alg, l->chap_id, l->auth.secret, l->chap_challenge,
				     l->chap_challenge_len, want);
		if (glen < 0 || wlen < 0 || glen != wlen || memcmp(got, want, (size_t)wlen))
			return 1;
		if (in->i || in->c) { /* mutual CHAP: prove ourselves */
			uint8_t chal[1024], rsp[64];
			char hex[2 * sizeof(rsp) + 1];
			uint64_t id;
			int clen, rlen;
			if (!in->i || !in->c || !l->auth.mutual_user[0])
				return 1;
			if (parse_num(in->i, 0, 255, &id))
				return 1;
			clen = isc_chap_decode(in->c, chal, sizeof(chal));
			if (clen <= 0)
				return 1;
			/* A reflected challenge would let an attacker use us as an oracle. */
			if ((size_t)clen == l->chap_challenge_len &&
			    !memcmp(chal, l->chap_challenge, (size_t)clen))
				return 1;
			rlen = isc_chap_hash(l->chap_alg, (uint8_t)id, l->auth.mutual_secret, chal,
					     (size_t)clen, rsp);
			if (rlen < 0)
				return 1;
			hex_encode(rsp, (size_t)rlen, hex);
			isc_text_addf(out, "CHAP_N", "%s", l->auth.mutual_user);
			isc_text_addf(out, "CHAP_R", "0x%s", hex);
		} else if (l->auth.mutual_user[0]) {
			return 1; /* the target is configured for mutual CHAP only */
		}
		l->chap = ISC_CHAP_DONE;
		l->authenticated = true;
		return 0;
	}
	return 0;
}

/* First PDU of a login: identity, session type, target, credentials. Returns 0 or fails res. */
static int login_first(struct isc_login *l, const struct isc_pdu *pdu, struct isc_kv *kv, int n,
		       struct isc_login_result *res)
{
	const char *type = "Normal";
	int rc;

	memcpy(l->isid, pdu->bhs + 8, 6);
	l->tsih = isc_get16(pdu->bhs + 14);
	l->cid = isc_get16(pdu->bhs + 20);
	for (int i = 0; i < n; i++) {
		if (!strcmp(kv[i].key, "InitiatorName"))
			snprintf(l->initiator, sizeof(l->initiator), "%s", kv[i].val);
		else if (!strcmp(kv[i].key, "TargetName"))
			snprintf(l->target, sizeof(l->target), "%s", kv[i].val);
		else if (!strcmp(kv[i].key, "SessionType"))
			type = kv[i].val;
	}
	if (pdu->bhs[3] > 0) { /* Version-min above ours */
		fail(res, 2, 0x05);
		return -1;
	}
	if (!l->initiator[0]) {
		fail(res, 2, 0x07);
		return -1;
	}
	if (!strcmp(type, "Discovery")) {
		l->discovery = true;
	} else if (strcmp(type, "Normal")) {
		fail(res, 2, 0x00);
		return -1;
	} else if (!l->target[0]) {
		fail(res, 2, 0x07);
		return -1;
	}
	if (l->tsih != 0) { /* adding a connection to an existing session: MaxConnections=1 */
		fail(res, 2, 0x0a);
		return -1;
	}
	if (!l->discovery) {
		rc = l->ops->target_check(l->ops->arg, l->target, l->initiator);
		if (rc == -EACCES) {
			fail(res, 2, 0x02);
			return -1;
		}
		if (rc) {
			fail(res, 2, 0x03);
			return -1;
		}
	}
	memset(&l->auth, 0, sizeof(l->auth));
	l->ops->target_auth(l->ops->arg, l->discovery ? NULL : l->target, &l->auth);
	l->auth_required = l->auth.user[0] != '\0';
	return 0;
}

int isc_login_request(struct isc_login *l, const struct isc_pdu *pdu, struct isc_text *out,
		      struct isc_login_result *res)
{
	struct isc_kv kv[ISC_MAX_KEYS];
	struct chap_in chap = {0};
	uint8_t flags = pdu->bhs[1];
	bool transit = flags & ISC_LOGIN_T, cont = flags & ISC_LOGIN_C;
	uint8_t csg = (flags >> 2) & 3, nsg = flags & 3;
	int n;

	memset(res, 0, sizeof(*res));
	res->csg = csg;
	res->nsg = nsg;
	if (pdu->opcode != ISC_OP_LOGIN_REQ)
		return -EPROTO;
	l->itt = pdu->itt;
	if (csg == 2 || (transit && (nsg == 2 || nsg <= csg)) || (transit && cont) ||
	    csg < l->stage) {
		fail(res, 2, 0x00);
		return 0;
	}
	if (isc_text_append(&l->in, pdu->data, pdu->dlen)) {
		fail(res, 2, 0x00);
		return 0;
	}
	if (cont) { /* more of this request's text follows */
		res->partial = true;
		res->transit = false;
		return 0;
	}
	n = isc_text_parse(&l->in, kv, ISC_MAX_KEYS);
	if (n < 0) {
		fail(res, 2, 0x00);
		goto out;
	}
	if (l->first) {
		if (login_first(l, pdu, kv, n, res))
			goto out;
		l->first = false;
		if (!l->discovery && !l->tpgt_sent) {
			isc_text_addf(out, "TargetPortalGroupTag", "%d", ISC_DEFAULT_PORTAL_GROUP);
			l->tpgt_sent = true;
		}
	}
	if (csg == ISC_STAGE_OPERATIONAL && l->auth_required && !l->authenticated) {
		fail(res, 2, 0x01); /* skipped security while we require CHAP */
		goto out;
	}
	l->stage = csg;
	for (int i = 0; i < n; i++) {
		const char *k = kv[i].key, *v = kv[i].val;
		if (!strcmp(k, "InitiatorName") || !strcmp(k, "TargetName") ||
		    !strcmp(k, "SessionType"))
			continue; /* declarative, taken on the first PDU */
		if (!strcmp(k, "AuthMethod")) {
			if (csg != ISC_STAGE_SECURITY) {
				isc_text_addf(out, k, "Irrelevant");
			} else if (l->auth_required && list_has(v, "CHAP")) {
				isc_text_addf(out, k, "CHAP");
				l->chap = ISC_CHAP_WANT_A;
			} else if (!l->auth_required && list_has(v, "None")) {
				isc_text_addf(out, k, "None");
				l->authenticated = true;
			} else {
				isc_text_addf(out, k, "Reject");
				fail(res, 2, 0x01);
				goto out;
			}
			continue;
		}
		if (!strncmp(k, "CHAP_", 5)) {
			if (!strcmp(k, "CHAP_A"))
				chap.a = v;
			else if (!strcmp(k, "CHAP_N"))
				chap.n = v;
			else if (!strcmp(k, "CHAP_R"))
				chap.r = v;
			else if (!strcmp(k, "CHAP_I"))
				chap.i = v;
			else if (!strcmp(k, "CHAP_C"))
				chap.c = v;
			else
				isc_text_addf(out, k, "NotUnderstood");
			continue;
		}
		if (l->discovery && !strcmp(k, "SendTargets")) {
			isc_text_addf(out, k, "Irrelevant");
			continue;
		}
		if (isc_negotiate_key(l, k, v, out)) {
			fail(res, 3, 0x02);
			goto out;
		}
	}
	if (csg == ISC_STAGE_SECURITY) {
		if (chap.a || chap.n || chap.r) {
			if (l->chap == ISC_CHAP_NONE || chap_step(l, &chap, out)) {
				fail(res, 2, 0x01);
				goto out;
			}
		}
		if (!l->auth_required && l->chap == ISC_CHAP_NONE)
			l->authenticated = true;
		if (transit && !l->authenticated) {
			if (l->chap == ISC_CHAP_NONE) {
				fail(res, 2, 0x01);
				goto out;
			}
			transit = false; /* CHAP exchange still under way */
		}
	}
	if (transit && nsg == ISC_STAGE_FFP && !l->mrdsl_sent) {
		isc_text_addf(out, "MaxRecvDataSegmentLength", "%u", ISC_OUR_MAX_RDSL);
		l->mrdsl_sent = true;
	} else if (csg == ISC_STAGE_OPERATIONAL && !l->mrdsl_sent) {
		isc_text_addf(out, "MaxRecvDataSegmentLength", "%u", ISC_OUR_MAX_RDSL);
		l->mrdsl_sent = true;
	}
	res->transit = transit;
	if (transit) {
		l->stage = nsg;
		res->done = nsg == ISC_STAGE_FFP;
	}
	if (!l->discovery && l->params.first_burst > l->params.max_burst)
		l->params.first_burst = l->params.max_burst;
out:
	l->in.len = 0;
	return 0;
}
