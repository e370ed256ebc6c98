#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/frame.h"

/* Build one wire frame: header + msg + payload, in a malloc'd buffer. */
static uint8_t *build(uint16_t type, uint64_t id, int32_t status, const void *msg, uint32_t mlen,
		      const void *pl, uint32_t plen, size_t *total)
{
	struct st_frame_hdr h = {
		.type = type, .req_id = id, .status = status, .hdr_len = mlen, .payload_len = plen};
	*total = ST_FRAME_HDR_SIZE + mlen + plen;
	uint8_t *b = malloc(*total);
	st_frame_hdr_encode(&h, b);
	if (mlen > 0) {
		memcpy(b + ST_FRAME_HDR_SIZE, msg, mlen);
	}
	if (plen > 0) {
		memcpy(b + ST_FRAME_HDR_SIZE + mlen, pl, plen);
	}
	return b;
}

Test(frame, header_round_trip)
{
	struct st_frame_hdr in = {.flags = 1,
				  .type = 0x0201,
				  .req_id = 0x1122334455667788ull,
				  .status = -ENOSPC,
				  .hdr_len = 17,
				  .payload_len = 4096};
	uint8_t wire[ST_FRAME_HDR_SIZE];
	struct st_frame_hdr out;

	st_frame_hdr_encode(&in, wire);
	/* little-endian on the wire */
	cr_assert_eq(wire[0], 'S');
	cr_assert_eq(wire[3], 'A');
	cr_assert_eq(wire[8], 0x88);
	cr_assert_eq(st_frame_hdr_decode(wire, 0, 0, &out, NULL), 0);
	cr_assert_eq(out.type, in.type);
	cr_assert_eq(out.flags, in.flags);
	cr_assert_eq(out.req_id, in.req_id);
	cr_assert_eq(out.status, -ENOSPC);
	cr_assert_eq(out.hdr_len, 17);
	cr_assert_eq(out.payload_len, 4096);
}

Test(frame, whole_frame_round_trip)
{
	char msg[] = "protobuf-bytes";
	uint8_t pl[10000];
	for (size_t i = 0; i < sizeof(pl); i++) {
		pl[i] = (uint8_t)(i * 7);
	}
	size_t total;
	uint8_t *b = build(5, 42, 0, msg, sizeof(msg), pl, sizeof(pl), &total);
	struct st_decoder d;
	st_decoder_init(&d, 0, 0);
	cr_assert_eq(st_decoder_feed(&d, b, total), (ssize_t)total);
	cr_assert_eq(d.state, ST_DEC_READY);
	struct st_frame f;
	st_decoder_take(&d, &f);
	cr_assert_eq(d.state, ST_DEC_HEADER);
	cr_assert_eq(f.hdr.type, 5);
	cr_assert_eq(f.hdr.req_id, 42);
	cr_assert_arr_eq(f.msg, msg, sizeof(msg));
	cr_assert_arr_eq(f.payload, pl, sizeof(pl));
	cr_assert_eq((uintptr_t)f.payload % ST_FRAME_PAYLOAD_ALIGN, 0);
	st_frame_release(&f);
	st_decoder_reset(&d);
	free(b);
}

Test(frame, byte_at_a_time_and_back_to_back)
{
	char m1[] = "a", m2[] = "second message";
	uint8_t p2[300];
	memset(p2, 0xab, sizeof(p2));
	size_t t1, t2;
	uint8_t *b1 = build(1, 1, 0, m1, sizeof(m1), NULL, 0, &t1);
	uint8_t *b2 = build(2, 2, -EIO, m2, sizeof(m2), p2, sizeof(p2), &t2);
	uint8_t *all = malloc(t1 + t2 + ST_FRAME_HDR_SIZE);
	memcpy(all, b1, t1);
	memcpy(all + t1, b2, t2);
	/* a third frame with neither message nor payload */
	size_t t3;
	uint8_t *b3 = build(3, 3, 0, NULL, 0, NULL, 0, &t3);
	memcpy(all + t1 + t2, b3, t3);

	struct st_decoder d;
	st_decoder_init(&d, 0, 0);
	struct st_frame got[3];
	int n = 0;
	for (size_t i = 0; i < t1 + t2 + t3; i++) {
		ssize_t rc = st_decoder_feed(&d, all + i, 1);
		cr_assert_eq(rc, 1, "byte %zu consumed %zd", i, rc);
		if (d.state == ST_DEC_READY) {
			cr_assert_lt(n, 3);
			st_decoder_take(&d, &got[n++]);
		}
	}
	cr_assert_eq(n, 3);
	cr_assert_eq(got[0].hdr.type, 1);
	cr_assert_eq(got[1].hdr.status, -EIO);
	cr_assert_arr_eq(got[1].payload, p2, sizeof(p2));
	cr_assert_eq(got[2].hdr.type, 3);
	cr_assert_null(got[2].msg);
	cr_assert_null(got[2].payload);
	for (int i = 0; i < n; i++) {
		st_frame_release(&got[i]);
	}
	free(b1);
	free(b2);
	free(b3);
	free(all);
}

Test(frame, feed_stops_at_frame_boundary)
{
	size_t t1, t2;
	uint8_t *b1 = build(1, 1, 0, "x", 1, NULL, 0, &t1);
	uint8_t *b2 = build(2, 2, 0, "y", 1, NULL, 0, &t2);
	uint8_t both[128];
	memcpy(both, b1, t1);
	memcpy(both + t1, b2, t2);
	struct st_decoder d;
	st_decoder_init(&d, 0, 0);
	cr_assert_eq(st_decoder_feed(&d, both, t1 + t2), (ssize_t)t1);
	cr_assert_eq(d.state, ST_DEC_READY);
	/* READY consumes nothing until the frame is taken */
	cr_assert_eq(st_decoder_feed(&d, both + t1, t2), 0);
	struct st_frame f;
	st_decoder_take(&d, &f);
	st_frame_release(&f);
	cr_assert_eq(st_decoder_feed(&d, both + t1, t2), (ssize_t)t2);
	st_decoder_take(&d, &f);
	cr_assert_eq(f.hdr.type, 2);
	st_frame_release(&f);
	free(b1);
	free(b2);
}

Test(frame, zero_copy_want_advance)
{
	uint8_t pl[8192];
	for (size_t i = 0; i < sizeof(pl); i++) {
		pl[i] = (uint8_t)i;
	}
	size_t t;
	uint8_t *b = build(9, 9, 0, "m", 1, pl, sizeof(pl), &t);
	struct st_decoder d;
	st_decoder_init(&d, 0, 0);
	size_t off = 0;
	while (d.state != ST_DEC_READY) {
		void *dst;
		size_t want;
		cr_assert_eq(st_decoder_want(&d, &dst, &want), 0);
		size_t n = want > 1000 ? 1000 : want;
		memcpy(dst, b + off, n);
		off += n;
		cr_assert_eq(st_decoder_advance(&d, n), 0);
	}
	cr_assert_eq(off, t);
	struct st_frame f;
	st_decoder_take(&d, &f);
	cr_assert_arr_eq(f.payload, pl, sizeof(pl));
	st_frame_release(&f);
	free(b);
}

static void expect_reject(uint8_t *wire, size_t len, int err, const char *why_part)
{
	struct st_decoder d;
	st_decoder_init(&d, 1024, 65536);
	ssize_t rc = st_decoder_feed(&d, wire, len);
	cr_assert_eq(rc, err, "got %zd", rc);
	cr_assert_eq(d.state, ST_DEC_ERROR);
	cr_assert_not_null(d.why);
	cr_assert_not_null(strstr(d.why, why_part), "why: %s", d.why);
	/* the error is sticky */
	cr_assert_eq(st_decoder_feed(&d, wire, len), err);
	st_decoder_reset(&d);
}

Test(frame, bad_magic_rejected)
{
	size_t t;
	uint8_t *b = build(1, 1, 0, "x", 1, NULL, 0, &t);
	b[0] ^= 0xff;
	expect_reject(b, t, -EBADMSG, "magic");
	free(b);
}

Test(frame, bad_crc_rejected)
{
	size_t t;
	uint8_t *b = build(1, 1, 0, "x", 1, NULL, 0, &t);
	b[10] ^= 0x01; /* flip a bit in req_id: crc no longer matches */
	expect_reject(b, t, -EBADMSG, "crc");
	free(b);
}

Test(frame, bad_version_rejected)
{
	struct st_frame_hdr h = {.type = 1};
	uint8_t w[ST_FRAME_HDR_SIZE];
	st_frame_hdr_encode(&h, w);
	w[4] = 99;
	expect_reject(w, sizeof(w), -EBADMSG, ""); /* crc or version: both refuse */
}

Test(frame, oversized_lengths_rejected)
{
	struct st_frame_hdr h = {.type = 1, .hdr_len = 1025};
	uint8_t w[ST_FRAME_HDR_SIZE];
	st_frame_hdr_encode(&h, w);
	expect_reject(w, sizeof(w), -EMSGSIZE, "message length");

	h.hdr_len = 0;
	h.payload_len = 0xffffffffu;
	st_frame_hdr_encode(&h, w);
	expect_reject(w, sizeof(w), -EMSGSIZE, "payload length");
}

Test(frame, partial_frame_freed_by_reset)
{
	size_t t;
	uint8_t *b = build(1, 1, 0, "hello", 5, "payload", 7, &t);
	struct st_decoder d;
	st_decoder_init(&d, 0, 0);
	cr_assert_eq(st_decoder_feed(&d, b, t - 3), (ssize_t)(t - 3));
	cr_assert_eq(d.state, ST_DEC_PAYLOAD);
	st_decoder_reset(&d); /* ASan would flag a leak */
	cr_assert_eq(d.state, ST_DEC_HEADER);
	free(b);
}
