// lib: strata_meta
/*
 * strata-meta request decoder fuzzer. The first byte picks the frame type (one of the meta
 * types, or, for values past the table, a raw type so unknown types are covered too); the rest
 * is the protobuf body handed to md_request_decode(), the one function every meta request
 * passes through. A decoded request is walked (packed again) and freed: nothing may crash or
 * leak, and a failure must come with a reason.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "meta/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint16_t types[] = {256, 257, 258, 259, 260, 261, 272, 273, 288,
				 289, 290, 291, 292, 293, 304, 305, 306, 307,
				 320, 321, 322, 323, 324, 325, 336, 337, 338};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1) {
		return 0;
	}
	size_t ntypes = sizeof(types) / sizeof(types[0]);
	uint16_t type = data[0] < ntypes ? types[data[0]] : (uint16_t)(0x0100 | data[0]);
	char why[256] = "";
	struct md_request req;
	int rc = md_request_decode(type, size > 1 ? data + 1 : NULL, size - 1, &req, why,
				   sizeof(why));
	if (rc < 0) {
		if (why[0] == '\0' || req.msg != NULL) {
			abort();
		}
		return 0;
	}
	/* A validated message must survive a round trip. protobuf-c keeps unknown fields as it
	 * found them, including ones it could not re-parse once packed minimally (field number 0
	 * behind a padded varint key), so only messages made wholly of known fields are checked. */
	if (req.msg->n_unknown_fields > 0) {
		md_request_free(&req);
		return 0;
	}
	size_t len = protobuf_c_message_get_packed_size(req.msg);
	uint8_t *buf = malloc(len ? len : 1);
	if (buf != NULL) {
		protobuf_c_message_pack(req.msg, buf);
		struct md_request again;
		if (md_request_decode(type, buf, len, &again, why, sizeof(why)) != 0) {
			abort();
		}
		md_request_free(&again);
		free(buf);
	}
	md_request_free(&req);
	return 0;
}
