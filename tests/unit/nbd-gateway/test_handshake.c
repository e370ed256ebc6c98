/* Option haggling: the reader state machine and every option handler, driven with bytes. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The handshake sees exports only through nbd_hs_ops: two known names. */
static int bound;

static int t_lookup(void *arg, const char *name, bool bind, struct nbd_export_info *info)
{
	if (strcmp(name, "p/v") == 0) {
		info->size = 1ull << 30;
	} else if (strcmp(name, "p/v@s") == 0) {
		info->size = 1ull << 20;
		info->read_only = true;
	} else {
		return -ENOENT;
	}
	strcpy(info->description, "test");
	bound += bind;
	return 0;
}

static int t_list(void *arg, char ***names, size_t *n)
{
	*names = calloc(2, sizeof(char *));
	(*names)[0] = strdup("p/a");
	(*names)[1] = strdup("p/b");
	*n = 2;
	return 0;
}

static void t_free_list(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(names[i]);
	}
	free(names);
}

static const struct nbd_hs_ops ops = {t_lookup, t_list, t_free_list};

static struct nbd_hs hs;
static struct nbd_buf out;

static void setup(void)
{
	uint8_t flags[4] = {0, 0, 0, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES};
	size_t used;

	bound = 0;
	memset(&out, 0, sizeof(out));
	nbd_hs_init(&hs, NBD_TLS_OFF);
	cr_assert_eq(nbd_hs_feed(&hs, flags, 4, &used), NBD_HS_NEED_MORE);
	cr_assert_eq(used, 4);
	cr_assert_eq(hs.state, NBD_HS_OPT_HEADER);
}

static void teardown(void)
{
	nbd_hs_free(&hs);
	nbd_buf_free(&out);
}

/* Build an option on the wire. */
static void opt_bytes(struct nbd_buf *b, uint32_t opt, const void *data, uint32_t len)
{
	nbd_buf_put_be64(b, NBD_OPTS_MAGIC);
	nbd_buf_put_be32(b, opt);
	nbd_buf_put_be32(b, len);
	nbd_buf_put(b, data, len);
}

/* Feed one option, byte by byte to exercise every state, and handle it. */
static enum nbd_hs_event send_opt(uint32_t opt, const void *data, uint32_t len)
{
	struct nbd_buf b = {0};
	enum nbd_hs_event ev = NBD_HS_NEED_MORE;
	size_t used;

	opt_bytes(&b, opt, data, len);
	for (size_t i = 0; i < b.len; i++) {
		ev = nbd_hs_feed(&hs, b.p + i, 1, &used);
		cr_assert_eq(used, 1);
		if (i + 1 < b.len) {
			cr_assert_eq(ev, NBD_HS_NEED_MORE, "byte %zu", i);
		}
	}
	nbd_buf_free(&b);
	cr_assert_eq(ev, NBD_HS_OPTION);
	cr_assert_eq(hs.opt, opt);
	return nbd_hs_handle(&hs, &ops, NULL, &out);
}

/* Parse the reply at *pos; returns its type and data length. */
static uint32_t next_reply(size_t *pos, uint32_t opt, uint32_t *len)
{
	cr_assert_geq(out.len, *pos + 20);
	cr_assert_eq(nbd_get_be64(out.p + *pos), NBD_REP_MAGIC);
	cr_assert_eq(nbd_get_be32(out.p + *pos + 8), opt);
	uint32_t type = nbd_get_be32(out.p + *pos + 12);
	*len = nbd_get_be32(out.p + *pos + 16);
	*pos += 20 + *len;
	cr_assert_leq(*pos, out.len);
	return type;
}

static size_t info_payload(uint8_t *buf, const char *name, const uint16_t *reqs, uint16_t n)
{
	struct nbd_buf b = {0};
	size_t len;

	nbd_buf_put_be32(&b, (uint32_t)strlen(name));
	nbd_buf_put(&b, name, strlen(name));
	nbd_buf_put_be16(&b, n);
	for (uint16_t i = 0; i < n; i++) {
		nbd_buf_put_be16(&b, reqs[i]);
	}
	memcpy(buf, b.p, b.len);
	len = b.len;
	nbd_buf_free(&b);
	return len;
}

TestSuite(handshake, .init = setup, .fini = teardown);

Test(handshake, greeting)
{
	struct nbd_buf g = {0};

	cr_assert_eq(nbd_hs_greeting(&g), 0);
	cr_assert_eq(g.len, 18);
	cr_assert_eq(nbd_get_be64(g.p), NBD_MAGIC);
	cr_assert_eq(nbd_get_be64(g.p + 8), NBD_OPTS_MAGIC);
	cr_assert_eq(nbd_get_be16(g.p + 16), NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	nbd_buf_free(&g);
}

Test(handshake, bad_client_flags_close)
{
	uint8_t flags[4] = {0, 0, 0, 0}; /* no FIXED_NEWSTYLE */
	size_t used;

	nbd_hs_init(&hs, NBD_TLS_OFF);
	cr_assert_eq(nbd_hs_feed(&hs, flags, 4, &used), NBD_HS_ERROR);
	nbd_hs_init(&hs, NBD_TLS_OFF);
	flags[3] = 0x81;
	cr_assert_eq(nbd_hs_feed(&hs, flags, 4, &used), NBD_HS_ERROR);
}

Test(handshake, bad_option_magic_close)
{
	uint8_t h[16] = {0};
	size_t used;

	cr_assert_eq(nbd_hs_feed(&hs, h, 16, &used), NBD_HS_ERROR);
	cr_assert_eq(hs.state, NBD_HS_DEAD);
	cr_assert_eq(nbd_hs_feed(&hs, h, 16, &used), NBD_HS_ERROR);
}

Test(handshake, oversized_option_close)
{
	struct nbd_buf b = {0};
	size_t used;

	nbd_buf_put_be64(&b, NBD_OPTS_MAGIC);
	nbd_buf_put_be32(&b, NBD_OPT_GO);
	nbd_buf_put_be32(&b, NBD_MAX_OPTION + 1);
	cr_assert_eq(nbd_hs_feed(&hs, b.p, b.len, &used), NBD_HS_ERROR);
	nbd_buf_free(&b);
}

Test(handshake, unknown_option_unsup_then_next_parsed)
{
	uint32_t len;
	size_t pos = 0;

	cr_assert_eq(send_opt(99, "abc", 3), NBD_HS_CONTINUE);
	cr_assert_eq(next_reply(&pos, 99, &len), NBD_REP_ERR_UNSUP);
	cr_assert_eq(send_opt(NBD_OPT_STRUCTURED_REPLY, NULL, 0), NBD_HS_CONTINUE);
	cr_assert_eq(next_reply(&pos, NBD_OPT_STRUCTURED_REPLY, &len), NBD_REP_ACK);
	cr_assert(hs.structured);
}

Test(handshake, two_options_in_one_feed)
{
	struct nbd_buf b = {0};
	size_t used;

	opt_bytes(&b, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	opt_bytes(&b, 77, NULL, 0);
	cr_assert_eq(nbd_hs_feed(&hs, b.p, b.len, &used), NBD_HS_OPTION);
	cr_assert_eq(used, 16);
	cr_assert_eq(nbd_hs_handle(&hs, &ops, NULL, &out), NBD_HS_CONTINUE);
	cr_assert_eq(nbd_hs_feed(&hs, b.p + used, b.len - used, &used), NBD_HS_OPTION);
	cr_assert_eq(hs.opt, 77);
	nbd_buf_free(&b);
}

Test(handshake, go_known_export)
{
	uint8_t p[64];
	uint16_t reqs[] = {NBD_INFO_NAME, NBD_INFO_DESCRIPTION, NBD_INFO_BLOCK_SIZE};
	size_t n = info_payload(p, "p/v", reqs, 3), pos = 0;
	uint32_t len;
	int seen_export = 0, seen_name = 0, seen_desc = 0, seen_bs = 0;

	cr_assert_eq(send_opt(NBD_OPT_GO, p, (uint32_t)n), NBD_HS_GO);
	for (;;) {
		size_t start = pos + 20;
		uint32_t t = next_reply(&pos, NBD_OPT_GO, &len);

		if (t == NBD_REP_ACK) {
			break;
		}
		cr_assert_eq(t, NBD_REP_INFO);
		switch (nbd_get_be16(out.p + start)) {
		case NBD_INFO_EXPORT:
			cr_assert_eq(len, 12);
			cr_assert_eq(nbd_get_be64(out.p + start + 2), 1ull << 30);
			uint16_t f = nbd_get_be16(out.p + start + 10);
			cr_assert(f & NBD_FLAG_HAS_FLAGS);
			cr_assert(f & NBD_FLAG_CAN_MULTI_CONN);
			cr_assert(f & NBD_FLAG_SEND_WRITE_ZEROES);
			cr_assert_not(f & NBD_FLAG_READ_ONLY);
			cr_assert_not(f & NBD_FLAG_SEND_DF); /* no structured replies */
			seen_export++;
			break;
		case NBD_INFO_NAME:
			cr_assert_eq(len, 2 + 3);
			cr_assert(memcmp(out.p + start + 2, "p/v", 3) == 0);
			seen_name++;
			break;
		case NBD_INFO_DESCRIPTION:
			seen_desc++;
			break;
		case NBD_INFO_BLOCK_SIZE:
			cr_assert_eq(len, 14);
			cr_assert_eq(nbd_get_be32(out.p + start + 2), NBD_MIN_BLOCK);
			cr_assert_eq(nbd_get_be32(out.p + start + 6), NBD_PREF_BLOCK);
			cr_assert_eq(nbd_get_be32(out.p + start + 10), NBD_MAX_PAYLOAD);
			seen_bs++;
			break;
		default:
			cr_assert_fail("unexpected info");
		}
	}
	cr_assert_eq(seen_export + seen_name + seen_desc + seen_bs, 4);
	cr_assert_eq(pos, out.len);
	cr_assert_eq(bound, 1);
	cr_assert_str_eq(hs.export_name, "p/v");
	cr_assert(hs.block_size_requested);
}

Test(handshake, info_does_not_bind_and_snapshot_is_read_only)
{
	uint8_t p[64];
	size_t n = info_payload(p, "p/v@s", NULL, 0), pos = 0;
	uint32_t len;

	cr_assert_eq(send_opt(NBD_OPT_INFO, p, (uint32_t)n), NBD_HS_CONTINUE);
	cr_assert_eq(next_reply(&pos, NBD_OPT_INFO, &len), NBD_REP_INFO);
	uint16_t f = nbd_get_be16(out.p + 20 + 10);
	cr_assert(f & NBD_FLAG_READ_ONLY);
	cr_assert_not(f & NBD_FLAG_SEND_TRIM);
	cr_assert_not(f & NBD_FLAG_SEND_FUA);
	/* BLOCK_SIZE is sent even when not requested. */
	cr_assert_eq(next_reply(&pos, NBD_OPT_INFO, &len), NBD_REP_INFO);
	cr_assert_eq(nbd_get_be16(out.p + pos - len), NBD_INFO_BLOCK_SIZE);
	cr_assert_eq(nbd_get_be32(out.p + pos - len + 2), NBD_MIN_BLOCK);
	cr_assert_eq(next_reply(&pos, NBD_OPT_INFO, &len), NBD_REP_ACK);
	cr_assert_eq(bound, 0);
}

Test(handshake, unknown_export_keeps_connection)
{
	uint8_t p[64];
	size_t n = info_payload(p, "p/nope", NULL, 0), pos = 0;
	uint32_t len;

	cr_assert_eq(send_opt(NBD_OPT_GO, p, (uint32_t)n), NBD_HS_CONTINUE);
	cr_assert_eq(next_reply(&pos, NBD_OPT_GO, &len), NBD_REP_ERR_UNKNOWN);
	cr_assert_gt(len, 0, "error carries a message");
	cr_assert(memmem(out.p + 20, len, "p/nope", 6) != NULL);
	n = info_payload(p, "p/v", NULL, 0);
	cr_assert_eq(send_opt(NBD_OPT_GO, p, (uint32_t)n), NBD_HS_GO);
}

Test(handshake, malformed_go_is_invalid)
{
	uint8_t p[64];
	size_t n = info_payload(p, "p/v", NULL, 0), pos = 0;
	uint32_t len;

	p[n - 1] = 1; /* claims one request that is not there */
	cr_assert_eq(send_opt(NBD_OPT_GO, p, (uint32_t)n), NBD_HS_CONTINUE);
	cr_assert_eq(next_reply(&pos, NBD_OPT_GO, &len), NBD_REP_ERR_INVALID);
	cr_assert_eq(send_opt(NBD_OPT_GO, p, 3), NBD_HS_CONTINUE);
	cr_assert_eq(next_reply(&pos, NBD_OPT_GO, &len), NBD_REP_ERR_INVALID);
	uint8_t big[] = {0xff, 0xff, 0xff, 0xff, 0, 0};
	cr_assert_eq(send_opt(NBD_OPT_GO, big, 6), NBD_HS_CONTINUE);
	cr_assert_eq(next_reply(&pos, NBD_OPT_GO, &len), NBD_REP_ERR_INVALID);
}

Test(handshake, export_name)
{
	cr_assert_eq(send_opt(NBD_OPT_EXPORT_NAME, "p/v", 3), NBD_HS_GO);
	cr_assert_eq(out.len, 10, "NO_ZEROES negotiated: no 124 zero bytes");
	cr_assert_eq(nbd_get_be64(out.p), 1ull << 30);
}

Test(handshake, export_name_zeroes_and_unknown_closes)
{
	uint8_t flags[4] = {0, 0, 0, NBD_FLAG_C_FIXED_NEWSTYLE};
	size_t used;

	nbd_hs_init(&hs, NBD_TLS_OFF);
	nbd_hs_feed(&hs, flags, 4, &used);
	cr_assert_eq(send_opt(NBD_OPT_EXPORT_NAME, "p/v", 3), NBD_HS_GO);
	cr_assert_eq(out.len, 10 + 124);
	teardown();
	setup();
	cr_assert_eq(send_opt(NBD_OPT_EXPORT_NAME, "x/y", 3), NBD_HS_CLOSE);
	cr_assert_eq(out.len, 0);
}

Test(handshake, list)
{
	size_t pos = 0;
	uint32_t len;

	cr_assert_eq(send_opt(NBD_OPT_LIST, NULL, 0), NBD_HS_CONTINUE);
	cr_assert_eq(next_reply(&pos, NBD_OPT_LIST, &len), NBD_REP_SERVER);
	cr_assert_eq(len, 4 + 3);
	cr_assert(memcmp(out.p + 24, "p/a", 3) == 0);
	cr_assert_eq(next_reply(&pos, NBD_OPT_LIST, &len), NBD_REP_SERVER);
	cr_assert_eq(next_reply(&pos, NBD_OPT_LIST, &len), NBD_REP_ACK);
	cr_assert_eq(send_opt(NBD_OPT_LIST, "x", 1), NBD_HS_CONTINUE);
	cr_assert_eq(next_reply(&pos, NBD_OPT_LIST, &len), NBD_REP_ERR_INVALID);
}

Test(handshake, abort)
{
	size_t pos = 0;
	uint32_t len;

	cr_assert_eq(send_opt(NBD_OPT_ABORT, NULL, 0), NBD_HS_CLOSE);
	cr_assert_eq(next_reply(&pos, NBD_OPT_ABORT, &len), NBD_REP_ACK);
}

static size_t meta_payload(uint8_t *buf, const char *name, const char **q, uint32_t nq)
{
	struct nbd_buf b = {0};
	size_t len;

	nbd_buf_put_be32(&b, (uint32_t)strlen(name));
	nbd_buf_put(&b, name, strlen(name));
	nbd_buf_put_be32(&b, nq);
	for (uint32_t i = 0; i < nq; i++) {
		nbd_buf_put_be32(&b, (uint32_t)strlen(q[i]));
		nbd_buf_put(&b, q[i], strlen(q[i]));
	}
	memcpy(buf, b.p, b.len);
	len = b.len;
	nbd_buf_free(&b);
	return len;
}

Test(handshake, meta_context_needs_structured)
{
	uint8_t p[128];
	const char *q[] = {"base:allocation"};
	size_t n = meta_payload(p, "p/v", q, 1), pos = 0;
	uint32_t len;

	cr_assert_eq(send_opt(NBD_OPT_SET_META_CONTEXT, p, (uint32_t)n), NBD_HS_CONTINUE);
	cr_assert_eq(next_reply(&pos, NBD_OPT_SET_META_CONTEXT, &len), NBD_REP_ERR_INVALID);
	cr_assert_not(hs.meta_allocation);
}

Test(handshake, meta_context_set_and_list)
{
	uint8_t p[128];
	const char *q[] = {"qemu:dirty-bitmap:x", "base:allocation"};
	size_t n, pos = 0;
	uint32_t len;

	cr_assert_eq(send_opt(NBD_OPT_STRUCTURED_REPLY, NULL, 0), NBD_HS_CONTINUE);
	next_reply(&pos, NBD_OPT_STRUCTURED_REPLY, &len);

	n = meta_payload(p, "p/v", NULL, 0);
	cr_assert_eq(send_opt(NBD_OPT_LIST_META_CONTEXT, p, (uint32_t)n), NBD_HS_CONTINUE);
	cr_assert_eq(next_reply(&pos, NBD_OPT_LIST_META_CONTEXT, &len), NBD_REP_META_CONTEXT);
	cr_assert_eq(next_reply(&pos, NBD_OPT_LIST_META_CONTEXT, &len), NBD_REP_ACK);
	cr_assert_not(hs.meta_allocation, "LIST selects nothing");

	n = meta_payload(p, "p/v", q, 1);
	cr_assert_eq(send_opt(NBD_OPT_SET_META_CONTEXT, p, (uint32_t)n), NBD_HS_CONTINUE);
	cr_assert_eq(next_reply(&pos, NBD_OPT_SET_META_CONTEXT, &len), NBD_REP_ACK);
	cr_assert_not(hs.meta_allocation);

	n = meta_payload(p, "p/v", q, 2);
	cr_assert_eq(send_opt(NBD_OPT_SET_META_CONTEXT, p, (uint32_t)n), NBD_HS_CONTINUE);
	size_t start = pos + 20;
	cr_assert_eq(next_reply(&pos, NBD_OPT_SET_META_CONTEXT, &len), NBD_REP_META_CONTEXT);
	cr_assert_eq(nbd_get_be32(out.p + start), NBD_META_ID_ALLOCATION);
	cr_assert(memcmp(out.p + start + 4, "base:allocation", 15) == 0);
	cr_assert_eq(next_reply(&pos, NBD_OPT_SET_META_CONTEXT, &len), NBD_REP_ACK);
	cr_assert(hs.meta_allocation);

	/* GO to the same export keeps it. */
	n = info_payload(p, "p/v", NULL, 0);
	cr_assert_eq(send_opt(NBD_OPT_GO, p, (uint32_t)n), NBD_HS_GO);
	cr_assert(hs.meta_allocation);
	cr_assert(nbd_transmission_flags(&hs, &hs.export) & NBD_FLAG_SEND_DF);
}

Test(handshake, meta_context_truncated_query)
{
	uint8_t p[128];
	const char *q[] = {"base:allocation"};
	size_t n = meta_payload(p, "p/v", q, 1), pos = 0;
	uint32_t len;

	hs.structured = true;
	cr_assert_eq(send_opt(NBD_OPT_SET_META_CONTEXT, p, (uint32_t)n - 1), NBD_HS_CONTINUE);
	cr_assert_eq(next_reply(&pos, NBD_OPT_SET_META_CONTEXT, &len), NBD_REP_ERR_INVALID);
	n = meta_payload(p, "p/zz", q, 1);
	cr_assert_eq(send_opt(NBD_OPT_SET_META_CONTEXT, p, (uint32_t)n), NBD_HS_CONTINUE);
	cr_assert_eq(next_reply(&pos, NBD_OPT_SET_META_CONTEXT, &len), NBD_REP_ERR_UNKNOWN);
}

Test(handshake, starttls_policies)
{
	size_t pos = 0;
	uint32_t len;
	uint8_t p[64];
	size_t n;

	cr_assert_eq(send_opt(NBD_OPT_STARTTLS, NULL, 0), NBD_HS_CONTINUE);
	cr_assert_eq(next_reply(&pos, NBD_OPT_STARTTLS, &len), NBD_REP_ERR_UNSUP);

	hs.tls_mode = NBD_TLS_REQUIRE;
	n = info_payload(p, "p/v", NULL, 0);
	cr_assert_eq(send_opt(NBD_OPT_GO, p, (uint32_t)n), NBD_HS_CONTINUE);
	cr_assert_eq(next_reply(&pos, NBD_OPT_GO, &len), NBD_REP_ERR_TLS_REQD);
	cr_assert_eq(send_opt(NBD_OPT_LIST, NULL, 0), NBD_HS_CONTINUE);
	cr_assert_eq(next_reply(&pos, NBD_OPT_LIST, &len), NBD_REP_ERR_TLS_REQD);
	cr_assert_eq(send_opt(NBD_OPT_STARTTLS, "x", 1), NBD_HS_CONTINUE);
	cr_assert_eq(next_reply(&pos, NBD_OPT_STARTTLS, &len), NBD_REP_ERR_INVALID);
	cr_assert_eq(send_opt(NBD_OPT_STARTTLS, NULL, 0), NBD_HS_STARTTLS);
	cr_assert_eq(next_reply(&pos, NBD_OPT_STARTTLS, &len), NBD_REP_ACK);
	hs.structured = true;
	nbd_hs_reset_after_tls(&hs);
	cr_assert_not(hs.structured, "state before STARTTLS is forgotten");
	cr_assert_eq(send_opt(NBD_OPT_STARTTLS, NULL, 0), NBD_HS_CONTINUE);
	cr_assert_eq(next_reply(&pos, NBD_OPT_STARTTLS, &len), NBD_REP_ERR_INVALID);
	cr_assert_eq(send_opt(NBD_OPT_GO, p, (uint32_t)n), NBD_HS_GO);
}

Test(handshake, export_name_refused_without_tls)
{
	hs.tls_mode = NBD_TLS_REQUIRE;
	cr_assert_eq(send_opt(NBD_OPT_EXPORT_NAME, "p/v", 3), NBD_HS_CLOSE);
}
