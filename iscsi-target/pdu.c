/*
 * PDU framing. Receive is an explicit state machine fed arbitrary byte runs (whatever recv
 * returned), so a PDU may arrive in any number of pieces:
 *
 *   BHS(48) --> AHS(TotalAHSLength*4) --> HDIGEST(4)? --> DATA(DSL) --> PAD(0-3) --> DDIGEST(4)?
 *      ^                                                                                 |
 *      +--------------------------------- isc_rx_next() <---- DONE <----------------------+
 *
 * Any state may go to ERROR: an oversized DataSegmentLength, a header digest mismatch. ERROR
 * is terminal: the caller sends a Reject if the reason allows one and ends the connection,
 * which is what ERL 0 asks for. A data digest mismatch still reaches DONE (the PDU boundary
 * is known) with ddigest_bad set, so the caller can Reject that one PDU.
 *
 * The parser never trusts a length before it checked it against max_dlen, and never
 * allocates after init (the data buffer is sized once to max_dlen).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/crc32c.h"
#include "internal.h"

_Static_assert(sizeof(((struct isc_pdu *)0)->bhs) == 48, "BHS is 48 bytes");

int isc_rx_init(struct isc_rx *rx, uint32_t max_dlen)
{
	memset(rx, 0, sizeof(*rx));
	rx->state = ISC_RX_BHS;
	rx->max_dlen = max_dlen;
	rx->data_cap = max_dlen ? max_dlen : 1;
	rx->pdu.data = malloc(rx->data_cap);
	return rx->pdu.data ? 0 : -ENOMEM;
}

void isc_rx_free(struct isc_rx *rx)
{
	free(rx->pdu.data);
	rx->pdu.data = NULL;
}

int isc_rx_set_max(struct isc_rx *rx, uint32_t max_dlen)
{
	if (max_dlen > rx->data_cap) {
		uint8_t *p = realloc(rx->pdu.data, max_dlen);
		if (!p)
			return -ENOMEM;
		rx->pdu.data = p;
		rx->data_cap = max_dlen;
	}
	rx->max_dlen = max_dlen;
	return 0;
}

void isc_rx_next(struct isc_rx *rx)
{
	rx->state = ISC_RX_BHS;
	rx->got = 0;
	rx->ddigest_bad = false;
}

static void rx_error(struct isc_rx *rx, int reason)
{
	rx->state = ISC_RX_ERROR;
	rx->reject = reason;
}

/* The BHS is complete: decode the lengths and pick the next state. */
static void rx_bhs_done(struct isc_rx *rx)
{
	struct isc_pdu *p = &rx->pdu;

	p->opcode = p->bhs[0] & 0x3f;
	p->immediate = (p->bhs[0] & ISC_BHS_IMMEDIATE) != 0;
	p->ahs_len = (uint32_t)p->bhs[4] * 4;
	p->dlen = isc_get24(p->bhs + 5);
	p->itt = isc_get32(p->bhs + 16);
	rx->got = 0;
	if (p->dlen > rx->max_dlen) {
		rx_error(rx, ISC_REJECT_PROTOCOL);
		return;
	}
	if (p->ahs_len)
		rx->state = ISC_RX_AHS;
	else if (rx->hdigest)
		rx->state = ISC_RX_HDIGEST;
	else
		rx->state = p->dlen ? ISC_RX_DATA : ISC_RX_DONE;
}

static void rx_header_done(struct isc_rx *rx)
{
	rx->got = 0;
	rx->state = rx->pdu.dlen ? ISC_RX_DATA : ISC_RX_DONE;
}

static void rx_data_done(struct isc_rx *rx)
{
	rx->got = 0;
	if (rx->pdu.dlen & 3)
		rx->state = ISC_RX_PAD;
	else if (rx->ddigest)
		rx->state = ISC_RX_DDIGEST;
	else
		rx->state = ISC_RX_DONE;
}

static uint32_t pad_len(uint32_t n)
{
	return (4 - (n & 3)) & 3;
}

size_t isc_rx_feed(struct isc_rx *rx, const uint8_t *buf, size_t len)
{
	struct isc_pdu *p = &rx->pdu;
	size_t used = 0;

	while (used < len && rx->state != ISC_RX_DONE && rx->state != ISC_RX_ERROR) {
		size_t avail = len - used, n;
		const uint8_t *in = buf + used;

		switch (rx->state) {
		case ISC_RX_BHS:
			n = ISC_BHS_LEN - rx->got;
			n = n < avail ? n : avail;
			memcpy(p->bhs + rx->got, in, n);
			rx->got += (uint32_t)n;
			used += n;
			if (rx->got == ISC_BHS_LEN)
				rx_bhs_done(rx);
			break;
		case ISC_RX_AHS:
			n = p->ahs_len - rx->got;
			n = n < avail ? n : avail;
			memcpy(p->ahs + rx->got, in, n);
			rx->got += (uint32_t)n;
			used += n;
			if (rx->got == p->ahs_len) {
				rx->got = 0;
				if (rx->hdigest)
					rx->state = ISC_RX_HDIGEST;
				else
					rx_header_done(rx);
			}
			break;
		case ISC_RX_HDIGEST:
			n = ISC_DIGEST_LEN - rx->got;
			n = n < avail ? n : avail;
			memcpy(rx->digest + rx->got, in, n);
			rx->got += (uint32_t)n;
			used += n;
			if (rx->got == ISC_DIGEST_LEN) {
				uint32_t crc = st_crc32c(0, p->bhs, ISC_BHS_LEN);
				crc = st_crc32c(crc, p->ahs, p->ahs_len);
				if (crc != isc_digest_get(rx->digest)) {
					rx_error(rx, ISC_REJECT_HEADER_DIGEST);
					break;
				}
				rx_header_done(rx);
			}
			break;
		case ISC_RX_DATA:
			n = p->dlen - rx->got;
			n = n < avail ? n : avail;
			memcpy(p->data + rx->got, in, n);
			rx->got += (uint32_t)n;
			used += n;
			if (rx->got == p->dlen)
				rx_data_done(rx);
			break;
		case ISC_RX_PAD:
			n = pad_len(p->dlen) - rx->got;
			n = n < avail ? n : avail;
			rx->got += (uint32_t)n;
			used += n;
			if (rx->got == pad_len(p->dlen)) {
				rx->got = 0;
				rx->state = rx->ddigest ? ISC_RX_DDIGEST : ISC_RX_DONE;
			}
			break;
		case ISC_RX_DDIGEST:
			n = ISC_DIGEST_LEN - rx->got;
			n = n < avail ? n : avail;
			memcpy(rx->digest + rx->got, in, n);
			rx->got += (uint32_t)n;
			used += n;
			if (rx->got == ISC_DIGEST_LEN) {
				static const uint8_t zero[3];
				uint32_t crc = st_crc32c(0, p->data, p->dlen);
				crc = st_crc32c(crc, zero, pad_len(p->dlen));
				rx->ddigest_bad = crc != isc_digest_get(rx->digest);
				rx->state = ISC_RX_DONE;
			}
			break;
		case ISC_RX_DONE:
		case ISC_RX_ERROR:
			break;
		}
	}
	return used;
}

void isc_digest_put(uint8_t *p, uint32_t crc)
{
	p[0] = (uint8_t)crc;
	p[1] = (uint8_t)(crc >> 8);
	p[2] = (uint8_t)(crc >> 16);
	p[3] = (uint8_t)(crc >> 24);
}

uint32_t isc_digest_get(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void isc_tx_seal(struct isc_tx *tx, bool hdigest, bool ddigest)
{
	uint32_t pad = pad_len(tx->dlen);
	size_t hlen = ISC_BHS_LEN, tlen = pad;

	isc_put24(tx->hdr + 5, tx->dlen);
	if (hdigest) {
		isc_digest_put(tx->hdr + ISC_BHS_LEN, st_crc32c(0, tx->hdr, ISC_BHS_LEN));
		hlen += ISC_DIGEST_LEN;
	}
	tx->iovcnt = 0;
	tx->iov[tx->iovcnt++] = (struct iovec){tx->hdr, hlen};
	tx->total = hlen;
	if (tx->dlen) {
		memset(tx->trailer, 0, 3);
		tx->iov[tx->iovcnt++] = (struct iovec){(void *)tx->data, tx->dlen};
		if (ddigest) {
			uint32_t crc = st_crc32c(0, tx->data, tx->dlen);
			crc = st_crc32c(crc, tx->trailer, pad);
			isc_digest_put(tx->trailer + pad, crc);
			tlen += ISC_DIGEST_LEN;
		}
		if (tlen)
			tx->iov[tx->iovcnt++] = (struct iovec){tx->trailer, tlen};
		tx->total += tx->dlen + tlen;
	}
	tx->sent = 0;
}

const char *isc_opcode_name(uint8_t op)
{
	switch (op) {
	case ISC_OP_NOP_OUT:
		return "NOP-Out";
	case ISC_OP_SCSI_CMD:
		return "SCSI Command";
	case ISC_OP_TMF_REQ:
		return "Task Management Request";
	case ISC_OP_LOGIN_REQ:
		return "Login Request";
	case ISC_OP_TEXT_REQ:
		return "Text Request";
	case ISC_OP_DATA_OUT:
		return "Data-Out";
	case ISC_OP_LOGOUT_REQ:
		return "Logout Request";
	case ISC_OP_SNACK_REQ:
		return "SNACK Request";
	default:
		return "unknown";
	}
}
