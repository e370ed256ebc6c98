/* The PDU receive state machine: framing, byte-at-a-time feeding, digests, limits. */
#include <criterion/criterion.h>
#include <string.h>

#include "common/crc32c.h"
#include "internal.h"

/* Build a PDU on the wire: BHS, optional AHS, digests, data + pad. Returns its length. */
static size_t build(uint8_t *out, uint8_t op, uint32_t itt, const uint8_t *ahs, uint32_t ahs_len,
		    const void *data, uint32_t dlen, bool hd, bool dd)
{
	uint8_t *p = out;
	memset(p, 0, ISC_BHS_LEN);
	p[0] = op;
	p[4] = (uint8_t)(ahs_len / 4);
	isc_put24(p + 5, dlen);
	isc_put32(p + 16, itt);
	p += ISC_BHS_LEN;
	if (ahs_len > 0) {
		memcpy(p, ahs, ahs_len);
	}
	p += ahs_len;
	if (hd) {
		isc_digest_put(p, st_crc32c(0, out, (size_t)(p - out)));
		p += 4;
	}
	if (dlen > 0) {
		memcpy(p, data, dlen);
	}
	uint32_t pad = (4 - (dlen & 3)) & 3;
	memset(p + dlen, 0, pad);
	if (dd && dlen) {
		isc_digest_put(p + dlen + pad, st_crc32c(0, p, dlen + pad));
		p += 4;
	}
	p += dlen + pad;
	return (size_t)(p - out);
}

Test(pdu, whole_pdu_in_one_feed)
{
	struct isc_rx rx;
	uint8_t wire[512];
	size_t n = build(wire, ISC_OP_NOP_OUT | ISC_BHS_IMMEDIATE, 0x1234, NULL, 0, "hello", 5,
			 false, false);

	cr_assert_eq(isc_rx_init(&rx, 8192), 0);
	cr_assert_eq(n, 48 + 8);
	cr_assert_eq(isc_rx_feed(&rx, wire, n), n);
	cr_assert_eq(rx.state, ISC_RX_DONE);
	cr_expect_eq(rx.pdu.opcode, ISC_OP_NOP_OUT);
	cr_expect(rx.pdu.immediate);
	cr_expect_eq(rx.pdu.itt, 0x1234);
	cr_expect_eq(rx.pdu.dlen, 5);
	cr_expect_eq(memcmp(rx.pdu.data, "hello", 5), 0);
	isc_rx_free(&rx);
}

Test(pdu, byte_at_a_time_with_ahs_and_digests)
{
	struct isc_rx rx;
	uint8_t wire[512], ahs[8] = {0, 5, 1, 0, 1, 2, 3, 4};
	size_t n = build(wire, ISC_OP_SCSI_CMD, 7, ahs, 8, "abcdefg", 7, true, true);

	cr_assert_eq(isc_rx_init(&rx, 8192), 0);
	rx.hdigest = rx.ddigest = true;
	for (size_t i = 0; i < n; i++) {
		cr_assert_neq(rx.state, ISC_RX_DONE, "done early at %zu", i);
		cr_assert_eq(isc_rx_feed(&rx, wire + i, 1), 1);
	}
	cr_assert_eq(rx.state, ISC_RX_DONE);
	cr_expect_not(rx.ddigest_bad);
	cr_expect_eq(rx.pdu.ahs_len, 8);
	cr_expect_eq(memcmp(rx.pdu.ahs, ahs, 8), 0);
	cr_expect_eq(memcmp(rx.pdu.data, "abcdefg", 7), 0);
	isc_rx_free(&rx);
}

Test(pdu, two_pdus_back_to_back_stop_at_boundary)
{
	struct isc_rx rx;
	uint8_t wire[512];
	size_t a = build(wire, ISC_OP_NOP_OUT, 1, NULL, 0, "xy", 2, false, false);
	size_t b = build(wire + a, ISC_OP_LOGOUT_REQ, 2, NULL, 0, NULL, 0, false, false);

	cr_assert_eq(isc_rx_init(&rx, 8192), 0);
	cr_assert_eq(isc_rx_feed(&rx, wire, a + b), a);
	cr_expect_eq(rx.pdu.itt, 1);
	isc_rx_next(&rx);
	cr_assert_eq(isc_rx_feed(&rx, wire + a, b), b);
	cr_assert_eq(rx.state, ISC_RX_DONE);
	cr_expect_eq(rx.pdu.opcode, ISC_OP_LOGOUT_REQ);
	cr_expect_eq(rx.pdu.dlen, 0);
	isc_rx_free(&rx);
}

Test(pdu, header_digest_mismatch_is_fatal)
{
	struct isc_rx rx;
	uint8_t wire[512];
	size_t n = build(wire, ISC_OP_NOP_OUT, 1, NULL, 0, NULL, 0, true, false);

	wire[48] ^= 1;
	cr_assert_eq(isc_rx_init(&rx, 8192), 0);
	rx.hdigest = true;
	isc_rx_feed(&rx, wire, n);
	cr_expect_eq(rx.state, ISC_RX_ERROR);
	cr_expect_eq(rx.reject, ISC_REJECT_HEADER_DIGEST);
	isc_rx_free(&rx);
}

Test(pdu, data_digest_mismatch_flags_the_pdu)
{
	struct isc_rx rx;
	uint8_t wire[512];
	size_t n = build(wire, ISC_OP_NOP_OUT, 1, NULL, 0, "data", 4, false, true);

	wire[n - 1] ^= 0x80;
	cr_assert_eq(isc_rx_init(&rx, 8192), 0);
	rx.ddigest = true;
	cr_expect_eq(isc_rx_feed(&rx, wire, n), n);
	cr_expect_eq(rx.state, ISC_RX_DONE);
	cr_expect(rx.ddigest_bad);
	isc_rx_free(&rx);
}

Test(pdu, oversized_data_segment_is_rejected_before_data)
{
	struct isc_rx rx;
	uint8_t bhs[48] = {ISC_OP_SCSI_CMD};

	isc_put24(bhs + 5, 8193);
	cr_assert_eq(isc_rx_init(&rx, 8192), 0);
	cr_expect_eq(isc_rx_feed(&rx, bhs, 48), 48);
	cr_expect_eq(rx.state, ISC_RX_ERROR);
	cr_expect_eq(rx.reject, ISC_REJECT_PROTOCOL);
	isc_rx_free(&rx);
}

Test(pdu, tx_seal_pads_and_digests)
{
	struct isc_tx tx;
	static const uint8_t data[5] = "abcde";

	memset(&tx, 0, sizeof(tx));
	tx.hdr[0] = ISC_OP_NOP_IN;
	tx.data = data;
	tx.dlen = 5;
	isc_tx_seal(&tx, true, true);
	cr_expect_eq(isc_get24(tx.hdr + 5), 5);
	cr_expect_eq(tx.total, 48 + 4 + 5 + 3 + 4);
	cr_expect_eq(isc_digest_get(tx.hdr + 48), st_crc32c(0, tx.hdr, 48));
	cr_expect_eq(tx.iovcnt, 3);
	/* the receiver accepts what we send */
	uint8_t wire[128];
	size_t off = 0;
	for (int i = 0; i < tx.iovcnt; i++) {
		memcpy(wire + off, tx.iov[i].iov_base, tx.iov[i].iov_len);
		off += tx.iov[i].iov_len;
	}
	struct isc_rx rx;
	cr_assert_eq(isc_rx_init(&rx, 8192), 0);
	rx.hdigest = rx.ddigest = true;
	cr_expect_eq(isc_rx_feed(&rx, wire, off), off);
	cr_expect_eq(rx.state, ISC_RX_DONE);
	cr_expect_not(rx.ddigest_bad);
	isc_rx_free(&rx);
}
