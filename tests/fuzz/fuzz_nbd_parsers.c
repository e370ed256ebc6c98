// lib: strata_nbd_gateway
/*
 * libFuzzer target for the NBD option reader/handlers and the request decoder/validator.
 * The first byte picks the split points so both parsers see arbitrary fragmentation.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nbd-gateway/internal.h"

static int f_lookup(void *arg, const char *name, bool bind, struct nbd_export_info *info)
{
	if (strcmp(name, "p/v") != 0 && strcmp(name, "p/v@s") != 0) {
		return -ENOENT;
	}
	info->size = 1ull << 30;
	info->read_only = name[3] == '@';
	return 0;
}

static int f_list(void *arg, char ***names, size_t *n)
{
	*names = NULL;
	*n = 0;
	return 0;
}

static void f_free_list(char **names, size_t n)
{
	free(names);
}

static const struct nbd_hs_ops ops = {f_lookup, f_list, f_free_list};

static void fuzz_handshake(const uint8_t *p, size_t n, size_t step)
{
	struct nbd_hs hs;
	struct nbd_buf out = {0};
	size_t off = 0;

	nbd_hs_init(&hs, (enum nbd_tls_mode)(n % 3));
	while (off < n) {
		size_t chunk = n - off < step ? n - off : step, used;
		enum nbd_hs_event ev = nbd_hs_feed(&hs, p + off, chunk, &used);

		off += used;
		if (ev == NBD_HS_ERROR) {
			break;
		}
		if (ev == NBD_HS_OPTION) {
			ev = nbd_hs_handle(&hs, &ops, NULL, &out);
			out.len = 0;
			if (ev == NBD_HS_CLOSE || ev == NBD_HS_GO) {
				break;
			}
			if (ev == NBD_HS_STARTTLS) {
				nbd_hs_reset_after_tls(&hs);
			}
		} else if (used == 0) {
			break;
		}
	}
	nbd_hs_free(&hs);
	nbd_buf_free(&out);
}

static void fuzz_requests(const uint8_t *p, size_t n, size_t step)
{
	static uint8_t payload[1 << 16];
	struct nbd_tx_ctx ctx = {
		.size = 1 << 20, .structured = n & 1, .meta_allocation = n & 2, .min_block = 512};
	struct nbd_rx rx;
	size_t off = 0;

	nbd_rx_init(&rx);
	while (off < n) {
		size_t chunk = n - off < step ? n - off : step, used;
		enum nbd_rx_event ev = nbd_rx_feed(&rx, p + off, chunk, &used);

		off += used;
		if (ev == NBD_RX_BAD_MAGIC || ev == NBD_RX_TOO_BIG) {
			break;
		}
		if (ev == NBD_RX_GOT_HEADER) {
			if (nbd_validate_request(&ctx, &rx.req) == 0 &&
			    rx.req.length <= sizeof(payload)) {
				nbd_rx_expect_payload(&rx, payload);
			} else {
				nbd_rx_discard_payload(&rx);
			}
		} else if (ev == NBD_RX_GOT_REQUEST) {
			(void)nbd_validate_request(&ctx, &rx.req);
			(void)nbd_errno_to_wire(-(int)rx.req.length);
		} else if (used == 0 && ev == NBD_RX_NEED_MORE) {
			break;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t step;

	if (size < 1) {
		return 0;
	}
	step = (size_t)(data[0] % 64) + 1;
	fuzz_handshake(data + 1, size - 1, step);
	fuzz_requests(data + 1, size - 1, step);
	return 0;
}
