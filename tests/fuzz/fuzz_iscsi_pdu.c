// lib: strata_iscsi_target
/*
 * Fuzz the iSCSI receive path: the PDU state machine fed in input-chosen chunk sizes (with
 * and without digests), then every complete Login Request through login negotiation (text
 * keys, stages, CHAP) and every SCSI Command's CDB through isc_cdb_validate.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "iscsi-target/internal.h"

static int fz_check(void *arg, const char *target, const char *initiator)
{
	(void)arg;
	(void)initiator;
	return target[0] == 'x' ? -ENOENT : 0;
}

static int fz_auth(void *arg, const char *target, struct isc_auth *auth)
{
	(void)arg;
	memset(auth, 0, sizeof(*auth));
	if (target && target[0] == 'c') {
		strcpy(auth->user, "u");
		strcpy(auth->secret, "secretsecret");
	}
	return 0;
}

static const struct isc_login_ops fz_ops = {fz_check, fz_auth, NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct isc_geom geom = {.nblocks = 1u << 20,
					     .block_size = 512,
					     .max_xfer_blocks = 65536,
					     .max_unmap_blocks = 65536,
					     .max_ws_blocks = 65536,
					     .max_caw_blocks = 1};
	struct isc_rx rx;
	struct isc_login login;
	size_t off = 1;

	if (size < 1)
		return 0;
	if (isc_rx_init(&rx, 16384))
		return 0;
	rx.hdigest = data[0] & 1;
	rx.ddigest = data[0] & 2;
	isc_login_init(&login, &fz_ops);
	while (off < size && rx.state != ISC_RX_ERROR) {
		size_t chunk = (data[off - 1] & 0x3f) + 1;
		if (chunk > size - off)
			chunk = size - off;
		off += isc_rx_feed(&rx, data + off, chunk);
		if (rx.state == ISC_RX_DONE) {
			if (rx.pdu.opcode == ISC_OP_LOGIN_REQ) {
				struct isc_text out = {0};
				struct isc_login_result res;
				isc_login_request(&login, &rx.pdu, &out, &res);
				isc_text_free(&out);
			} else if (rx.pdu.opcode == ISC_OP_SCSI_CMD) {
				struct isc_cdb c;
				isc_cdb_validate(rx.pdu.bhs + 32, 16, &geom, &c);
			}
			isc_rx_next(&rx);
		}
	}
	isc_login_free(&login);
	isc_rx_free(&rx);
	return 0;
}
