/* CDB decoding and validation, and errno -> sense mapping. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "internal.h"

static const struct isc_geom geom = {
	.nblocks = 1000,
	.block_size = 512,
	.max_xfer_blocks = 128,
	.max_unmap_blocks = 1000,
	.max_ws_blocks = 500,
	.max_caw_blocks = 1,
};

static uint32_t v(const uint8_t *cdb, struct isc_cdb *c)
{
	return isc_cdb_validate(cdb, 16, &geom, c);
}

Test(cdb, read10_fields)
{
	uint8_t cdb[16] = {0x28, 0x08, 0, 0, 0x01, 0x00, 0, 0, 0x10, 0};
	struct isc_cdb c;

	cr_assert_eq(v(cdb, &c), 0);
	cr_expect_eq(c.lba, 256);
	cr_expect_eq(c.nblocks, 16);
	cr_expect(c.fua);
	cr_expect_eq(c.dir, ISC_DIR_IN);
	cr_expect_eq(c.xfer_len, 16 * 512);
	cr_expect(c.is_rw);
	cr_expect_not(c.writes);
}

Test(cdb, rw6_zero_means_256)
{
	uint8_t cdb[16] = {0x08, 0, 0, 5, 0, 0};
	struct isc_cdb c;

	cr_assert_eq(isc_cdb_validate(cdb, 16,
				      &(struct isc_geom){.nblocks = 1000,
							 .block_size = 512,
							 .max_xfer_blocks = 1000},
				      &c),
		     0);
	cr_expect_eq(c.lba, 5);
	cr_expect_eq(c.nblocks, 256);
}

Test(cdb, write16_range_and_limits)
{
	uint8_t cdb[16] = {0x8a};
	struct isc_cdb c;

	isc_put64(cdb + 2, 990);
	isc_put32(cdb + 10, 10);
	cr_expect_eq(v(cdb, &c), 0);
	cr_expect(c.writes);
	cr_expect_eq(c.dir, ISC_DIR_OUT);
	isc_put32(cdb + 10, 11);
	cr_expect_eq(v(cdb, &c), ISC_SENSE_LBA_OUT_OF_RANGE);
	isc_put64(cdb + 2, ~0ull);
	isc_put32(cdb + 10, 1);
	cr_expect_eq(v(cdb, &c), ISC_SENSE_LBA_OUT_OF_RANGE);
	isc_put64(cdb + 2, 0);
	isc_put32(cdb + 10, 129);
	cr_expect_eq(v(cdb, &c), ISC_SENSE_INVALID_FIELD_CDB);
	isc_put32(cdb + 10, 1);
	cdb[1] = 0x20; /* WRPROTECT without protection information */
	cr_expect_eq(v(cdb, &c), ISC_SENSE_INVALID_FIELD_CDB);
}

Test(cdb, read_only_refuses_writes)
{
	uint8_t cdb[16] = {0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0};
	struct isc_geom ro = geom;
	struct isc_cdb c;

	ro.read_only = true;
	cr_expect_eq(isc_cdb_validate(cdb, 16, &ro, &c), ISC_SENSE_WRITE_PROTECTED);
	cdb[0] = 0x28;
	cr_expect_eq(isc_cdb_validate(cdb, 16, &ro, &c), 0);
}

Test(cdb, unknown_opcode_and_naca)
{
	uint8_t cdb[16] = {0xc5};
	struct isc_cdb c;

	cr_expect_eq(v(cdb, &c), ISC_SENSE_INVALID_OPCODE);
	uint8_t tur[16] = {0x00, 0, 0, 0, 0, 0x04};
	cr_expect_eq(v(tur, &c), ISC_SENSE_INVALID_FIELD_CDB);
	tur[5] = 0;
	cr_expect_eq(v(tur, &c), 0);
}

Test(cdb, inquiry_and_service_actions)
{
	uint8_t inq[16] = {0x12, 0, 0x80, 0, 0xff, 0};
	struct isc_cdb c;

	cr_expect_eq(v(inq, &c), ISC_SENSE_INVALID_FIELD_CDB); /* page without EVPD */
	inq[1] = 1;
	cr_expect_eq(v(inq, &c), 0);
	cr_expect_eq(c.xfer_len, 255);
	uint8_t rc16[16] = {0x9e, 0x10};
	isc_put32(rc16 + 10, 32);
	cr_expect_eq(v(rc16, &c), 0);
	cr_expect_eq(c.sa, 0x10);
	rc16[1] = 0x1f;
	cr_expect_eq(v(rc16, &c), ISC_SENSE_INVALID_FIELD_CDB);
	uint8_t rl[16] = {0xa0};
	isc_put32(rl + 6, 8);
	cr_expect_eq(v(rl, &c), ISC_SENSE_INVALID_FIELD_CDB); /* allocation length < 16 */
}

Test(cdb, write_same_and_caw)
{
	uint8_t ws[16] = {0x93, 0x08};
	struct isc_cdb c;

	isc_put32(ws + 10, 0);
	cr_expect_eq(v(ws, &c), ISC_SENSE_INVALID_FIELD_CDB); /* WSNZ */
	isc_put32(ws + 10, 8);
	cr_expect_eq(v(ws, &c), 0);
	cr_expect(c.unmap);
	cr_expect_eq(c.xfer_len, 512);
	ws[1] = 0x09; /* NDOB + UNMAP: no data */
	cr_expect_eq(v(ws, &c), 0);
	cr_expect_eq(c.xfer_len, 0);
	ws[1] = 0x10; /* ANCHOR */
	cr_expect_eq(v(ws, &c), ISC_SENSE_INVALID_FIELD_CDB);

	uint8_t caw[16] = {0x89};
	caw[13] = 1;
	cr_expect_eq(v(caw, &c), 0);
	cr_expect_eq(c.xfer_len, 1024);
	caw[13] = 2;
	cr_expect_eq(v(caw, &c), ISC_SENSE_INVALID_FIELD_CDB);
}

Test(cdb, verify_bytchk)
{
	uint8_t vf[16] = {0x2f, 0x02, 0, 0, 0, 0, 0, 0, 4, 0};
	struct isc_cdb c;

	cr_expect_eq(v(vf, &c), 0);
	cr_expect_eq(c.dir, ISC_DIR_OUT);
	cr_expect_eq(c.xfer_len, 4 * 512);
	vf[1] = 0x06; /* BYTCHK=3: one block */
	cr_expect_eq(v(vf, &c), 0);
	cr_expect_eq(c.xfer_len, 512);
	vf[1] = 0x04; /* BYTCHK=2: reserved */
	cr_expect_eq(v(vf, &c), ISC_SENSE_INVALID_FIELD_CDB);
}

Test(sense, errno_mapping_and_format)
{
	uint8_t b[18];

	cr_expect_eq(isc_errno_to_sense(-EROFS), ISC_SENSE_WRITE_PROTECTED);
	cr_expect_eq(isc_errno_to_sense(-ENOSPC), ISC_SENSE_SPACE_EXHAUSTED);
	cr_expect_eq(isc_errno_to_sense(-EIO), ISC_SENSE_MEDIUM_ERROR);
	cr_expect_eq(ISC_SENSE_KEY(isc_errno_to_sense(-ESTALE)), ISC_SK_ABORTED_COMMAND);
	cr_expect_eq(isc_errno_to_sense(-EPERM), ISC_SENSE_INTERNAL_ERROR);
	cr_expect_eq(isc_sense_build(b, ISC_SENSE_MISCOMPARE_VERIFY, true, 513), 18);
	cr_expect_eq(b[0], 0xf0);
	cr_expect_eq(b[2], ISC_SK_MISCOMPARE);
	cr_expect_eq(isc_get32(b + 3), 513);
	cr_expect_eq(b[12], 0x1d);
}
