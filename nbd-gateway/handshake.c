/*
 * The NBD handshake, fixed newstyle only.
 *
 *   server: NBDMAGIC IHAVEOPT flags(FIXED_NEWSTYLE|NO_ZEROES)
 *   CLIENT_FLAGS --4 bytes--> OPT_HEADER --16 bytes--> OPT_DATA --optlen bytes--> [handle]
 *                                  ^                                                 |
 *                                  +------------- CONTINUE (replies sent) -----------+
 *   handle -> GO (enter transmission) | STARTTLS | CLOSE (ABORT, EXPORT_NAME failure)
 *
 * The reader is a pure state machine over bytes (nbd_hs_feed) and the handlers append their
 * replies to a buffer (nbd_hs_handle); neither touches a socket or libstrata, which is what
 * lets the unit tests and the fuzzer drive them. Export knowledge comes through nbd_hs_ops.
 *
 * Every malformed option is answered with NBD_REP_ERR_INVALID and the next option is read:
 * only a bad option magic, an option too large to buffer, or bad client flags end the
 * connection, since after those we can no longer find the next option boundary (or the
 * client cannot speak fixed newstyle).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void nbd_hs_init(struct nbd_hs *hs, enum nbd_tls_mode tls_mode)
{
	memset(hs, 0, sizeof(*hs));
	hs->state = NBD_HS_CLIENT_FLAGS;
	hs->tls_mode = tls_mode;
}

void nbd_hs_free(struct nbd_hs *hs)
{
	free(hs->data);
	hs->data = NULL;
}

void nbd_hs_reset_after_tls(struct nbd_hs *hs)
{
	hs->tls_active = true;
	hs->structured = false;
	hs->meta_allocation = false;
	hs->meta_export[0] = '\0';
	hs->block_size_requested = false;
}

/* Returns 0 or -ENOMEM. */
int nbd_hs_greeting(struct nbd_buf *out)
{
	int ret = nbd_buf_put_be64(out, NBD_MAGIC);

	ret = ret ?: nbd_buf_put_be64(out, NBD_OPTS_MAGIC);
	ret = ret ?: nbd_buf_put_be16(out, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	return ret;
}

enum nbd_hs_event nbd_hs_feed(struct nbd_hs *hs, const uint8_t *p, size_t n, size_t *used)
{
	size_t take;

	*used = 0;
	for (;;) {
		switch (hs->state) {
		case NBD_HS_CLIENT_FLAGS:
			take = 4 - hs->got < n - *used ? 4 - hs->got : n - *used;
			memcpy(hs->hdr + hs->got, p + *used, take);
			hs->got += take;
			*used += take;
			if (hs->got < 4) {
				return NBD_HS_NEED_MORE;
			}
			hs->client_flags = nbd_get_be32(hs->hdr);
			hs->got = 0;
			/* Unknown flags or no FIXED_NEWSTYLE: the spec says to close. */
			if ((hs->client_flags & NBD_FLAG_C_FIXED_NEWSTYLE) == 0 ||
			    (hs->client_flags &
			     ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))) {
				hs->state = NBD_HS_DEAD;
				return NBD_HS_ERROR;
			}
			hs->state = NBD_HS_OPT_HEADER;
			break;
		case NBD_HS_OPT_HEADER:
			take = 16 - hs->got < n - *used ? 16 - hs->got : n - *used;
			memcpy(hs->hdr + hs->got, p + *used, take);
			hs->got += take;
			*used += take;
			if (hs->got < 16) {
				return NBD_HS_NEED_MORE;
			}
			hs->got = 0;
			if (nbd_get_be64(hs->hdr) != NBD_OPTS_MAGIC) {
				hs->state = NBD_HS_DEAD;
				return NBD_HS_ERROR;
			}
			hs->opt = nbd_get_be32(hs->hdr + 8);
			hs->optlen = nbd_get_be32(hs->hdr + 12);
			if (hs->optlen > NBD_MAX_OPTION) {
				hs->state = NBD_HS_DEAD;
				return NBD_HS_ERROR;
			}
			free(hs->data);
			hs->data = malloc(hs->optlen + 1);
			if (hs->data == NULL) {
				hs->state = NBD_HS_DEAD;
				return NBD_HS_ERROR;
			}
			hs->data[hs->optlen] = '\0';
			hs->state = NBD_HS_OPT_DATA;
			break;
		case NBD_HS_OPT_DATA:
			take = hs->optlen - hs->got < n - *used ? hs->optlen - hs->got : n - *used;
			memcpy(hs->data + hs->got, p + *used, take);
			hs->got += take;
			*used += take;
			if (hs->got < hs->optlen) {
				return NBD_HS_NEED_MORE;
			}
			hs->got = 0;
			hs->state = NBD_HS_OPT_HEADER;
			return NBD_HS_OPTION;
		case NBD_HS_DEAD:
		default:
			return NBD_HS_ERROR;
		}
	}
}

/* Append one option reply header plus len bytes of data. Returns 0 or -ENOMEM. */
static int reply(struct nbd_buf *out, uint32_t opt, uint32_t type, const void *data, size_t len)
{
	int ret = nbd_buf_put_be64(out, NBD_REP_MAGIC);

	ret = ret ?: nbd_buf_put_be32(out, opt);
	ret = ret ?: nbd_buf_put_be32(out, type);
	ret = ret ?: nbd_buf_put_be32(out, (uint32_t)len);
	ret = ret ?: nbd_buf_put(out, data, len);
	return ret;
}

static enum nbd_hs_event reply_err(struct nbd_buf *out, uint32_t opt, uint32_t type,
				   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* An error reply with a human-readable message; the connection stays in option haggling. */
static enum nbd_hs_event reply_err(struct nbd_buf *out, uint32_t opt, uint32_t type,
				   const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0) {
		n = 0;
	}
	if ((size_t)n >= sizeof(msg)) {
		n = sizeof(msg) - 1;
	}
	if (reply(out, opt, type, msg, (size_t)n) < 0) {
		return NBD_HS_CLOSE;
	}
	return NBD_HS_CONTINUE;
}

static enum nbd_hs_event reply_ack(struct nbd_buf *out, uint32_t opt)
{
	return reply(out, opt, NBD_REP_ACK, NULL, 0) < 0 ? NBD_HS_CLOSE : NBD_HS_CONTINUE;
}

uint16_t nbd_transmission_flags(const struct nbd_hs *hs, const struct nbd_export_info *info)
{
	/* Every flag is a promise: FLUSH and FUA reach every replica through libstrata, and a
	 * flush on any connection covers the writes of every connection to the export because
	 * all of them share one strata_volume (export.c), hence CAN_MULTI_CONN. */
	uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_CACHE |
		     NBD_FLAG_CAN_MULTI_CONN;

	if (info->read_only) {
		f |= NBD_FLAG_READ_ONLY;
	} else {
		f |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
		     NBD_FLAG_SEND_FAST_ZERO;
	}
	if (hs->structured) {
		f |= NBD_FLAG_SEND_DF;
	}
	return f;
}

/* A name must be valid UTF-8-ish text without NUL; we only check for NUL and the length. */
static bool name_ok(const uint8_t *p, uint32_t len)
{
	return len <= NBD_MAX_NAME && memchr(p, '\0', len) == NULL;
}

static int put_info_block_size(struct nbd_buf *b, uint32_t min)
{
	int ret = nbd_buf_put_be16(b, NBD_INFO_BLOCK_SIZE);

	ret = ret ?: nbd_buf_put_be32(b, min);
	ret = ret ?: nbd_buf_put_be32(b, NBD_PREF_BLOCK);
	ret = ret ?: nbd_buf_put_be32(b, NBD_MAX_PAYLOAD);
	return ret;
}

/* OPT_INFO and OPT_GO: name length, name, request count, requests. */
static enum nbd_hs_event handle_info_go(struct nbd_hs *hs, const struct nbd_hs_ops *ops, void *arg,
					struct nbd_buf *out)
{
	const uint8_t *d = hs->data;
	uint32_t len = hs->optlen, namelen, nreq;
	bool want_name = false, want_desc = false, want_bs = false, go = hs->opt == NBD_OPT_GO;
	struct nbd_export_info info;
	char name[NBD_MAX_NAME + 1];
	struct nbd_buf b = {0};
	uint16_t tflags;
	int ret;

	if (len < 6) {
		return reply_err(out, hs->opt, NBD_REP_ERR_INVALID, "option too short");
	}
	namelen = nbd_get_be32(d);
	if (namelen > len - 6) {
		return reply_err(out, hs->opt, NBD_REP_ERR_INVALID, "name length exceeds option");
	}
	nreq = nbd_get_be16(d + 4 + namelen);
	if (6 + namelen + 2 * nreq != len) {
		return reply_err(out, hs->opt, NBD_REP_ERR_INVALID,
				 "information request count does not match option length");
	}
	if (!name_ok(d + 4, namelen)) {
		return reply_err(out, hs->opt, NBD_REP_ERR_INVALID, "invalid export name");
	}
	memcpy(name, d + 4, namelen);
	name[namelen] = '\0';
	for (uint32_t i = 0; i < nreq; i++) {
		switch (nbd_get_be16(d + 6 + namelen + 2 * i)) {
		case NBD_INFO_NAME:
			want_name = true;
			break;
		case NBD_INFO_DESCRIPTION:
			want_desc = true;
			break;
		case NBD_INFO_BLOCK_SIZE:
			want_bs = true;
			break;
		default:
			break; /* unknown requests are ignored, as the spec says */
		}
	}
	if (hs->tls_mode == NBD_TLS_REQUIRE && !hs->tls_active) {
		return reply_err(out, hs->opt, NBD_REP_ERR_TLS_REQD, "TLS is required");
	}

	memset(&info, 0, sizeof(info));
	ret = ops->lookup(arg, name, go, &info);
	if (ret == -ENOENT || ret == -EINVAL) {
		return reply_err(out, hs->opt, NBD_REP_ERR_UNKNOWN, "export '%s' not found", name);
	}
	if (ret < 0) {
		return reply_err(out, hs->opt, NBD_REP_ERR_SHUTDOWN, "cannot open export '%s': %s",
				 name, strerror(-ret));
	}
	tflags = nbd_transmission_flags(hs, &info);

	/* INFO_EXPORT and BLOCK_SIZE always. libstrata (and blockd) write whole 4 KiB blocks, so
	 * the minimum is 4096; a client that did not ask is not bound by it, and gets EINVAL for
	 * unaligned writes, as proto.md requires of a server with stricter constraints. */
	ret = nbd_buf_put_be16(&b, NBD_INFO_EXPORT);
	ret = ret ?: nbd_buf_put_be64(&b, info.size);
	ret = ret ?: nbd_buf_put_be16(&b, tflags);
	ret = ret ?: reply(out, hs->opt, NBD_REP_INFO, b.p, b.len);
	b.len = 0;
	if (ret == 0 && want_name) {
		ret = nbd_buf_put_be16(&b, NBD_INFO_NAME);
		ret = ret ?: nbd_buf_put(&b, name, namelen);
		ret = ret ?: reply(out, hs->opt, NBD_REP_INFO, b.p, b.len);
		b.len = 0;
	}
	if (ret == 0 && want_desc) {
		ret = nbd_buf_put_be16(&b, NBD_INFO_DESCRIPTION);
		ret = ret ?: nbd_buf_put(&b, info.description, strlen(info.description));
		ret = ret ?: reply(out, hs->opt, NBD_REP_INFO, b.p, b.len);
		b.len = 0;
	}
	if (ret == 0) {
		ret = put_info_block_size(&b, NBD_MIN_BLOCK);
		ret = ret ?: reply(out, hs->opt, NBD_REP_INFO, b.p, b.len);
	}
	nbd_buf_free(&b);
	ret = ret ?: reply(out, hs->opt, NBD_REP_ACK, NULL, 0);
	if (ret < 0) {
		return NBD_HS_CLOSE;
	}
	if (!go) {
		return NBD_HS_CONTINUE;
	}
	snprintf(hs->export_name, sizeof(hs->export_name), "%s", name);
	hs->export = info;
	hs->tflags = tflags;
	hs->block_size_requested = want_bs;
	if (hs->meta_allocation && strcmp(hs->meta_export, name) != 0) {
		hs->meta_allocation = false; /* contexts were negotiated for another export */
	}
	return NBD_HS_GO;
}

/* OPT_EXPORT_NAME: no way to report an error but to hang up. */
static enum nbd_hs_event handle_export_name(struct nbd_hs *hs, const struct nbd_hs_ops *ops,
					    void *arg, struct nbd_buf *out)
{
	struct nbd_export_info info;
	int ret;

	if (hs->tls_mode == NBD_TLS_REQUIRE && !hs->tls_active) {
		return NBD_HS_CLOSE;
	}
	if (!name_ok(hs->data, hs->optlen)) {
		return NBD_HS_CLOSE;
	}
	memset(&info, 0, sizeof(info));
	ret = ops->lookup(arg, (const char *)hs->data, true, &info);
	if (ret < 0) {
		return NBD_HS_CLOSE;
	}
	snprintf(hs->export_name, sizeof(hs->export_name), "%s", (const char *)hs->data);
	hs->export = info;
	/* EXPORT_NAME clients never negotiated meta contexts for this export. */
	if (hs->meta_allocation && strcmp(hs->meta_export, hs->export_name) != 0) {
		hs->meta_allocation = false;
	}
	hs->tflags = nbd_transmission_flags(hs, &info);
	ret = nbd_buf_put_be64(out, info.size);
	ret = ret ?: nbd_buf_put_be16(out, hs->tflags);
	if (ret == 0 && (hs->client_flags & NBD_FLAG_C_NO_ZEROES) == 0) {
		static const uint8_t zeroes[NBD_EXPORT_ZEROES];

		ret = nbd_buf_put(out, zeroes, sizeof(zeroes));
	}
	return ret < 0 ? NBD_HS_CLOSE : NBD_HS_GO;
}

static enum nbd_hs_event handle_list(struct nbd_hs *hs, const struct nbd_hs_ops *ops, void *arg,
				     struct nbd_buf *out)
{
	char **names = NULL;
	size_t n = 0;
	int ret;

	if (hs->optlen != 0) {
		return reply_err(out, hs->opt, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
	}
	if (hs->tls_mode == NBD_TLS_REQUIRE && !hs->tls_active) {
		return reply_err(out, hs->opt, NBD_REP_ERR_TLS_REQD, "TLS is required");
	}
	ret = ops->list(arg, &names, &n);
	if (ret < 0) {
		return reply_err(out, hs->opt, NBD_REP_ERR_SHUTDOWN, "cannot list volumes: %s",
				 strerror(-ret));
	}
	for (size_t i = 0; i < n && ret == 0; i++) {
		struct nbd_buf b = {0};
		size_t len = strlen(names[i]);

		ret = nbd_buf_put_be32(&b, (uint32_t)len);
		ret = ret ?: nbd_buf_put(&b, names[i], len);
		ret = ret ?: reply(out, hs->opt, NBD_REP_SERVER, b.p, b.len);
		nbd_buf_free(&b);
	}
	ops->free_list(names, n);
	ret = ret ?: reply(out, hs->opt, NBD_REP_ACK, NULL, 0);
	return ret < 0 ? NBD_HS_CLOSE : NBD_HS_CONTINUE;
}

/* Does a meta context query select base:allocation? For LIST, "base:" means the namespace. */
static bool query_matches(const uint8_t *q, uint32_t len, bool list)
{
	static const char ns[] = "base:";

	if (len == sizeof(NBD_META_ALLOCATION) - 1 && memcmp(q, NBD_META_ALLOCATION, len) == 0) {
		return true;
	}
	return list && len == sizeof(ns) - 1 && memcmp(q, ns, len) == 0;
}

/* OPT_LIST_META_CONTEXT / OPT_SET_META_CONTEXT: export name, query count, queries. */
static enum nbd_hs_event handle_meta(struct nbd_hs *hs, const struct nbd_hs_ops *ops, void *arg,
				     struct nbd_buf *out)
{
	const uint8_t *d = hs->data;
	uint32_t len = hs->optlen, namelen, nq, pos;
	bool list = hs->opt == NBD_OPT_LIST_META_CONTEXT, match = false;
	struct nbd_export_info info;
	char name[NBD_MAX_NAME + 1];
	int ret;

	if (!hs->structured) {
		return reply_err(out, hs->opt, NBD_REP_ERR_INVALID,
				 "structured replies must be negotiated first");
	}
	if (hs->tls_mode == NBD_TLS_REQUIRE && !hs->tls_active) {
		return reply_err(out, hs->opt, NBD_REP_ERR_TLS_REQD, "TLS is required");
	}
	if (len < 8) {
		return reply_err(out, hs->opt, NBD_REP_ERR_INVALID, "option too short");
	}
	namelen = nbd_get_be32(d);
	if (namelen > len - 8 || !name_ok(d + 4, namelen)) {
		return reply_err(out, hs->opt, NBD_REP_ERR_INVALID, "invalid export name");
	}
	memcpy(name, d + 4, namelen);
	name[namelen] = '\0';
	nq = nbd_get_be32(d + 4 + namelen);
	pos = 8 + namelen;
	/* Validate every query before acting on any, so a bad option changes nothing. */
	for (uint32_t i = 0; i < nq; i++) {
		uint32_t qlen;

		if (len - pos < 4) {
			return reply_err(out, hs->opt, NBD_REP_ERR_INVALID, "truncated query");
		}
		qlen = nbd_get_be32(d + pos);
		if (qlen > len - pos - 4 || qlen > NBD_MAX_NAME) {
			return reply_err(out, hs->opt, NBD_REP_ERR_INVALID, "truncated query");
		}
		if (query_matches(d + pos + 4, qlen, list)) {
			match = true;
		}
		pos += 4 + qlen;
	}
	if (pos != len) {
		return reply_err(out, hs->opt, NBD_REP_ERR_INVALID, "trailing bytes after queries");
	}
	memset(&info, 0, sizeof(info));
	ret = ops->lookup(arg, name, false, &info);
	if (ret < 0) {
		return reply_err(out, hs->opt, NBD_REP_ERR_UNKNOWN, "export '%s' not found", name);
	}
	if (list && nq == 0) {
		match = true; /* an empty LIST query asks for every context */
	}
	if (!list) {
		hs->meta_allocation = match;
		snprintf(hs->meta_export, sizeof(hs->meta_export), "%s", name);
	}
	if (match) {
		struct nbd_buf b = {0};

		ret = nbd_buf_put_be32(&b, NBD_META_ID_ALLOCATION);
		ret = ret ?: nbd_buf_put(&b, NBD_META_ALLOCATION, sizeof(NBD_META_ALLOCATION) - 1);
		ret = ret ?: reply(out, hs->opt, NBD_REP_META_CONTEXT, b.p, b.len);
		nbd_buf_free(&b);
		if (ret < 0) {
			return NBD_HS_CLOSE;
		}
	}
	return reply_ack(out, hs->opt);
}

enum nbd_hs_event nbd_hs_handle(struct nbd_hs *hs, const struct nbd_hs_ops *ops, void *arg,
				struct nbd_buf *out)
{
	enum nbd_hs_event ev;

	switch (hs->opt) {
	case NBD_OPT_ABORT:
		/* The spec lets us ACK and hang up; clients must not rely on the ACK. */
		(void)reply(out, hs->opt, NBD_REP_ACK, NULL, 0);
		ev = NBD_HS_CLOSE;
		break;
	case NBD_OPT_EXPORT_NAME:
		ev = handle_export_name(hs, ops, arg, out);
		break;
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		ev = handle_info_go(hs, ops, arg, out);
		break;
	case NBD_OPT_LIST:
		ev = handle_list(hs, ops, arg, out);
		break;
	case NBD_OPT_STARTTLS:
		if (hs->optlen != 0) {
			ev = reply_err(out, hs->opt, NBD_REP_ERR_INVALID, "STARTTLS takes no data");
		} else if (hs->tls_mode == NBD_TLS_OFF) {
			ev = reply_err(out, hs->opt, NBD_REP_ERR_UNSUP, "TLS is not configured");
		} else if (hs->tls_active) {
			ev = reply_err(out, hs->opt, NBD_REP_ERR_INVALID, "TLS is already active");
		} else {
			ev = reply_ack(out, hs->opt) == NBD_HS_CONTINUE ? NBD_HS_STARTTLS
									: NBD_HS_CLOSE;
		}
		break;
	case NBD_OPT_STRUCTURED_REPLY:
		if (hs->optlen != 0) {
			ev = reply_err(out, hs->opt, NBD_REP_ERR_INVALID,
				       "STRUCTURED_REPLY takes no data");
		} else if (hs->tls_mode == NBD_TLS_REQUIRE && !hs->tls_active) {
			ev = reply_err(out, hs->opt, NBD_REP_ERR_TLS_REQD, "TLS is required");
		} else {
			hs->structured = true;
			ev = reply_ack(out, hs->opt);
		}
		break;
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		ev = handle_meta(hs, ops, arg, out);
		break;
	default:
		if (hs->tls_mode == NBD_TLS_REQUIRE && !hs->tls_active) {
			ev = reply_err(out, hs->opt, NBD_REP_ERR_TLS_REQD, "TLS is required");
		} else {
			ev = reply_err(out, hs->opt, NBD_REP_ERR_UNSUP,
				       "option %u is not supported", hs->opt);
		}
		break;
	}
	free(hs->data);
	hs->data = NULL;
	return ev;
}
