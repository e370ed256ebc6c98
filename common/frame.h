/*
 * RPC frame: the wire unit between every Strata process.
 *
 *   +---------------------------+---------------------------+---------------------------+
 *   | header, 32 bytes, LE      | protobuf-c message        | raw data payload          |
 *   | (struct st_frame_hdr)     | (hdr_len bytes)           | (payload_len bytes)       |
 *   +---------------------------+---------------------------+---------------------------+
 *
 * Block data travels only in the payload, never inside a protobuf bytes field, so a 4 MiB write
 * is received straight into an aligned buffer and can go to O_DIRECT without a copy.
 * The header crc32c covers the first 28 bytes of the encoded header.
 */
#ifndef STRATA_COMMON_FRAME_H
#define STRATA_COMMON_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ST_FRAME_MAGIC         0x41525453u /* "STRA" as little-endian bytes */
#define ST_FRAME_VERSION       1
#define ST_FRAME_HDR_SIZE      32
#define ST_FRAME_MAX_MSG       (1u << 20)  /* default cap on the protobuf part */
#define ST_FRAME_MAX_PAYLOAD   (64u << 20) /* default cap on the data part */
#define ST_FRAME_PAYLOAD_ALIGN 4096        /* payload buffers suit O_DIRECT */

/* Reply types are the request type with this bit set. */
#define ST_FRAME_REPLY 0x8000u

/* Frame header flags. */
#define ST_FRAME_F_FUA 0x01 /* write: durable before the reply */

/* Host-order view of the header. Encode/decode convert at the boundary. */
struct st_frame_hdr {
	uint32_t magic;
	uint8_t version;
	uint8_t flags;
	uint16_t type;
	uint64_t req_id;
	int32_t status; /* replies: 0 or a negative errno; requests: 0 */
	uint32_t hdr_len;
	uint32_t payload_len;
	uint32_t hdr_crc;
};

/* The wire layout, byte for byte. */
struct st_frame_wire {
	uint32_t magic;
	uint8_t version;
	uint8_t flags;
	uint16_t type;
	uint64_t req_id;
	int32_t status;
	uint32_t hdr_len;
	uint32_t payload_len;
	uint32_t hdr_crc;
} __attribute__((packed));
_Static_assert(sizeof(struct st_frame_wire) == ST_FRAME_HDR_SIZE, "frame header is 32 bytes");

/* Fill h (magic, version, crc computed by encode) and write the 32 wire bytes to out. */
void st_frame_hdr_encode(const struct st_frame_hdr *h, uint8_t out[ST_FRAME_HDR_SIZE])
	__attribute__((nonnull));

/*
 * Decode and validate 32 wire bytes. Returns 0, or -EBADMSG (bad magic, version or crc) or
 * -EMSGSIZE (a length above the caps). *why gets a static description of the failure.
 */
int st_frame_hdr_decode(const uint8_t in[ST_FRAME_HDR_SIZE], uint32_t max_msg, uint32_t max_payload,
			struct st_frame_hdr *h, const char **why) __attribute__((nonnull(1, 4)));

/* A complete received frame. The receiver owns msg (malloc) and payload (aligned, free()). */
struct st_frame {
	struct st_frame_hdr hdr;
	uint8_t *msg;
	uint8_t *payload;
};

void st_frame_release(struct st_frame *f) __attribute__((nonnull));

/*
 * Incremental decoder: an explicit state machine that copes with any split of the byte stream.
 *
 *   HEADER --32 bytes--> MSG --hdr_len bytes--> PAYLOAD --payload_len bytes--> READY
 *      ^                                                                        |
 *      +-------------------------- st_decoder_take() ---------------------------+
 *   any state --bad magic/crc/length or OOM--> ERROR (sticky; close the connection)
 */
enum st_decoder_state {
	ST_DEC_HEADER,
	ST_DEC_MSG,
	ST_DEC_PAYLOAD,
	ST_DEC_READY,
	ST_DEC_ERROR,
};

struct st_decoder {
	enum st_decoder_state state;
	uint32_t max_msg;
	uint32_t max_payload;
	uint8_t hbuf[ST_FRAME_HDR_SIZE];
	size_t have; /* bytes of the current part received so far */
	struct st_frame frame;
	int err;         /* negative errno once in ERROR */
	const char *why; /* static text once in ERROR */
};

/* max_msg/max_payload of 0 pick the defaults above. */
void st_decoder_init(struct st_decoder *d, uint32_t max_msg, uint32_t max_payload)
	__attribute__((nonnull));
void st_decoder_reset(struct st_decoder *d) __attribute__((nonnull)); /* frees a partial frame */

/*
 * Consume up to len bytes. Returns the number consumed (stops early once a frame is READY), or
 * a negative errno when the stream is bad (state becomes ERROR, d->why says why).
 */
ssize_t st_decoder_feed(struct st_decoder *d, const void *buf, size_t len) __attribute__((nonnull));

/*
 * Zero-copy path for big payloads: where the next bytes should land and how many are wanted.
 * Valid in HEADER, MSG and PAYLOAD states; pair with st_decoder_advance(). Returns 0 or -errno.
 */
int st_decoder_want(struct st_decoder *d, void **ptr, size_t *len) __attribute__((nonnull));
int st_decoder_advance(struct st_decoder *d, size_t n) __attribute__((nonnull));

/* In READY: move the frame out (caller now owns its buffers) and restart at HEADER. */
void st_decoder_take(struct st_decoder *d, struct st_frame *out) __attribute__((nonnull));

/*
 * A payload buffer as the decoder makes one: ST_FRAME_PAYLOAD_ALIGN-aligned, from a per-thread
 * cache (common/payload.c). Give it back with st_payload_free (free() is also correct, but
 * bypasses the cache).
 */
void *st_payload_alloc(size_t len);
void st_payload_free(void *p);

#endif
