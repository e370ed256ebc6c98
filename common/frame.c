/*
 * Frame encode/decode. The decoder is a state machine over HEADER -> MSG -> PAYLOAD -> READY so a
 * peer may split its bytes anywhere (one byte at a time is legal, if slow). Every length is
 * checked against the caps before any allocation: a peer cannot make us allocate more than
 * max_msg + max_payload per connection, and a bad header poisons the decoder for good.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/crc32c.h"
#include "common/frame.h"

void st_frame_hdr_encode(const struct st_frame_hdr *h, uint8_t out[ST_FRAME_HDR_SIZE])
{
	struct st_frame_wire w = {
		.magic = htole32(ST_FRAME_MAGIC),
		.version = ST_FRAME_VERSION,
		.flags = h->flags,
		.type = htole16(h->type),
		.req_id = htole64(h->req_id),
		.status = (int32_t)htole32((uint32_t)h->status),
		.hdr_len = htole32(h->hdr_len),
		.payload_len = htole32(h->payload_len),
	};
	memcpy(out, &w, sizeof(w));
	uint32_t crc = st_crc32c(0, out, offsetof(struct st_frame_wire, hdr_crc));
	w.hdr_crc = htole32(crc);
	memcpy(out + offsetof(struct st_frame_wire, hdr_crc), &w.hdr_crc, sizeof(w.hdr_crc));
}

/* Returns 0, -EBADMSG (magic/version/crc) or -EMSGSIZE (length caps). */
int st_frame_hdr_decode(const uint8_t in[ST_FRAME_HDR_SIZE], uint32_t max_msg, uint32_t max_payload,
			struct st_frame_hdr *h, const char **why)
{
	struct st_frame_wire w;
	const char *dummy;

	if (!why) {
		why = &dummy;
	}
	memcpy(&w, in, sizeof(w));
	if (le32toh(w.magic) != ST_FRAME_MAGIC) {
		*why = "bad frame magic";
		return -EBADMSG;
	}
	uint32_t crc = st_crc32c(0, in, offsetof(struct st_frame_wire, hdr_crc));
	if (crc != le32toh(w.hdr_crc)) {
		*why = "bad frame header crc32c";
		return -EBADMSG;
	}
	if (w.version != ST_FRAME_VERSION) {
		*why = "unsupported frame version";
		return -EBADMSG;
	}
	h->magic = ST_FRAME_MAGIC;
	h->version = w.version;
	h->flags = w.flags;
	h->type = le16toh(w.type);
	h->req_id = le64toh(w.req_id);
	h->status = (int32_t)le32toh((uint32_t)w.status);
	h->hdr_len = le32toh(w.hdr_len);
	h->payload_len = le32toh(w.payload_len);
	h->hdr_crc = crc;
	if (h->hdr_len > (max_msg ? max_msg : ST_FRAME_MAX_MSG)) {
		*why = "frame message length over the limit";
		return -EMSGSIZE;
	}
	if (h->payload_len > (max_payload ? max_payload : ST_FRAME_MAX_PAYLOAD)) {
		*why = "frame payload length over the limit";
		return -EMSGSIZE;
	}
	*why = NULL;
	return 0;
}

void st_frame_release(struct st_frame *f)
{
	free(f->msg);
	st_payload_free(f->payload);
	f->msg = NULL;
	f->payload = NULL;
}

void st_decoder_init(struct st_decoder *d, uint32_t max_msg, uint32_t max_payload)
{
	memset(d, 0, sizeof(*d));
	d->state = ST_DEC_HEADER;
	d->max_msg = max_msg ? max_msg : ST_FRAME_MAX_MSG;
	d->max_payload = max_payload ? max_payload : ST_FRAME_MAX_PAYLOAD;
}

void st_decoder_reset(struct st_decoder *d)
{
	st_frame_release(&d->frame);
	st_decoder_init(d, d->max_msg, d->max_payload);
}

static int decoder_fail(struct st_decoder *d, int err, const char *why)
{
	st_frame_release(&d->frame);
	d->state = ST_DEC_ERROR;
	d->err = err;
	d->why = why;
	return err;
}

/* Move to the state that follows a completed part, skipping empty parts. */
static int decoder_next(struct st_decoder *d)
{
	d->have = 0;
	switch (d->state) {
	case ST_DEC_HEADER:
		d->state = ST_DEC_MSG;
		if (d->frame.hdr.hdr_len > 0) {
			d->frame.msg = malloc(d->frame.hdr.hdr_len);
			if (!d->frame.msg) {
				return decoder_fail(d, -ENOMEM, "out of memory for frame message");
			}
			return 0;
		}
		/* empty message */
		__attribute__((fallthrough));
	case ST_DEC_MSG:
		d->state = ST_DEC_PAYLOAD;
		if (d->frame.hdr.payload_len > 0) {
			d->frame.payload = st_payload_alloc(d->frame.hdr.payload_len);
			if (!d->frame.payload) {
				return decoder_fail(d, -ENOMEM, "out of memory for frame payload");
			}
			return 0;
		}
		/* empty payload */
		__attribute__((fallthrough));
	case ST_DEC_PAYLOAD:
		d->state = ST_DEC_READY;
		return 0;
	default:
		return decoder_fail(d, -EINVAL, "decoder misuse");
	}
}

int st_decoder_want(struct st_decoder *d, void **ptr, size_t *len)
{
	switch (d->state) {
	case ST_DEC_HEADER:
		*ptr = d->hbuf + d->have;
		*len = ST_FRAME_HDR_SIZE - d->have;
		return 0;
	case ST_DEC_MSG:
		*ptr = d->frame.msg + d->have;
		*len = d->frame.hdr.hdr_len - d->have;
		return 0;
	case ST_DEC_PAYLOAD:
		*ptr = d->frame.payload + d->have;
		*len = d->frame.hdr.payload_len - d->have;
		return 0;
	case ST_DEC_READY:
		*ptr = NULL;
		*len = 0;
		return 0;
	case ST_DEC_ERROR:
	default:
		return d->err ? d->err : -EINVAL;
	}
}

int st_decoder_advance(struct st_decoder *d, size_t n)
{
	void *ptr = NULL;
	size_t want = 0;
	int rc = st_decoder_want(d, &ptr, &want);

	if (rc < 0) {
		return rc;
	}
	if (n > want) {
		return decoder_fail(d, -EINVAL, "decoder advanced past the wanted length");
	}
	d->have += n;
	size_t total;
	switch (d->state) {
	case ST_DEC_HEADER:
		total = ST_FRAME_HDR_SIZE;
		break;
	case ST_DEC_MSG:
		total = d->frame.hdr.hdr_len;
		break;
	case ST_DEC_PAYLOAD:
		total = d->frame.hdr.payload_len;
		break;
	default:
		return 0;
	}
	if (d->have < total) {
		return 0;
	}
	if (d->state == ST_DEC_HEADER) {
		const char *why;
		rc = st_frame_hdr_decode(d->hbuf, d->max_msg, d->max_payload, &d->frame.hdr, &why);
		if (rc < 0) {
			return decoder_fail(d, rc, why);
		}
	}
	return decoder_next(d);
}

ssize_t st_decoder_feed(struct st_decoder *d, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	size_t used = 0;

	while (used < len && d->state != ST_DEC_READY) {
		void *dst = NULL;
		size_t want = 0;
		int rc = st_decoder_want(d, &dst, &want);
		if (rc < 0) {
			return rc;
		}
		size_t n = len - used < want ? len - used : want;
		memcpy(dst, p + used, n);
		used += n;
		rc = st_decoder_advance(d, n);
		if (rc < 0) {
			return rc;
		}
	}
	if (d->state == ST_DEC_ERROR) {
		return d->err;
	}
	return (ssize_t)used;
}

void st_decoder_take(struct st_decoder *d, struct st_frame *out)
{
	*out = d->frame;
	memset(&d->frame, 0, sizeof(d->frame));
	d->state = ST_DEC_HEADER;
	d->have = 0;
}
