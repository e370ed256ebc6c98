/* The request decoder: unknown types, malformed and oversized bodies, field validation. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MT(x) STRATA__META__META_MSG_TYPE__META_##x

static int decode_msg(uint16_t type, const ProtobufCMessage *m, char *why)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(len + 1);
	protobuf_c_message_pack(m, buf);
	struct md_request req;
	int rc = md_request_decode(type, buf, len, &req, why, 256);
	if (rc == 0) {
		cr_assert_not_null(req.msg);
		md_request_free(&req);
	}
	free(buf);
	return rc;
}

Test(request, valid_and_invalid_volume_create)
{
	char why[256];
	Strata__Meta__VolumeCreateReq r = STRATA__META__VOLUME_CREATE_REQ__INIT;
	r.pool = "p";
	r.name = "v";
	r.size = 1 << 30;
	cr_assert_eq(decode_msg(MT(VOLUME_CREATE), &r.base, why), 0);
	r.name = "bad name";
	cr_assert_eq(decode_msg(MT(VOLUME_CREATE), &r.base, why), -EINVAL);
	cr_assert(strstr(why, "invalid volume name") != NULL, "%s", why);
	r.name = "v";
	r.size = 0;
	cr_assert_eq(decode_msg(MT(VOLUME_CREATE), &r.base, why), -EINVAL);
	r.size = 1 << 30;
	r.pool = "";
	cr_assert_eq(decode_msg(MT(VOLUME_CREATE), &r.base, why), -EINVAL);
}

Test(request, snapshots_need_a_snap_name)
{
	char why[256];
	Strata__Meta__VolumeRef r = STRATA__META__VOLUME_REF__INIT;
	r.pool = "p";
	r.name = "v";
	cr_assert_eq(decode_msg(MT(SNAP_CREATE), &r.base, why), -EINVAL);
	cr_assert_eq(decode_msg(MT(VOLUME_INFO), &r.base, why), 0);
	r.snap = "s";
	cr_assert_eq(decode_msg(MT(SNAP_CREATE), &r.base, why), 0);
	cr_assert_eq(decode_msg(MT(VOLUME_REMOVE), &r.base, why), -EINVAL);
}

Test(request, pool_create_ranges)
{
	char why[256];
	Strata__Meta__PoolCreateReq r = STRATA__META__POOL_CREATE_REQ__INIT;
	r.name = "p";
	cr_assert_eq(decode_msg(MT(POOL_CREATE), &r.base, why), 0);
	r.replicas = 4;
	cr_assert_eq(decode_msg(MT(POOL_CREATE), &r.base, why), -EINVAL);
	r.replicas = 2;
	r.object_size = 12345;
	cr_assert_eq(decode_msg(MT(POOL_CREATE), &r.base, why), -EINVAL);
}

Test(request, unknown_malformed_oversized)
{
	char why[256];
	struct md_request req;
	cr_assert_eq(md_request_decode(0x01ff, NULL, 0, &req, why, sizeof(why)), -ENOTSUP);
	cr_assert_eq(md_request_decode(0x0001, NULL, 0, &req, why, sizeof(why)), -ENOTSUP);
	uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
	cr_assert_eq(
		md_request_decode(MT(VOLUME_CREATE), junk, sizeof(junk), &req, why, sizeof(why)),
		-EBADMSG);
	cr_assert_null(req.msg);
	uint8_t *big = calloc(1, MD_MAX_REQUEST + 1);
	cr_assert_eq(
		md_request_decode(MT(MAP_GET), big, MD_MAX_REQUEST + 1, &req, why, sizeof(why)),
		-EMSGSIZE);
	free(big);
	/* An empty body is a valid empty message. */
	cr_assert_eq(md_request_decode(MT(MAP_GET), NULL, 0, &req, why, sizeof(why)), 0);
	md_request_free(&req);
	/* ...but not for requests that need names. */
	cr_assert_eq(md_request_decode(MT(VOLUME_INFO), NULL, 0, &req, why, sizeof(why)), -EINVAL);
}

Test(request, field_number_zero_refused_at_any_depth)
{
	char why[256] = "";
	struct md_request req;
	/* Top level: a padded varint key 0x81 0x00 = field 0, wire type 1 (8 bytes follow). */
	static const uint8_t top[] = {0x81, 0x00, 1, 2, 3, 4, 5, 6, 7, 8};
	cr_assert_eq(md_request_decode(MT(STATUS), top, sizeof(top), &req, why, sizeof(why)),
		     -EBADMSG);
	cr_assert(strstr(why, "field number 0") != NULL, "%s", why);
	cr_assert_null(req.msg);
	/* Nested: PR_UPDATE { spec "p/v", record (field 3) { field 0 } }. */
	static const uint8_t nested[] = {0x0a, 3, 'p', '/', 'v', 0x1a, 10, 0x81, 0x00,
					 1,    2, 3,   4,   5,   6,    7,  8};
	why[0] = '\0';
	cr_assert_eq(
		md_request_decode(MT(PR_UPDATE), nested, sizeof(nested), &req, why, sizeof(why)),
		-EBADMSG);
	cr_assert(strstr(why, "field number 0") != NULL, "%s", why);
	/* The same nesting with a real unknown field (number 15) is accepted. */
	static const uint8_t ok[] = {0x0a, 3, 'p', '/', 'v', 0x1a, 2, 0x78, 0x01};
	cr_assert_eq(md_request_decode(MT(PR_UPDATE), ok, sizeof(ok), &req, why, sizeof(why)), 0,
		     "%s", why);
	md_request_free(&req);
}

Test(request, config_set_checks_key_and_value)
{
	char why[256];
	Strata__Meta__ConfigSetReq r = STRATA__META__CONFIG_SET_REQ__INIT;
	r.key = "full-ratio";
	const char *good[] = {"1", "95", "100"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		r.value = (char *)good[i];
		cr_assert_eq(decode_msg(MT(CONFIG_SET), &r.base, why), 0, "%s: %s", good[i], why);
	}
	const char *bad[] = {"", "0", "101", "-5", "95%", "9x", " 95", "99999999999999999999"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r.value = (char *)bad[i];
		cr_assert_eq(decode_msg(MT(CONFIG_SET), &r.base, why), -EINVAL, "'%s'", bad[i]);
		cr_assert(strstr(why, "1 to 100") != NULL, "%s", why);
	}
	r.key = "nearfull";
	r.value = "90";
	cr_assert_eq(decode_msg(MT(CONFIG_SET), &r.base, why), -EINVAL);
	cr_assert(strstr(why, "unknown setting 'nearfull'") != NULL, "%s", why);
}
