/*
 * Byte buffers and big-endian helpers. Byte order is converted only here and in the encoders,
 * at the wire boundary.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Returns 0 or -ENOMEM. */
int nbd_buf_reserve(struct nbd_buf *b, size_t more)
{
	size_t cap;
	uint8_t *p;

	if (b->len + more <= b->cap) {
		return 0;
	}
	cap = b->cap ? b->cap : 256;
	while (cap < b->len + more) {
		cap *= 2;
	}
	p = realloc(b->p, cap);
	if (p == NULL) {
		return -ENOMEM;
	}
	b->p = p;
	b->cap = cap;
	return 0;
}

/* Returns 0 or -ENOMEM. */
int nbd_buf_put(struct nbd_buf *b, const void *p, size_t n)
{
	if (n == 0) {
		return 0;
	}
	if (nbd_buf_reserve(b, n) < 0) {
		return -ENOMEM;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	return 0;
}

int nbd_buf_put_be16(struct nbd_buf *b, uint16_t v)
{
	v = htobe16(v);
	return nbd_buf_put(b, &v, sizeof(v));
}

int nbd_buf_put_be32(struct nbd_buf *b, uint32_t v)
{
	v = htobe32(v);
	return nbd_buf_put(b, &v, sizeof(v));
}

int nbd_buf_put_be64(struct nbd_buf *b, uint64_t v)
{
	v = htobe64(v);
	return nbd_buf_put(b, &v, sizeof(v));
}

/* Drop n bytes from the front. O(len): only used on small handshake and TLS buffers. */
void nbd_buf_consume(struct nbd_buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->p, b->p + n, b->len - n);
	b->len -= n;
}

void nbd_buf_free(struct nbd_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

uint16_t nbd_get_be16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return be16toh(v);
}

uint32_t nbd_get_be32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return be32toh(v);
}

uint64_t nbd_get_be64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return be64toh(v);
}
