/*
 * Transmission phase, the protocol half: the request decoder (a state machine over bytes),
 * the one request validator, the one errno -> NBD error mapping, and the reply encoders.
 * Executing requests against libstrata is request.c's job.
 *
 *   HEADER --28 bytes--> GOT_HEADER --(caller validates)--+--> GOT_REQUEST (no payload)
 *                                                        +--> PAYLOAD --length--> GOT_REQUEST
 *                                                        +--> DISCARD --length--> DISCARDED
 *   bad magic / WRITE length > NBD_MAX_PAYLOAD --> DEAD (the connection is closed)
 *
 * A refused WRITE still has its payload on the wire; DISCARD skips it so the next header is
 * found and the connection survives the error reply.
 */
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "internal.h"

void nbd_rx_init(struct nbd_rx *rx)
{
	memset(rx, 0, sizeof(*rx));
	rx->state = NBD_RX_HEADER;
}

enum nbd_rx_event nbd_rx_feed(struct nbd_rx *rx, const uint8_t *p, size_t n, size_t *used)
{
	size_t take;

	*used = 0;
	switch (rx->state) {
	case NBD_RX_HEADER:
		take = sizeof(rx->hdr) - rx->got;
		take = take < n ? take : n;
		memcpy(rx->hdr + rx->got, p, take);
		rx->got += take;
		*used = take;
		if (rx->got < sizeof(rx->hdr)) {
			return NBD_RX_NEED_MORE;
		}
		rx->got = 0;
		if (nbd_get_be32(rx->hdr) != NBD_REQUEST_MAGIC) {
			rx->state = NBD_RX_DEAD;
			return NBD_RX_BAD_MAGIC;
		}
		rx->req.flags = nbd_get_be16(rx->hdr + 4);
		rx->req.type = nbd_get_be16(rx->hdr + 6);
		rx->req.handle = nbd_get_be64(rx->hdr + 8);
		rx->req.offset = nbd_get_be64(rx->hdr + 16);
		rx->req.length = nbd_get_be32(rx->hdr + 24);
		if (rx->req.type == NBD_CMD_WRITE && rx->req.length > NBD_MAX_PAYLOAD) {
			rx->state = NBD_RX_DEAD;
			return NBD_RX_TOO_BIG;
		}
		/* The caller must pick PAYLOAD or DISCARD for a WRITE before feeding more. */
		return rx->req.type == NBD_CMD_WRITE && rx->req.length > 0 ? NBD_RX_GOT_HEADER
									   : NBD_RX_GOT_REQUEST;
	case NBD_RX_PAYLOAD:
	case NBD_RX_DISCARD:
		take = rx->need < n ? rx->need : n;
		if (rx->state == NBD_RX_PAYLOAD) {
			memcpy(rx->dst, p, take);
			rx->dst += take;
		}
		rx->need -= take;
		*used = take;
		if (rx->need > 0) {
			return NBD_RX_NEED_MORE;
		}
		if (rx->state == NBD_RX_DISCARD) {
			rx->state = NBD_RX_HEADER;
			return NBD_RX_DISCARDED;
		}
		rx->state = NBD_RX_HEADER;
		return NBD_RX_GOT_REQUEST;
	case NBD_RX_DEAD:
	default:
		return NBD_RX_BAD_MAGIC;
	}
}

void nbd_rx_expect_payload(struct nbd_rx *rx, void *dst)
{
	rx->state = NBD_RX_PAYLOAD;
	rx->dst = dst;
	rx->need = rx->req.length;
}

void nbd_rx_discard_payload(struct nbd_rx *rx)
{
	rx->state = NBD_RX_DISCARD;
	rx->dst = NULL;
	rx->need = rx->req.length;
}

size_t nbd_rx_payload_wanted(const struct nbd_rx *rx, uint8_t **dst)
{
	if (rx->state != NBD_RX_PAYLOAD) {
		*dst = NULL;
		return 0;
	}
	*dst = rx->dst;
	return rx->need;
}

void nbd_rx_payload_advance(struct nbd_rx *rx, size_t n)
{
	rx->dst += n;
	rx->need -= n;
}

/*
 * The one place that decides whether a request may run. Returns 0, or the negative errno to
 * reply with; the connection stays up either way. Order matters: flags before range (an
 * unknown flag is EINVAL whatever the range), read-only before range (a write to a snapshot
 * is EPERM), and writes past the end are ENOSPC while everything else past the end is EINVAL,
 * as proto.md asks. Unaligned requests are EINVAL.
 */
int nbd_validate_request(const struct nbd_tx_ctx *ctx, const struct nbd_request *req)
{
	uint16_t allowed;
	bool is_write = false, needs_range = true;

	switch (req->type) {
	case NBD_CMD_READ:
		allowed = ctx->structured ? NBD_CMD_FLAG_DF : 0;
		break;
	case NBD_CMD_WRITE:
		allowed = NBD_CMD_FLAG_FUA;
		is_write = true;
		break;
	case NBD_CMD_FLUSH:
		allowed = 0;
		needs_range = false;
		break;
	case NBD_CMD_TRIM:
		allowed = NBD_CMD_FLAG_FUA;
		is_write = true;
		break;
	case NBD_CMD_WRITE_ZEROES:
		allowed = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
		is_write = true;
		break;
	case NBD_CMD_CACHE:
		allowed = 0;
		break;
	case NBD_CMD_BLOCK_STATUS:
		if (!ctx->structured || !ctx->meta_allocation) {
			return -EINVAL; /* no context negotiated */
		}
		allowed = NBD_CMD_FLAG_REQ_ONE;
		break;
	case NBD_CMD_DISC:
		return 0;
	default:
		return -EINVAL;
	}
	if (req->flags & ~allowed) {
		return -EINVAL;
	}
	if (!needs_range) {
		return req->offset == 0 && req->length == 0 ? 0 : -EINVAL;
	}
	if (is_write && ctx->read_only) {
		return -EPERM;
	}
	if (req->length == 0) {
		return -EINVAL;
	}
	if (req->type == NBD_CMD_READ && req->length > NBD_MAX_PAYLOAD) {
		return -EINVAL;
	}
	if (req->offset > ctx->size || req->length > ctx->size - req->offset) {
		return req->type == NBD_CMD_WRITE || req->type == NBD_CMD_WRITE_ZEROES ? -ENOSPC
										       : -EINVAL;
	}
	/* Writes must cover whole blocks. Reads of any alignment work (libstrata reads the
	 * enclosing blocks), so they are only held to the block size a client agreed to. */
	if (ctx->min_block > 1 && (req->type == NBD_CMD_WRITE || req->type == NBD_CMD_TRIM ||
				   req->type == NBD_CMD_WRITE_ZEROES ||
				   (req->type == NBD_CMD_READ && ctx->align_reads))) {
		if ((req->offset | req->length) & (ctx->min_block - 1)) {
			return -EINVAL;
		}
	}
	return 0;
}

/* The one errno -> NBD error mapping. Accepts err with either sign. */
uint32_t nbd_errno_to_wire(int err)
{
	switch (err < 0 ? -err : err) {
	case 0:
		return 0;
	case EPERM:
	case EROFS:
	case EACCES:
		return NBD_EPERM;
	case EIO:
	case EILSEQ:
		return NBD_EIO;
	case ENOMEM:
		return NBD_ENOMEM;
	case EINVAL:
	case ERANGE:
		return NBD_EINVAL;
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
		return NBD_ENOSPC;
	case EOVERFLOW:
		return NBD_EOVERFLOW;
	case ENOTSUP:
		return NBD_ENOTSUP;
	case ESHUTDOWN:
		return NBD_ESHUTDOWN;
	default:
		return NBD_EIO;
	}
}

const char *nbd_cmd_name(uint16_t type)
{
	switch (type) {
	case NBD_CMD_READ:
		return "READ";
	case NBD_CMD_WRITE:
		return "WRITE";
	case NBD_CMD_DISC:
		return "DISC";
	case NBD_CMD_FLUSH:
		return "FLUSH";
	case NBD_CMD_TRIM:
		return "TRIM";
	case NBD_CMD_CACHE:
		return "CACHE";
	case NBD_CMD_WRITE_ZEROES:
		return "WRITE_ZEROES";
	case NBD_CMD_BLOCK_STATUS:
		return "BLOCK_STATUS";
	default:
		return "UNKNOWN";
	}
}

size_t nbd_encode_simple(void *dst, uint64_t handle, uint32_t error)
{
	struct nbd_simple_reply_wire w = {
		.magic = htobe32(NBD_SIMPLE_MAGIC),
		.error = htobe32(error),
		.handle = htobe64(handle), /* decoded big-endian, so re-encoded the same way */
	};

	memcpy(dst, &w, sizeof(w));
	return sizeof(w);
}

size_t nbd_encode_chunk(void *dst, uint64_t handle, uint16_t flags, uint16_t type, uint32_t len)
{
	struct nbd_chunk_wire w = {
		.magic = htobe32(NBD_STRUCTED_MAGIC),
		.flags = htobe16(flags),
		.type = htobe16(type),
		.handle = htobe64(handle),
		.length = htobe32(len),
	};

	memcpy(dst, &w, sizeof(w));
	return sizeof(w);
}
