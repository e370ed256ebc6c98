// lib: strata_common
/*
 * Frame decoder fuzzer. The first 8 bytes seed the chunking: the rest of the input is fed to
 * st_decoder_feed() in chunks whose sizes come from that seed (1 byte to a few KiB), and some
 * chunks go through the zero-copy st_decoder_want()/st_decoder_advance() path instead, the way
 * st_conn receives big payloads. Every complete frame is taken and released; the decoder is
 * reset at the end, so nothing may leak and nothing may crash whatever the split.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink;

static uint64_t next_rand(uint64_t *s)
{
	/* xorshift64*: cheap and deterministic for a given input. */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

static size_t chunk_size(uint64_t *s, size_t left)
{
	uint64_t r = next_rand(s);
	size_t n;

	switch (r & 3) {
	case 0:
		n = 1;
		break;
	case 1:
		n = 1 + (size_t)((r >> 8) % 33); /* around header and small message sizes */
		break;
	case 2:
		n = 1 + (size_t)((r >> 8) % 4096);
		break;
	default:
		n = left; /* everything at once */
		break;
	}
	return n < left ? n : left;
}

/*
 * Random bytes almost never carry a valid crc32c, which would leave the MSG and PAYLOAD states
 * unexplored. In fix-up mode each header's fields come from the input but magic, version and
 * crc are made right, with lengths folded to sizes near (and sometimes over) the caps.
 */
static void make_valid_header(const uint8_t *raw, uint8_t out[ST_FRAME_HDR_SIZE])
{
	struct st_frame_wire w;
	struct st_frame_hdr h;

	memcpy(&w, raw, sizeof(w));
	memset(&h, 0, sizeof(h));
	h.magic = ST_FRAME_MAGIC;
	h.version = ST_FRAME_VERSION;
	h.flags = w.flags;
	h.type = w.type;
	h.req_id = w.req_id;
	h.status = w.status;
	h.hdr_len = w.hdr_len % 4200;
	h.payload_len = w.payload_len % ((1u << 20) + 100);
	if (w.version & 1) {
		h.payload_len %= 70000;
	}
	st_frame_hdr_encode(&h, out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct st_decoder d;
	struct st_frame f;
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	size_t off = 0;
	bool fix_headers;

	if (size >= 8) {
		uint64_t v;

		memcpy(&v, data, sizeof(v));
		seed ^= v;
		off = 8;
	}
	if (seed == 0) {
		seed = 1;
	}
	fix_headers = (seed & 1) != 0;
	/* Small caps keep each run cheap; big enough that payload and message states are hit. */
	st_decoder_init(&d, 4096, 1u << 20);

	while (off < size) {
		size_t n = chunk_size(&seed, size - off);
		void *ptr;
		size_t want;

		if (fix_headers && d.state == ST_DEC_HEADER && d.have == 0 &&
		    size - off >= ST_FRAME_HDR_SIZE) {
			uint8_t hdr[ST_FRAME_HDR_SIZE];

			make_valid_header(data + off, hdr);
			off += ST_FRAME_HDR_SIZE;
			if (st_decoder_feed(&d, hdr, sizeof(hdr)) < 0) {
				break;
			}
		} else if ((next_rand(&seed) & 7) == 0 && st_decoder_want(&d, &ptr, &want) == 0 &&
			   want > 0) {
			/* The recv-in-place path: copy at most what the decoder asked for. */
			if (n > want) {
				n = want;
			}
			memcpy(ptr, data + off, n);
			off += n;
			if (st_decoder_advance(&d, n) < 0) {
				break;
			}
		} else {
			ssize_t used = st_decoder_feed(&d, data + off, n);

			if (used < 0) {
				break;
			}
			if ((size_t)used > n) {
				__builtin_trap(); /* consumed more than it was given */
			}
			off += (size_t)used;
		}
		if (d.state == ST_DEC_READY) {
			st_decoder_take(&d, &f);
			if (f.hdr.hdr_len > 0 && f.msg == NULL) {
				__builtin_trap();
			}
			/* Touch both ends of each buffer so ASan checks their extent. */
			if (f.hdr.hdr_len > 0) {
				sink ^= ((volatile uint8_t *)f.msg)[f.hdr.hdr_len - 1];
			}
			if (f.hdr.payload_len > 0) {
				sink ^= ((volatile uint8_t *)f.payload)[0];
				sink ^= ((volatile uint8_t *)f.payload)[f.hdr.payload_len - 1];
			}
			st_frame_release(&f);
		}
		if (d.state == ST_DEC_ERROR) {
			break;
		}
	}
	st_decoder_reset(&d);
	return 0;
}
