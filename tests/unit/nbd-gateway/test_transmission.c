/* Request decoding, validation and errno mapping. */
#include <criterion/criterion.h>
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "internal.h"

static size_t req_bytes(uint8_t *p, uint32_t magic, uint16_t flags, uint16_t type, uint64_t handle,
			uint64_t off, uint32_t len)
{
	struct nbd_request_wire w = {htobe32(magic),  htobe16(flags), htobe16(type),
				     htobe64(handle), htobe64(off),   htobe32(len)};

	memcpy(p, &w, sizeof(w));
	return sizeof(w);
}

Test(rx, read_header_bytewise)
{
	struct nbd_rx rx;
	uint8_t p[28];
	size_t used;
	enum nbd_rx_event ev = NBD_RX_NEED_MORE;

	nbd_rx_init(&rx);
	req_bytes(p, NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, 0x1122334455667788ull, 4096, 512);
	for (int i = 0; i < 28; i++) {
		ev = nbd_rx_feed(&rx, p + i, 1, &used);
		cr_assert_eq(used, 1);
	}
	cr_assert_eq(ev, NBD_RX_GOT_REQUEST);
	cr_assert_eq(rx.req.type, NBD_CMD_READ);
	cr_assert_eq(rx.req.handle, 0x1122334455667788ull);
	cr_assert_eq(rx.req.offset, 4096);
	cr_assert_eq(rx.req.length, 512);
	cr_assert_eq(rx.state, NBD_RX_HEADER);
}

Test(rx, write_payload_and_next_header)
{
	struct nbd_rx rx;
	uint8_t p[28 + 8 + 28], dst[8];
	size_t n = 0, used;

	nbd_rx_init(&rx);
	n += req_bytes(p, NBD_REQUEST_MAGIC, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 1, 0, 8);
	memcpy(p + n, "ABCDEFGH", 8);
	n += 8;
	n += req_bytes(p + n, NBD_REQUEST_MAGIC, 0, NBD_CMD_FLUSH, 2, 0, 0);

	cr_assert_eq(nbd_rx_feed(&rx, p, n, &used), NBD_RX_GOT_HEADER);
	cr_assert_eq(used, 28);
	nbd_rx_expect_payload(&rx, dst);
	size_t off = used;
	cr_assert_eq(nbd_rx_feed(&rx, p + off, 3, &used), NBD_RX_NEED_MORE);
	off += used;
	cr_assert_eq(nbd_rx_feed(&rx, p + off, n - off, &used), NBD_RX_GOT_REQUEST);
	cr_assert_eq(used, 5);
	cr_assert(memcmp(dst, "ABCDEFGH", 8) == 0);
	off += used;
	cr_assert_eq(nbd_rx_feed(&rx, p + off, n - off, &used), NBD_RX_GOT_REQUEST);
	cr_assert_eq(rx.req.type, NBD_CMD_FLUSH);
}

Test(rx, discard_refused_payload)
{
	struct nbd_rx rx;
	uint8_t p[28 + 16];
	size_t used;

	nbd_rx_init(&rx);
	req_bytes(p, NBD_REQUEST_MAGIC, 0, NBD_CMD_WRITE, 1, 0, 16);
	memset(p + 28, 0xee, 16);
	cr_assert_eq(nbd_rx_feed(&rx, p, sizeof(p), &used), NBD_RX_GOT_HEADER);
	nbd_rx_discard_payload(&rx);
	cr_assert_eq(nbd_rx_feed(&rx, p + 28, 16, &used), NBD_RX_DISCARDED);
	cr_assert_eq(rx.state, NBD_RX_HEADER);
}

Test(rx, direct_payload)
{
	struct nbd_rx rx;
	uint8_t p[28], dst[100], *d;
	size_t used;

	nbd_rx_init(&rx);
	req_bytes(p, NBD_REQUEST_MAGIC, 0, NBD_CMD_WRITE, 1, 0, 100);
	cr_assert_eq(nbd_rx_feed(&rx, p, 28, &used), NBD_RX_GOT_HEADER);
	nbd_rx_expect_payload(&rx, dst);
	cr_assert_eq(nbd_rx_payload_wanted(&rx, &d), 100);
	cr_assert_eq(d, dst);
	nbd_rx_payload_advance(&rx, 100);
	cr_assert_eq(nbd_rx_payload_wanted(&rx, &d), 0);
	cr_assert_eq(nbd_rx_feed(&rx, p, 0, &used), NBD_RX_GOT_REQUEST);
}

Test(rx, bad_magic_and_oversized_write_are_fatal)
{
	struct nbd_rx rx;
	uint8_t p[28];
	size_t used;

	nbd_rx_init(&rx);
	req_bytes(p, 0xdeadbeef, 0, NBD_CMD_READ, 1, 0, 512);
	cr_assert_eq(nbd_rx_feed(&rx, p, 28, &used), NBD_RX_BAD_MAGIC);
	cr_assert_eq(rx.state, NBD_RX_DEAD);
	nbd_rx_init(&rx);
	req_bytes(p, NBD_REQUEST_MAGIC, 0, NBD_CMD_WRITE, 1, 0, NBD_MAX_PAYLOAD + 1);
	cr_assert_eq(nbd_rx_feed(&rx, p, 28, &used), NBD_RX_TOO_BIG);
	/* An oversized READ is not a violation: it has no payload and gets EINVAL. */
	nbd_rx_init(&rx);
	req_bytes(p, NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, 1, 0, NBD_MAX_PAYLOAD + 1);
	cr_assert_eq(nbd_rx_feed(&rx, p, 28, &used), NBD_RX_GOT_REQUEST);
}

static const struct nbd_tx_ctx rw = {.size = 1 << 20,
				     .structured = true,
				     .meta_allocation = true,
				     .min_block = 4096,
				     .align_reads = true};
static const struct nbd_tx_ctx ro = {.size = 1 << 20, .read_only = true, .min_block = 4096};

static int v(const struct nbd_tx_ctx *c, uint16_t type, uint16_t flags, uint64_t off, uint32_t len)
{
	struct nbd_request r = {.flags = flags, .type = type, .offset = off, .length = len};

	return nbd_validate_request(c, &r);
}

Test(validate, accepts_good_requests)
{
	cr_assert_eq(v(&rw, NBD_CMD_READ, 0, 0, 4096), 0);
	cr_assert_eq(v(&rw, NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 4096), 0);
	cr_assert_eq(v(&rw, NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, (1 << 20) - 4096, 4096), 0);
	cr_assert_eq(v(&rw, NBD_CMD_FLUSH, 0, 0, 0), 0);
	cr_assert_eq(v(&rw, NBD_CMD_TRIM, NBD_CMD_FLAG_FUA, 0, 1 << 20), 0);
	cr_assert_eq(v(&rw, NBD_CMD_WRITE_ZEROES,
		       NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO | NBD_CMD_FLAG_FUA, 0, 4096),
		     0);
	cr_assert_eq(v(&rw, NBD_CMD_CACHE, 0, 0, 512), 0);
	cr_assert_eq(v(&rw, NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 0, 512), 0);
	cr_assert_eq(v(&rw, NBD_CMD_DISC, 0, 0, 0), 0);
	cr_assert_eq(v(&ro, NBD_CMD_READ, 0, 1, 3), 0, "reads unaligned unless agreed");
}

Test(validate, range)
{
	cr_assert_eq(v(&rw, NBD_CMD_READ, 0, 1 << 20, 512), -EINVAL);
	cr_assert_eq(v(&rw, NBD_CMD_READ, 0, UINT64_MAX - 511, 1024), -EINVAL, "no overflow");
	cr_assert_eq(v(&rw, NBD_CMD_WRITE, 0, 1 << 20, 4096), -ENOSPC);
	cr_assert_eq(v(&rw, NBD_CMD_WRITE_ZEROES, 0, (1 << 20) - 4096, 8192), -ENOSPC);
	cr_assert_eq(v(&rw, NBD_CMD_TRIM, 0, 1 << 20, 512), -EINVAL);
	cr_assert_eq(v(&rw, NBD_CMD_BLOCK_STATUS, 0, 1 << 20, 512), -EINVAL);
	cr_assert_eq(v(&rw, NBD_CMD_READ, 0, 0, NBD_MAX_PAYLOAD + 512), -EINVAL);
}

Test(validate, zero_length_and_alignment)
{
	cr_assert_eq(v(&rw, NBD_CMD_READ, 0, 0, 0), -EINVAL);
	cr_assert_eq(v(&rw, NBD_CMD_WRITE, 0, 0, 0), -EINVAL);
	cr_assert_eq(v(&rw, NBD_CMD_READ, 0, 1, 512), -EINVAL);
	cr_assert_eq(v(&rw, NBD_CMD_WRITE, 0, 0, 100), -EINVAL);
	cr_assert_eq(v(&rw, NBD_CMD_WRITE, 0, 512, 4096), -EINVAL);
	cr_assert_eq(v(&ro, NBD_CMD_TRIM, 0, 0, 512), -EPERM, "EPERM before alignment");
	cr_assert_eq(v(&rw, NBD_CMD_TRIM, 0, 0, 512), -EINVAL);
	cr_assert_eq(v(&rw, NBD_CMD_WRITE_ZEROES, 0, 4096, 100), -EINVAL);
	cr_assert_eq(v(&rw, NBD_CMD_FLUSH, 0, 0, 512), -EINVAL);
}

Test(validate, flags)
{
	cr_assert_eq(v(&rw, NBD_CMD_READ, NBD_CMD_FLAG_FUA, 0, 4096), -EINVAL);
	cr_assert_eq(v(&ro, NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 512), -EINVAL, "DF needs SR");
	cr_assert_eq(v(&rw, NBD_CMD_WRITE, NBD_CMD_FLAG_NO_HOLE, 0, 512), -EINVAL);
	cr_assert_eq(v(&rw, NBD_CMD_READ, 0x8000, 0, 512), -EINVAL);
	cr_assert_eq(v(&rw, NBD_CMD_FLUSH, NBD_CMD_FLAG_FUA, 0, 0), -EINVAL);
	cr_assert_eq(v(&rw, 42, 0, 0, 512), -EINVAL);
	cr_assert_eq(v(&ro, NBD_CMD_BLOCK_STATUS, 0, 0, 512), -EINVAL, "no meta context");
}

Test(validate, read_only)
{
	cr_assert_eq(v(&ro, NBD_CMD_WRITE, 0, 0, 512), -EPERM);
	cr_assert_eq(v(&ro, NBD_CMD_TRIM, 0, 0, 512), -EPERM);
	cr_assert_eq(v(&ro, NBD_CMD_WRITE_ZEROES, 0, 0, 512), -EPERM);
	cr_assert_eq(v(&ro, NBD_CMD_WRITE, 0, 1 << 30, 512), -EPERM, "EPERM before range");
	cr_assert_eq(v(&ro, NBD_CMD_FLUSH, 0, 0, 0), 0);
}

Test(errno_map, values)
{
	cr_assert_eq(nbd_errno_to_wire(0), 0);
	cr_assert_eq(nbd_errno_to_wire(-EPERM), NBD_EPERM);
	cr_assert_eq(nbd_errno_to_wire(-EROFS), NBD_EPERM);
	cr_assert_eq(nbd_errno_to_wire(-EIO), NBD_EIO);
	cr_assert_eq(nbd_errno_to_wire(-EILSEQ), NBD_EIO);
	cr_assert_eq(nbd_errno_to_wire(-ENOMEM), NBD_ENOMEM);
	cr_assert_eq(nbd_errno_to_wire(EINVAL), NBD_EINVAL);
	cr_assert_eq(nbd_errno_to_wire(-ENOSPC), NBD_ENOSPC);
	cr_assert_eq(nbd_errno_to_wire(-EDQUOT), NBD_ENOSPC);
	cr_assert_eq(nbd_errno_to_wire(-EFBIG), NBD_ENOSPC);
	cr_assert_eq(nbd_errno_to_wire(-EOVERFLOW), NBD_EOVERFLOW);
	cr_assert_eq(nbd_errno_to_wire(-ENOTSUP), NBD_ENOTSUP);
	cr_assert_eq(nbd_errno_to_wire(-ESHUTDOWN), NBD_ESHUTDOWN);
	cr_assert_eq(nbd_errno_to_wire(-ESTALE), NBD_EIO);
	cr_assert_eq(nbd_errno_to_wire(-ETIMEDOUT), NBD_EIO);
}

Test(encode, simple_and_chunk)
{
	uint8_t b[32];

	cr_assert_eq(nbd_encode_simple(b, 0x0102030405060708ull, NBD_EINVAL), 16);
	cr_assert_eq(nbd_get_be32(b), NBD_SIMPLE_MAGIC);
	cr_assert_eq(nbd_get_be32(b + 4), NBD_EINVAL);
	cr_assert_eq(nbd_get_be64(b + 8), 0x0102030405060708ull);
	cr_assert_eq(nbd_encode_chunk(b, 7, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_HOLE, 12),
		     20);
	cr_assert_eq(nbd_get_be32(b), NBD_STRUCTED_MAGIC);
	cr_assert_eq(nbd_get_be16(b + 4), NBD_REPLY_FLAG_DONE);
	cr_assert_eq(nbd_get_be16(b + 6), NBD_REPLY_TYPE_OFFSET_HOLE);
	cr_assert_eq(nbd_get_be64(b + 8), 7);
	cr_assert_eq(nbd_get_be32(b + 16), 12);
}
