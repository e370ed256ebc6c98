/* Login: text keys, operational negotiation, stages, CHAP, failures. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static int mock_check(void *arg, const char *target, const char *initiator)
{
	(void)arg;
	(void)initiator;
	if (!strcmp(target, "iqn.x:denied"))
		return -EACCES;
	return strncmp(target, "iqn.x:", 6) ? -ENOENT : 0;
}

static struct isc_auth mock_auth_value;

static int mock_auth(void *arg, const char *target, struct isc_auth *auth)
{
	(void)arg;
	(void)target;
	*auth = mock_auth_value;
	return 0;
}

static const struct isc_login_ops ops = {mock_check, mock_auth, NULL};

/* Make a Login Request PDU from a text with '\n' separating keys. */
static void mkreq(struct isc_pdu *p, uint8_t flags, const char *text, uint8_t *buf)
{
	size_t n = strlen(text);
	memset(p, 0, sizeof(*p));
	p->opcode = ISC_OP_LOGIN_REQ;
	p->bhs[0] = ISC_OP_LOGIN_REQ | ISC_BHS_IMMEDIATE;
	p->bhs[1] = flags;
	memcpy(buf, text, n + 1);
	for (size_t i = 0; i < n; i++)
		if (buf[i] == '\n')
			buf[i] = '\0';
	p->data = buf;
	p->dlen = (uint32_t)n + 1;
}

/* The value for key in a response text, or NULL. */
static const char *find(struct isc_text *t, const char *key)
{
	size_t kl = strlen(key);
	for (size_t off = 0; off < t->len; off += strlen(t->buf + off) + 1)
		if (!strncmp(t->buf + off, key, kl) && t->buf[off + kl] == '=')
			return t->buf + off + kl + 1;
	return NULL;
}

#define SEC_TO_FFP (ISC_LOGIN_T | (0 << 2) | 3)
#define OP_TO_FFP  (ISC_LOGIN_T | (1 << 2) | 3)
#define SEC_TO_OP  (ISC_LOGIN_T | (0 << 2) | 1)

Test(text, parse_pairs_and_rejects_malformed)
{
	struct isc_text t = {0};
	struct isc_kv kv[8];
	const char good[] = "A=1\0B=\0C=x=y\0";

	cr_assert_eq(isc_text_append(&t, good, sizeof(good) - 1), 0);
	cr_assert_eq(isc_text_parse(&t, kv, 8), 3);
	cr_expect_str_eq(kv[0].key, "A");
	cr_expect_str_eq(kv[1].val, "");
	cr_expect_str_eq(kv[2].val, "x=y");
	isc_text_free(&t);
	cr_assert_eq(isc_text_append(&t, "novalue", 8), 0);
	cr_expect_eq(isc_text_parse(&t, kv, 8), -EINVAL);
	isc_text_free(&t);
	cr_assert_eq(isc_text_append(&t, "=v", 3), 0);
	cr_expect_eq(isc_text_parse(&t, kv, 8), -EINVAL);
	isc_text_free(&t);
}

Test(login, normal_session_negotiates_operational_keys)
{
	struct isc_login l;
	struct isc_pdu p;
	struct isc_text out = {0};
	struct isc_login_result res;
	uint8_t buf[2048];

	memset(&mock_auth_value, 0, sizeof(mock_auth_value));
	isc_login_init(&l, &ops);
	mkreq(&p, OP_TO_FFP | (1 << 2),
	      "InitiatorName=iqn.i\nTargetName=iqn.x:p.v\nSessionType=Normal\n"
	      "HeaderDigest=CRC32C,None\nDataDigest=None\nInitialR2T=No\nImmediateData=Yes\n"
	      "MaxRecvDataSegmentLength=65536\nMaxBurstLength=16776192\nFirstBurstLength=1048576\n"
	      "MaxConnections=4\nErrorRecoveryLevel=2\nX-com.example.Foo=1\nIFMarker=No\n"
	      "DefaultTime2Wait=0\nDefaultTime2Retain=60\nMaxOutstandingR2T=8\nBogusKey=7",
	      buf);
	cr_assert_eq(isc_login_request(&l, &p, &out, &res), 0);
	cr_expect_eq(res.status_class, 0);
	cr_expect(res.transit);
	cr_expect(res.done);
	cr_expect_str_eq(find(&out, "HeaderDigest"), "CRC32C");
	cr_expect_str_eq(find(&out, "DataDigest"), "None");
	cr_expect_str_eq(find(&out, "InitialR2T"), "No");
	cr_expect_str_eq(find(&out, "ImmediateData"), "Yes");
	cr_expect_str_eq(find(&out, "MaxBurstLength"), "1048576");
	cr_expect_str_eq(find(&out, "FirstBurstLength"), "262144");
	cr_expect_str_eq(find(&out, "MaxConnections"), "1");
	cr_expect_str_eq(find(&out, "ErrorRecoveryLevel"), "0");
	cr_expect_str_eq(find(&out, "MaxOutstandingR2T"), "1");
	cr_expect_str_eq(find(&out, "DefaultTime2Wait"), "2");
	cr_expect_str_eq(find(&out, "DefaultTime2Retain"), "20");
	cr_expect_str_eq(find(&out, "IFMarker"), "No");
	cr_expect_str_eq(find(&out, "X-com.example.Foo"), "NotUnderstood");
	cr_expect_str_eq(find(&out, "BogusKey"), "NotUnderstood");
	cr_expect_str_eq(find(&out, "TargetPortalGroupTag"), "1");
	cr_expect_not_null(find(&out, "MaxRecvDataSegmentLength"));
	cr_expect_null(find(&out, "InitiatorName"));
	cr_expect(l.params.header_digest);
	cr_expect_not(l.params.initial_r2t);
	cr_expect_eq(l.params.max_xmit_dsl, 65536);
	isc_text_free(&out);
	isc_login_free(&l);
}

Test(login, bad_values_get_reject_and_missing_names_fail)
{
	struct isc_login l;
	struct isc_pdu p;
	struct isc_text out = {0};
	struct isc_login_result res;
	uint8_t buf[1024];

	memset(&mock_auth_value, 0, sizeof(mock_auth_value));
	isc_login_init(&l, &ops);
	mkreq(&p, OP_TO_FFP | (1 << 2),
	      "InitiatorName=iqn.i\nTargetName=iqn.x:a\nMaxBurstLength=12\nInitialR2T=Maybe", buf);
	cr_assert_eq(isc_login_request(&l, &p, &out, &res), 0);
	cr_expect_str_eq(find(&out, "MaxBurstLength"), "Reject");
	cr_expect_str_eq(find(&out, "InitialR2T"), "Reject");
	isc_text_free(&out);
	isc_login_free(&l);

	isc_login_init(&l, &ops);
	mkreq(&p, OP_TO_FFP | (1 << 2), "TargetName=iqn.x:a", buf);
	cr_assert_eq(isc_login_request(&l, &p, &out, &res), 0);
	cr_expect_eq(res.status_class, 2);
	cr_expect_eq(res.status_detail, 0x07); /* missing parameter */
	isc_text_free(&out);
	isc_login_free(&l);

	isc_login_init(&l, &ops);
	mkreq(&p, OP_TO_FFP | (1 << 2), "InitiatorName=iqn.i\nTargetName=iqn.other:a", buf);
	cr_assert_eq(isc_login_request(&l, &p, &out, &res), 0);
	cr_expect_eq(res.status_class, 2);
	cr_expect_eq(res.status_detail, 0x03); /* not found */
	isc_text_free(&out);
	isc_login_free(&l);

	isc_login_init(&l, &ops);
	mkreq(&p, OP_TO_FFP | (1 << 2), "InitiatorName=iqn.i\nTargetName=iqn.x:denied", buf);
	cr_assert_eq(isc_login_request(&l, &p, &out, &res), 0);
	cr_expect_eq(res.status_class, 2);
	cr_expect_eq(res.status_detail, 0x02); /* authorization failure */
	isc_text_free(&out);
	isc_login_free(&l);
}

Test(login, discovery_session)
{
	struct isc_login l;
	struct isc_pdu p;
	struct isc_text out = {0};
	struct isc_login_result res;
	uint8_t buf[1024];

	memset(&mock_auth_value, 0, sizeof(mock_auth_value));
	isc_login_init(&l, &ops);
	mkreq(&p, SEC_TO_FFP, "InitiatorName=iqn.i\nSessionType=Discovery\nAuthMethod=None", buf);
	cr_assert_eq(isc_login_request(&l, &p, &out, &res), 0);
	cr_expect_eq(res.status_class, 0);
	cr_expect(res.done);
	cr_expect(l.discovery);
	cr_expect_str_eq(find(&out, "AuthMethod"), "None");
	isc_text_free(&out);
	isc_login_free(&l);
}

/* Drive a CHAP login as an initiator would; returns the final status class. */
static int chap_login(const char *user, const char *secret, bool mutual, int alg)
{
	struct isc_login l;
	struct isc_pdu p;
	struct isc_text out = {0};
	struct isc_login_result res;
	uint8_t buf[2048], chal[64], rsp[64];
	char text[1024], hex[200];
	int n, cls;

	isc_login_init(&l, &ops);
	mkreq(&p, SEC_TO_OP, "InitiatorName=iqn.i\nTargetName=iqn.x:a\nAuthMethod=CHAP,None", buf);
	cr_assert_eq(isc_login_request(&l, &p, &out, &res), 0);
	cr_assert_eq(res.status_class, 0);
	cr_assert_str_eq(find(&out, "AuthMethod"), "CHAP");
	cr_assert_not(res.transit);
	out.len = 0;
	snprintf(text, sizeof(text), "CHAP_A=%d", alg);
	mkreq(&p, 0 << 2 | 1, text, buf);
	cr_assert_eq(isc_login_request(&l, &p, &out, &res), 0);
	cr_assert_eq(res.status_class, 0);
	int id = atoi(find(&out, "CHAP_I"));
	n = isc_chap_decode(find(&out, "CHAP_C"), chal, sizeof(chal));
	cr_assert_gt(n, 0);
	int rl = isc_chap_hash(alg, (uint8_t)id, secret, chal, (size_t)n, rsp);
	cr_assert_gt(rl, 0);
	for (int i = 0; i < rl; i++)
		sprintf(hex + 2 * i, "%02x", rsp[i]);
	out.len = 0;
	snprintf(text, sizeof(text), "CHAP_N=%s\nCHAP_R=0x%s%s", user, hex,
		 mutual ? "\nCHAP_I=9\nCHAP_C=0x0102030405060708090a0b0c0d0e0f10" : "");
	mkreq(&p, SEC_TO_OP, text, buf);
	cr_assert_eq(isc_login_request(&l, &p, &out, &res), 0);
	cls = res.status_class;
	if (cls == 0) {
		cr_expect(res.transit);
		if (mutual) {
			uint8_t c2[16], want[64], got[64];
			for (int i = 0; i < 16; i++)
				c2[i] = (uint8_t)(i + 1);
			cr_expect_str_eq(find(&out, "CHAP_N"), "tgt");
			int wl = isc_chap_hash(alg, 9, "tsecret", c2, 16, want);
			cr_expect_eq(isc_chap_decode(find(&out, "CHAP_R"), got, sizeof(got)), wl);
			cr_expect_eq(memcmp(got, want, (size_t)wl), 0);
		}
	}
	isc_text_free(&out);
	isc_login_free(&l);
	return cls;
}

Test(login, chap_one_way_and_mutual)
{
	memset(&mock_auth_value, 0, sizeof(mock_auth_value));
	strcpy(mock_auth_value.user, "user");
	strcpy(mock_auth_value.secret, "secret12345678");
	cr_expect_eq(chap_login("user", "secret12345678", false, ISC_CHAP_MD5), 0);
	cr_expect_eq(chap_login("user", "secret12345678", false, ISC_CHAP_SHA1), 0);
	cr_expect_eq(chap_login("user", "secret12345678", false, ISC_CHAP_SHA256), 0);
	cr_expect_eq(chap_login("user", "wrong", false, ISC_CHAP_MD5), 2);
	cr_expect_eq(chap_login("other", "secret12345678", false, ISC_CHAP_MD5), 2);
	strcpy(mock_auth_value.mutual_user, "tgt");
	strcpy(mock_auth_value.mutual_secret, "tsecret");
	cr_expect_eq(chap_login("user", "secret12345678", true, ISC_CHAP_SHA256), 0);
}

Test(login, chap_required_but_skipped)
{
	struct isc_login l;
	struct isc_pdu p;
	struct isc_text out = {0};
	struct isc_login_result res;
	uint8_t buf[1024];

	memset(&mock_auth_value, 0, sizeof(mock_auth_value));
	strcpy(mock_auth_value.user, "user");
	strcpy(mock_auth_value.secret, "secret");
	isc_login_init(&l, &ops);
	mkreq(&p, OP_TO_FFP | (1 << 2), "InitiatorName=iqn.i\nTargetName=iqn.x:a", buf);
	cr_assert_eq(isc_login_request(&l, &p, &out, &res), 0);
	cr_expect_eq(res.status_class, 2);
	cr_expect_eq(res.status_detail, 0x01);
	isc_text_free(&out);
	isc_login_free(&l);

	isc_login_init(&l, &ops);
	mkreq(&p, SEC_TO_FFP, "InitiatorName=iqn.i\nTargetName=iqn.x:a\nAuthMethod=None", buf);
	cr_assert_eq(isc_login_request(&l, &p, &out, &res), 0);
	cr_expect_eq(res.status_class, 2);
	isc_text_free(&out);
	isc_login_free(&l);
}

Test(chap, decode_hex_and_base64)
{
	uint8_t b[16];
	cr_expect_eq(isc_chap_decode("0x0a0B", b, sizeof(b)), 2);
	cr_expect_eq(b[0], 0x0a);
	cr_expect_eq(b[1], 0x0b);
	cr_expect_eq(isc_chap_decode("0bAQID", b, sizeof(b)), 3);
	cr_expect_eq(b[2], 3);
	cr_expect_lt(isc_chap_decode("0xzz", b, sizeof(b)), 0);
	cr_expect_lt(isc_chap_decode("1234", b, sizeof(b)), 0);
}
