/*
 * SCSI primary commands (SPC-4) and the two single points the style guide asks for:
 * isc_cdb_validate(), which decodes and checks every CDB before anything executes, and
 * isc_errno_to_sense(), which maps libstrata's errno values to sense data.
 *
 * Logical blocks are 512 bytes by default (--block-size 4096 is the other choice) over
 * libstrata's 4096-byte units: 4096-byte physical blocks are reported (LBPPBE), and
 * scsi_sbc.c does read-modify-write for partial blocks. See docs/ARCHITECTURE.md.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* Opcodes. */
enum {
	OP_TEST_UNIT_READY = 0x00,
	OP_REQUEST_SENSE = 0x03,
	OP_READ6 = 0x08,
	OP_WRITE6 = 0x0a,
	OP_INQUIRY = 0x12,
	OP_MODE_SELECT6 = 0x15,
	OP_RESERVE6 = 0x16,
	OP_RELEASE6 = 0x17,
	OP_MODE_SENSE6 = 0x1a,
	OP_START_STOP = 0x1b,
	OP_PREVENT_ALLOW = 0x1e,
	OP_READ_CAPACITY10 = 0x25,
	OP_READ10 = 0x28,
	OP_WRITE10 = 0x2a,
	OP_WRITE_VERIFY10 = 0x2e,
	OP_VERIFY10 = 0x2f,
	OP_SYNC_CACHE10 = 0x35,
	OP_WRITE_SAME10 = 0x41,
	OP_UNMAP = 0x42,
	OP_MODE_SELECT10 = 0x55,
	OP_RESERVE10 = 0x56,
	OP_RELEASE10 = 0x57,
	OP_MODE_SENSE10 = 0x5a,
	OP_PR_IN = 0x5e,
	OP_PR_OUT = 0x5f,
	OP_READ16 = 0x88,
	OP_COMPARE_AND_WRITE = 0x89,
	OP_WRITE16 = 0x8a,
	OP_WRITE_VERIFY16 = 0x8e,
	OP_VERIFY16 = 0x8f,
	OP_SYNC_CACHE16 = 0x91,
	OP_WRITE_SAME16 = 0x93,
	OP_SERVICE_ACTION_IN16 = 0x9e,
	OP_REPORT_LUNS = 0xa0,
	OP_MAINTENANCE_IN = 0xa3,
	OP_READ12 = 0xa8,
	OP_WRITE12 = 0xaa,
	OP_WRITE_VERIFY12 = 0xae,
	OP_VERIFY12 = 0xaf,
};

#define SAI_READ_CAPACITY16 0x10
#define SAI_GET_LBA_STATUS  0x12
#define MI_REPORT_OPCODES   0x0c
#define MI_REPORT_TMFS      0x0d

/* Supported commands, for REPORT SUPPORTED OPERATION CODES: opcode, service action (or -1),
 * CDB length. */
static const struct {
	uint8_t op;
	int sa;
	uint8_t len;
} supported[] = {
	{OP_TEST_UNIT_READY, -1, 6},
	{OP_REQUEST_SENSE, -1, 6},
	{OP_READ6, -1, 6},
	{OP_WRITE6, -1, 6},
	{OP_INQUIRY, -1, 6},
	{OP_MODE_SELECT6, -1, 6},
	{OP_RESERVE6, -1, 6},
	{OP_RELEASE6, -1, 6},
	{OP_MODE_SENSE6, -1, 6},
	{OP_START_STOP, -1, 6},
	{OP_PREVENT_ALLOW, -1, 6},
	{OP_READ_CAPACITY10, -1, 10},
	{OP_READ10, -1, 10},
	{OP_WRITE10, -1, 10},
	{OP_WRITE_VERIFY10, -1, 10},
	{OP_VERIFY10, -1, 10},
	{OP_SYNC_CACHE10, -1, 10},
	{OP_WRITE_SAME10, -1, 10},
	{OP_UNMAP, -1, 10},
	{OP_MODE_SELECT10, -1, 10},
	{OP_RESERVE10, -1, 10},
	{OP_RELEASE10, -1, 10},
	{OP_MODE_SENSE10, -1, 10},
	{OP_PR_IN, 0x00, 10},
	{OP_PR_IN, 0x01, 10},
	{OP_PR_IN, 0x02, 10},
	{OP_PR_IN, 0x03, 10},
	{OP_PR_OUT, 0x00, 10},
	{OP_PR_OUT, 0x01, 10},
	{OP_PR_OUT, 0x02, 10},
	{OP_PR_OUT, 0x03, 10},
	{OP_PR_OUT, 0x04, 10},
	{OP_PR_OUT, 0x05, 10},
	{OP_PR_OUT, 0x06, 10},
	{OP_READ16, -1, 16},
	{OP_COMPARE_AND_WRITE, -1, 16},
	{OP_WRITE16, -1, 16},
	{OP_WRITE_VERIFY16, -1, 16},
	{OP_VERIFY16, -1, 16},
	{OP_SYNC_CACHE16, -1, 16},
	{OP_WRITE_SAME16, -1, 16},
	{OP_SERVICE_ACTION_IN16, SAI_READ_CAPACITY16, 16},
	{OP_SERVICE_ACTION_IN16, SAI_GET_LBA_STATUS, 16},
	{OP_REPORT_LUNS, -1, 12},
	{OP_MAINTENANCE_IN, MI_REPORT_OPCODES, 12},
	{OP_MAINTENANCE_IN, MI_REPORT_TMFS, 12},
	{OP_READ12, -1, 12},
	{OP_WRITE12, -1, 12},
	{OP_WRITE_VERIFY12, -1, 12},
	{OP_VERIFY12, -1, 12},
};
#define NSUPPORTED (sizeof(supported) / sizeof(supported[0]))

static size_t cdb_len_of(uint8_t op)
{
	switch (op >> 5) {
	case 0:
		return 6;
	case 1:
	case 2:
		return 10;
	case 4:
		return 16;
	case 5:
		return 12;
	default:
		return 0;
	}
}

/* Medium access: LBA range and transfer length against the geometry. */
static uint32_t check_range(const struct isc_geom *g, const struct isc_cdb *c, uint32_t max)
{
	if (c->lba > g->nblocks || c->nblocks > g->nblocks - c->lba)
		return ISC_SENSE_LBA_OUT_OF_RANGE;
	if (max && c->nblocks > max)
		return ISC_SENSE_INVALID_FIELD_CDB;
	return 0;
}

/* Decode LBA and length of READ/WRITE/VERIFY-shaped CDBs by size. */
static void decode_rw(const uint8_t *cdb, size_t len, struct isc_cdb *c)
{
	switch (len) {
	case 6:
		c->lba = isc_get24(cdb + 1) & 0x1fffff;
		c->nblocks = cdb[4] ? cdb[4] : 256;
		break;
	case 10:
		c->lba = isc_get32(cdb + 2);
		c->nblocks = isc_get16(cdb + 7);
		break;
	case 12:
		c->lba = isc_get32(cdb + 2);
		c->nblocks = isc_get32(cdb + 6);
		break;
	case 16:
		c->lba = isc_get64(cdb + 2);
		c->nblocks = isc_get32(cdb + 10);
		break;
	}
	if (len > 6) {
		c->fua = cdb[1] & 0x08;
		c->dpo = cdb[1] & 0x10;
	}
}

uint32_t isc_cdb_validate(const uint8_t *cdb, size_t cdb_len, const struct isc_geom *g,
			  struct isc_cdb *c)
{
	uint8_t op = cdb[0];
	size_t len = cdb_len_of(op);
	uint32_t bs = g->block_size, rc;

	memset(c, 0, sizeof(*c));
	c->opcode = op;
	c->dir = ISC_DIR_NONE;
	if (!len || len > cdb_len)
		return ISC_SENSE_INVALID_OPCODE;
	if (cdb[len - 1] & 0x04) /* NACA: we do not support ACA */
		return ISC_SENSE_INVALID_FIELD_CDB;

	switch (op) {
	case OP_TEST_UNIT_READY:
	case OP_START_STOP:
	case OP_PREVENT_ALLOW:
	case OP_RESERVE6:
	case OP_RELEASE6:
	case OP_RESERVE10:
	case OP_RELEASE10:
		return 0;
	case OP_REQUEST_SENSE:
		c->dir = ISC_DIR_IN;
		c->xfer_len = cdb[4];
		return 0;
	case OP_INQUIRY:
		c->dir = ISC_DIR_IN;
		c->xfer_len = isc_get16(cdb + 3);
		if (!(cdb[1] & 0x01) && cdb[2])
			return ISC_SENSE_INVALID_FIELD_CDB; /* page code without EVPD */
		if (cdb[1] & 0xfe)
			return ISC_SENSE_INVALID_FIELD_CDB; /* CMDDT and reserved bits */
		return 0;
	case OP_MODE_SENSE6:
		c->dir = ISC_DIR_IN;
		c->xfer_len = cdb[4];
		return 0;
	case OP_MODE_SENSE10:
		c->dir = ISC_DIR_IN;
		c->xfer_len = isc_get16(cdb + 7);
		return 0;
	case OP_MODE_SELECT6:
		c->dir = ISC_DIR_OUT;
		c->xfer_len = cdb[4];
		return 0;
	case OP_MODE_SELECT10:
		c->dir = ISC_DIR_OUT;
		c->xfer_len = isc_get16(cdb + 7);
		return 0;
	case OP_REPORT_LUNS:
		c->dir = ISC_DIR_IN;
		c->xfer_len = isc_get32(cdb + 6);
		if (c->xfer_len < 16)
			return ISC_SENSE_INVALID_FIELD_CDB;
		return 0;
	case OP_READ_CAPACITY10:
		c->dir = ISC_DIR_IN;
		c->xfer_len = 8;
		c->lba = isc_get32(cdb + 2);
		if (!(cdb[8] & 0x01) && c->lba)
			return ISC_SENSE_INVALID_FIELD_CDB;
		return 0;
	case OP_SERVICE_ACTION_IN16:
		c->sa = cdb[1] & 0x1f;
		c->dir = ISC_DIR_IN;
		c->xfer_len = isc_get32(cdb + 10);
		if (c->sa == SAI_READ_CAPACITY16)
			return 0;
		if (c->sa == SAI_GET_LBA_STATUS) {
			c->lba = isc_get64(cdb + 2);
			if (c->lba >= g->nblocks)
				return ISC_SENSE_LBA_OUT_OF_RANGE;
			return 0;
		}
		return ISC_SENSE_INVALID_FIELD_CDB;
	case OP_MAINTENANCE_IN:
		c->sa = cdb[1] & 0x1f;
		c->dir = ISC_DIR_IN;
		c->xfer_len = isc_get32(cdb + 6);
		if (c->sa == MI_REPORT_OPCODES || c->sa == MI_REPORT_TMFS)
			return 0;
		return ISC_SENSE_INVALID_FIELD_CDB;
	case OP_PR_IN:
		c->sa = cdb[1] & 0x1f;
		c->dir = ISC_DIR_IN;
		c->xfer_len = isc_get16(cdb + 7);
		if (c->sa > 3)
			return ISC_SENSE_INVALID_FIELD_CDB;
		return 0;
	case OP_PR_OUT:
		c->sa = cdb[1] & 0x1f;
		c->dir = ISC_DIR_OUT;
		c->xfer_len = isc_get32(cdb + 5);
		if (c->sa > 7)
			return ISC_SENSE_INVALID_FIELD_CDB;
		return 0;
	case OP_READ6:
	case OP_READ10:
	case OP_READ12:
	case OP_READ16:
		decode_rw(cdb, len, c);
		if (len > 6 && (cdb[1] & 0xe0))
			return ISC_SENSE_INVALID_FIELD_CDB; /* RDPROTECT: no protection info */
		c->dir = ISC_DIR_IN;
		c->is_rw = true;
		if ((rc = check_range(g, c, g->max_xfer_blocks)))
			return rc;
		c->xfer_len = c->nblocks * bs;
		return 0;
	case OP_WRITE6:
	case OP_WRITE10:
	case OP_WRITE12:
	case OP_WRITE16:
	case OP_WRITE_VERIFY10:
	case OP_WRITE_VERIFY12:
	case OP_WRITE_VERIFY16:
		decode_rw(cdb, len, c);
		if (len > 6 && (cdb[1] & 0xe0))
			return ISC_SENSE_INVALID_FIELD_CDB; /* WRPROTECT */
		c->dir = ISC_DIR_OUT;
		c->is_rw = true;
		c->writes = true;
		if (op == OP_WRITE_VERIFY10 || op == OP_WRITE_VERIFY12 || op == OP_WRITE_VERIFY16)
			c->bytchk = (cdb[1] >> 1) & 1;
		if ((rc = check_range(g, c, g->max_xfer_blocks)))
			return rc;
		if (g->read_only)
			return ISC_SENSE_WRITE_PROTECTED;
		c->xfer_len = c->nblocks * bs;
		return 0;
	case OP_VERIFY10:
	case OP_VERIFY12:
	case OP_VERIFY16:
		decode_rw(cdb, len, c);
		c->fua = false;
		if (cdb[1] & 0xe0)
			return ISC_SENSE_INVALID_FIELD_CDB; /* VRPROTECT */
		c->bytchk = (cdb[1] >> 1) & 3;
		c->is_rw = true;
		if (c->bytchk == 2)
			return ISC_SENSE_INVALID_FIELD_CDB;
		if ((rc = check_range(g, c, g->max_xfer_blocks)))
			return rc;
		if (c->bytchk) {
			c->dir = ISC_DIR_OUT;
			c->xfer_len = c->bytchk == 3 ? (c->nblocks ? bs : 0) : c->nblocks * bs;
		}
		return 0;
	case OP_SYNC_CACHE10:
	case OP_SYNC_CACHE16:
		decode_rw(cdb, len, c);
		return check_range(g, c, 0);
	case OP_WRITE_SAME10:
	case OP_WRITE_SAME16:
		decode_rw(cdb, len, c);
		c->fua = false;
		c->unmap = cdb[1] & 0x08;
		c->anchor = cdb[1] & 0x10;
		c->ndob = op == OP_WRITE_SAME16 && (cdb[1] & 0x01);
		c->is_rw = true;
		c->writes = true;
		if (cdb[1] & 0xe0)
			return ISC_SENSE_INVALID_FIELD_CDB; /* WRPROTECT */
		if (c->anchor || (c->ndob && !c->unmap))
			return ISC_SENSE_INVALID_FIELD_CDB;
		if (c->nblocks == 0)
			return ISC_SENSE_INVALID_FIELD_CDB; /* WSNZ=1 in VPD B0 */
		if ((rc = check_range(g, c, g->max_ws_blocks)))
			return rc;
		if (g->read_only)
			return ISC_SENSE_WRITE_PROTECTED;
		if (!c->ndob) {
			c->dir = ISC_DIR_OUT;
			c->xfer_len = bs;
		}
		return 0;
	case OP_UNMAP:
		c->dir = ISC_DIR_OUT;
		c->xfer_len = isc_get16(cdb + 7);
		c->anchor = cdb[1] & 0x01;
		c->is_rw = true;
		c->writes = true;
		if (c->anchor)
			return ISC_SENSE_INVALID_FIELD_CDB;
		if (g->read_only)
			return ISC_SENSE_WRITE_PROTECTED;
		return 0;
	case OP_COMPARE_AND_WRITE:
		c->lba = isc_get64(cdb + 2);
		c->nblocks = cdb[13];
		c->fua = cdb[1] & 0x08;
		c->is_rw = true;
		c->writes = true;
		if (cdb[1] & 0xe0)
			return ISC_SENSE_INVALID_FIELD_CDB;
		if ((rc = check_range(g, c, g->max_caw_blocks)))
			return rc;
		if (g->read_only)
			return ISC_SENSE_WRITE_PROTECTED;
		c->dir = ISC_DIR_OUT;
		c->xfer_len = 2 * c->nblocks * bs;
		return 0;
	default:
		return ISC_SENSE_INVALID_OPCODE;
	}
}

uint32_t isc_errno_to_sense(int err)
{
	switch (err) {
	case 0:
		return 0;
	case -EROFS:
		return ISC_SENSE_WRITE_PROTECTED;
	case -EINVAL:
	case -ERANGE:
		return ISC_SENSE_LBA_OUT_OF_RANGE;
	case -ENOSPC:
	case -EDQUOT:
		return ISC_SENSE_SPACE_EXHAUSTED;
	case -EIO:
	case -EILSEQ:
	case -EBADMSG:
		return ISC_SENSE_MEDIUM_ERROR;
	case -ENOENT:
		return ISC_SENSE(ISC_SK_NOT_READY, 0x3a, 0x00); /* medium not present */
	case -ENOMEM:
		return ISC_SENSE(ISC_SK_ABORTED_COMMAND, 0x55, 0x03);
	case -EAGAIN:
	case -ETIMEDOUT:
	case -ECONNREFUSED:
	case -ECONNRESET:
	case -ENOTCONN:
	case -EHOSTUNREACH:
	case -ESTALE:
	case -ECANCELED:
		/* Transient: ABORTED COMMAND makes initiators retry. */
		return ISC_SENSE(ISC_SK_ABORTED_COMMAND, 0x00, 0x00);
	default:
		return ISC_SENSE_INTERNAL_ERROR;
	}
}

size_t isc_sense_build(uint8_t *buf, uint32_t sense, bool info_valid, uint64_t info)
{
	memset(buf, 0, 18);
	buf[0] = 0x70 | (info_valid ? 0x80 : 0);
	buf[2] = ISC_SENSE_KEY(sense);
	if (info_valid)
		isc_put32(buf + 3, (uint32_t)info);
	buf[7] = 10;
	buf[12] = ISC_SENSE_ASC(sense);
	buf[13] = ISC_SENSE_ASCQ(sense);
	return 18;
}

/* ---- INQUIRY ---- */

static void copy_padded(uint8_t *dst, const char *src, size_t n)
{
	size_t l = strlen(src);
	memset(dst, ' ', n);
	memcpy(dst, src, l < n ? l : n);
}

static int inquiry_std(struct isc_task *t, uint8_t *d)
{
	struct isc_lu *lu = isc_task_lu(t);

	d[0] = t->lun == 0 && lu ? 0x00 : 0x7f; /* direct access block device, or no LU */
	d[2] = 0x06;                            /* SPC-4 */
	d[3] = 0x12;                            /* HISUP, response data format 2 */
	d[4] = 66 - 5;
	d[5] = 0x00;
	d[7] = 0x02; /* CMDQUE */
	copy_padded(d + 8, "STRATA", 8);
	copy_padded(d + 16, "strata-volume", 16);
	copy_padded(d + 32, "0001", 4);
	isc_put16(d + 58, 0x00a0); /* SAM-5 */
	isc_put16(d + 60, 0x0960); /* iSCSI */
	isc_put16(d + 62, 0x0460); /* SPC-4 */
	isc_put16(d + 64, 0x04c0); /* SBC-3 */
	return 66;
}

static int vpd_device_id(struct isc_lu *lu, uint8_t *d)
{
	uint8_t *p = d + 4;
	uint64_t id = lu->volume_id;
	size_t nl;

	/* NAA 3 (locally assigned), from the volume id: stable across gateways and restarts. */
	p[0] = 0x01; /* binary */
	p[1] = 0x03; /* LU, NAA */
	p[3] = 8;
	isc_put64(p + 4, (3ull << 60) | (id & 0x0fffffffffffffffull));
	p += 12;
	/* T10 vendor id: "STRATA  " + the volume id in hex */
	p[0] = 0x02; /* ASCII */
	p[1] = 0x01; /* LU, T10 vendor id */
	p[3] = 8 + 16;
	copy_padded(p + 4, "STRATA", 8);
	snprintf((char *)p + 12, 17, "%016llx", (unsigned long long)id);
	p += 4 + 8 + 16;
	/* Relative target port 1 */
	p[0] = 0x51; /* iSCSI, binary */
	p[1] = 0x94; /* PIV, target port, relative target port */
	p[3] = 4;
	isc_put16(p + 6, 1);
	p += 8;
	/* Target port group 1 */
	p[0] = 0x51;
	p[1] = 0x95;
	p[3] = 4;
	isc_put16(p + 6, 1);
	p += 8;
	/* SCSI name string of the target device */
	nl = strlen(lu->iqn) + 1;
	nl = (nl + 3) & ~(size_t)3;
	p[0] = 0x53; /* iSCSI, UTF-8 */
	p[1] = 0xa8; /* PIV, target device, SCSI name string */
	p[3] = (uint8_t)nl;
	memset(p + 4, 0, nl);
	memcpy(p + 4, lu->iqn, strlen(lu->iqn));
	p += 4 + nl;
	d[1] = 0x83;
	isc_put16(d + 2, (uint16_t)(p - d - 4));
	return (int)(p - d);
}

static int inquiry_vpd(struct isc_task *t, uint8_t page, uint8_t *d)
{
	struct isc_lu *lu = isc_task_lu(t);
	const struct isc_geom *g = &lu->geom;

	d[0] = 0x00;
	d[1] = page;
	switch (page) {
	case 0x00: {
		static const uint8_t pages[] = {0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2};
		memcpy(d + 4, pages, sizeof(pages));
		d[3] = sizeof(pages);
		return 4 + (int)sizeof(pages);
	}
	case 0x80:
		d[3] = 16;
		snprintf((char *)d + 4, 17, "%016llx", (unsigned long long)lu->volume_id);
		return 20;
	case 0x83:
		return vpd_device_id(lu, d);
	case 0xb0:
		d[3] = 0x3c;
		d[4] = 0x01; /* WSNZ: WRITE SAME needs a non-zero block count */
		d[5] = (uint8_t)g->max_caw_blocks;
		isc_put16(d + 6, (uint16_t)(4096 / g->block_size)); /* optimal granularity */
		isc_put32(d + 8, g->max_xfer_blocks);
		isc_put32(d + 12, (1u << 20) / g->block_size); /* optimal: 1 MiB */
		isc_put32(d + 20, g->max_unmap_blocks);
		isc_put32(d + 24, 256);
		isc_put32(d + 28, 4096 / g->block_size); /* unmap granularity */
		isc_put64(d + 36, g->max_ws_blocks);
		return 64;
	case 0xb1:
		d[3] = 0x3c;
		isc_put16(d + 4, 1); /* non-rotating medium */
		return 64;
	case 0xb2:
		d[3] = 4;
		/* LBPU, LBPWS, LBPWS10, LBPRZ: unmapped blocks read as zeros */
		d[5] = 0x80 | 0x40 | 0x20 | 0x04;
		d[6] = 0x02; /* thin provisioned */
		return 8;
	default:
		return -1;
	}
}

static void spc_inquiry(struct isc_task *t)
{
	uint8_t *d;
	int n;

	if (isc_task_buf(t, 512)) {
		isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
		return;
	}
	d = t->buf;
	if (t->cdb[1] & 0x01) {
		if (t->lun != 0 || !isc_task_lu(t)) {
			isc_task_fail(t, ISC_SENSE_LUN_NOT_SUPPORTED);
			return;
		}
		n = inquiry_vpd(t, t->cdb[2], d);
		if (n < 0) {
			isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
			return;
		}
	} else {
		n = inquiry_std(t, d);
	}
	t->in_len = (uint32_t)n < t->c.xfer_len ? (uint32_t)n : t->c.xfer_len;
	t->status = ISC_STATUS_GOOD;
	isc_task_complete(t);
}

/* ---- MODE SENSE / SELECT ---- */

static size_t mode_page(struct isc_lu *lu, uint8_t page, bool changeable, uint8_t *p)
{
	(void)lu;
	switch (page) {
	case 0x01: /* read-write error recovery */
		p[0] = 0x01;
		p[1] = 0x0a;
		return 12;
	case 0x08: /* caching: WCE, so initiators send SYNCHRONIZE CACHE for durability */
		p[0] = 0x08;
		p[1] = 0x12;
		if (!changeable)
			p[2] = 0x04; /* WCE */
		return 20;
	case 0x0a: /* control */
		p[0] = 0x0a;
		p[1] = 0x0a;
		if (!changeable) {
			p[3] = 0x10;              /* QERR 00, unrestricted reordering allowed */
			isc_put16(p + 8, 0xffff); /* busy timeout period: unlimited */
		}
		return 12;
	case 0x1c: /* informational exceptions control */
		p[0] = 0x1c;
		p[1] = 0x0a;
		return 12;
	default:
		return 0;
	}
}

static void spc_mode_sense(struct isc_task *t, bool ten)
{
	struct isc_lu *lu = isc_task_lu(t);
	const uint8_t *cdb = t->cdb;
	bool dbd = cdb[1] & 0x08;
	uint8_t pc = cdb[2] >> 6, page = cdb[2] & 0x3f, sub = cdb[3];
	size_t hdr = ten ? 8 : 4, off, bdl = dbd ? 0 : 8;
	uint8_t *d;

	if (pc == 3) {
		isc_task_fail(t, ISC_SENSE(ISC_SK_ILLEGAL_REQUEST, 0x39, 0x00));
		return;
	}
	if (sub && !(sub == 0xff && page == 0x3f)) {
		isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
		return;
	}
	if (ten && (cdb[1] & 0x10)) /* LLBAA: long descriptors */
		bdl = dbd ? 0 : 16;
	if (isc_task_buf(t, 1024)) {
		isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
		return;
	}
	d = t->buf;
	off = hdr;
	if (bdl == 8) {
		uint64_t nb = lu->geom.nblocks;
		isc_put32(d + off, nb > 0xffffffffull ? 0xffffffffu : (uint32_t)nb);
		isc_put24(d + off + 5, lu->geom.block_size);
	} else if (bdl == 16) {
		isc_put64(d + off, lu->geom.nblocks);
		isc_put32(d + off + 12, lu->geom.block_size);
	}
	off += bdl;
	if (page == 0x3f) {
		static const uint8_t all[] = {0x01, 0x08, 0x0a, 0x1c};
		for (size_t i = 0; i < sizeof(all); i++)
			off += mode_page(lu, all[i], pc == 1, d + off);
	} else {
		size_t n = mode_page(lu, page, pc == 1, d + off);
		if (!n) {
			isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
			return;
		}
		off += n;
	}
	if (ten) {
		isc_put16(d, (uint16_t)(off - 2));
		d[3] = (lu->geom.read_only ? 0x80 : 0) | 0x10; /* WP, DPOFUA */
		if (bdl == 16)
			d[4] = 0x01;
		isc_put16(d + 6, (uint16_t)bdl);
	} else {
		d[0] = (uint8_t)(off - 1);
		d[2] = (lu->geom.read_only ? 0x80 : 0) | 0x10;
		d[3] = (uint8_t)bdl;
	}
	t->in_len = (uint32_t)off < t->c.xfer_len ? (uint32_t)off : t->c.xfer_len;
	t->status = ISC_STATUS_GOOD;
	isc_task_complete(t);
}

static void spc_mode_select(struct isc_task *t, bool ten)
{
	const uint8_t *cdb = t->cdb;
	size_t hdr = ten ? 8 : 4;
	uint32_t len = t->c.xfer_len;

	if (len == 0) {
		isc_task_status(t, ISC_STATUS_GOOD);
		return;
	}
	if (!(cdb[1] & 0x10) || (cdb[1] & 0x01)) { /* PF required, SP not supported */
		isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
		return;
	}
	if (len < hdr) {
		isc_task_fail(t, ISC_SENSE_PARAM_LIST_LENGTH);
		return;
	}
	/* Every page we report has no changeable bits: accept only what is already set. */
	isc_task_status(t, ISC_STATUS_GOOD);
}

/* ---- other SPC commands ---- */

static void spc_report_luns(struct isc_task *t)
{
	uint8_t sel = t->cdb[2];

	if (sel != 0 && sel != 1 && sel != 2 && sel != 0x10 && sel != 0x11 && sel != 0x12) {
		isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
		return;
	}
	if (isc_task_buf(t, 16)) {
		isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
		return;
	}
	if (sel == 1 || sel == 0x11) { /* well-known LUs only: none */
		t->in_len = 8;
	} else {
		isc_put32(t->buf, 8); /* one LUN: 0 */
		t->in_len = 16;
	}
	if (t->in_len > t->c.xfer_len)
		t->in_len = t->c.xfer_len;
	t->status = ISC_STATUS_GOOD;
	isc_task_complete(t);
}

static void spc_request_sense(struct isc_task *t)
{
	struct isc_session *s = isc_task_session(t);
	bool desc = t->cdb[1] & 0x01;
	uint32_t sense = 0;
	size_t n;

	(void)s;
	if (isc_task_buf(t, 32)) {
		isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
		return;
	}
	if (desc) {
		t->buf[0] = 0x72;
		t->buf[1] = ISC_SENSE_KEY(sense);
		t->buf[2] = ISC_SENSE_ASC(sense);
		t->buf[3] = ISC_SENSE_ASCQ(sense);
		n = 8;
	} else {
		n = isc_sense_build(t->buf, sense, false, 0);
	}
	t->in_len = (uint32_t)n < t->c.xfer_len ? (uint32_t)n : t->c.xfer_len;
	t->status = ISC_STATUS_GOOD;
	isc_task_complete(t);
}

static void spc_report_opcodes(struct isc_task *t)
{
	uint8_t opts = t->cdb[2] & 0x07, op = t->cdb[3];
	bool rctd = t->cdb[2] & 0x80;
	uint16_t sa = isc_get16(t->cdb + 4);
	size_t off = 0, dlen = rctd ? 20 : 8;
	uint8_t *d;

	if (isc_task_buf(t, 4 + NSUPPORTED * 20 + 64)) {
		isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
		return;
	}
	d = t->buf;
	if (opts == 0) {
		off = 4;
		for (size_t i = 0; i < NSUPPORTED; i++) {
			uint8_t *p = d + off;
			p[0] = supported[i].op;
			if (supported[i].sa >= 0) {
				isc_put16(p + 2, (uint16_t)supported[i].sa);
				p[5] = 0x01; /* SERVACTV */
			}
			if (rctd) {
				p[5] |= 0x02; /* CTDP */
				isc_put16(p + 8, 0x0a);
			}
			isc_put16(p + 6, supported[i].len);
			off += dlen;
		}
		isc_put32(d, (uint32_t)(off - 4));
	} else if (opts == 1 || opts == 2) {
		int found = -1;
		bool has_sa = false;
		for (size_t i = 0; i < NSUPPORTED; i++) {
			if (supported[i].op != op)
				continue;
			has_sa = supported[i].sa >= 0;
			if (opts == 1 || supported[i].sa == (int)sa) {
				found = (int)i;
				break;
			}
		}
		if ((opts == 1 && has_sa) || (opts == 2 && found < 0 && has_sa) ||
		    (opts == 2 && found < 0 && !has_sa && 0)) {
			isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
			return;
		}
		if (opts == 2 && found < 0) {
			/* opcode without service actions asked with one */
			for (size_t i = 0; i < NSUPPORTED; i++)
				if (supported[i].op == op) {
					isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
					return;
				}
		}
		if (found < 0) {
			d[1] = 0x01; /* not supported */
			off = 4;
		} else {
			uint8_t len = supported[found].len;
			d[1] = 0x03 | (rctd ? 0x80 : 0);
			isc_put16(d + 2, len);
			d[4] = op;
			memset(d + 5, 0xff, len - 2u);
			if (supported[found].sa >= 0)
				d[5] = (uint8_t)(supported[found].sa & 0x1f) | (d[5] & 0xe0);
			d[4 + len - 1] = 0x07;
			off = 4u + len;
			if (rctd) {
				isc_put16(d + off, 0x0a);
				off += 12;
			}
		}
	} else {
		isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
		return;
	}
	t->in_len = (uint32_t)off < t->c.xfer_len ? (uint32_t)off : t->c.xfer_len;
	t->status = ISC_STATUS_GOOD;
	isc_task_complete(t);
}

static void spc_report_tmfs(struct isc_task *t)
{
	if (isc_task_buf(t, 16)) {
		isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
		return;
	}
	/* ATS (abort task), ATSS (abort task set), LURS (LU reset) */
	t->buf[0] = 0x80 | 0x40 | 0x08;
	t->in_len = 4 < t->c.xfer_len ? 4 : t->c.xfer_len;
	t->status = ISC_STATUS_GOOD;
	isc_task_complete(t);
}

static void sbc_read_capacity10(struct isc_task *t)
{
	struct isc_lu *lu = isc_task_lu(t);
	uint64_t last = lu->geom.nblocks ? lu->geom.nblocks - 1 : 0;

	if (isc_task_buf(t, 8)) {
		isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
		return;
	}
	isc_put32(t->buf, last > 0xffffffffull ? 0xffffffffu : (uint32_t)last);
	isc_put32(t->buf + 4, lu->geom.block_size);
	t->in_len = 8;
	t->status = ISC_STATUS_GOOD;
	isc_task_complete(t);
}

static void sbc_read_capacity16(struct isc_task *t)
{
	struct isc_lu *lu = isc_task_lu(t);

	if (isc_task_buf(t, 32)) {
		isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
		return;
	}
	isc_put64(t->buf, lu->geom.nblocks ? lu->geom.nblocks - 1 : 0);
	isc_put32(t->buf + 8, lu->geom.block_size);
	for (uint32_t b = lu->geom.block_size; b < 4096; b <<= 1)
		t->buf[13]++;     /* logical blocks per physical block exponent */
	t->buf[14] = 0x80 | 0x40; /* LBPME, LBPRZ */
	t->in_len = 32 < t->c.xfer_len ? 32 : t->c.xfer_len;
	t->status = ISC_STATUS_GOOD;
	isc_task_complete(t);
}

bool isc_spc_exec(struct isc_task *t)
{
	switch (t->c.opcode) {
	case OP_TEST_UNIT_READY:
	case OP_START_STOP:
	case OP_PREVENT_ALLOW:
		isc_task_status(t, ISC_STATUS_GOOD);
		return true;
	case OP_INQUIRY:
		spc_inquiry(t);
		return true;
	case OP_REQUEST_SENSE:
		spc_request_sense(t);
		return true;
	case OP_REPORT_LUNS:
		spc_report_luns(t);
		return true;
	case OP_MODE_SENSE6:
	case OP_MODE_SENSE10:
		spc_mode_sense(t, t->c.opcode == OP_MODE_SENSE10);
		return true;
	case OP_MODE_SELECT6:
	case OP_MODE_SELECT10:
		spc_mode_select(t, t->c.opcode == OP_MODE_SELECT10);
		return true;
	case OP_MAINTENANCE_IN:
		if (t->c.sa == MI_REPORT_OPCODES)
			spc_report_opcodes(t);
		else
			spc_report_tmfs(t);
		return true;
	case OP_READ_CAPACITY10:
		sbc_read_capacity10(t);
		return true;
	case OP_SERVICE_ACTION_IN16:
		if (t->c.sa == SAI_READ_CAPACITY16) {
			sbc_read_capacity16(t);
			return true;
		}
		return false;
	case OP_RESERVE6:
	case OP_RESERVE10:
		isc_reserve(t, true);
		return true;
	case OP_RELEASE6:
	case OP_RELEASE10:
		isc_reserve(t, false);
		return true;
	case OP_PR_IN:
		isc_pr_in(t);
		return true;
	case OP_PR_OUT:
		isc_pr_out(t);
		return true;
	default:
		return false;
	}
}

void isc_scsi_exec(struct isc_task *t)
{
	struct isc_lu *lu = isc_task_lu(t);

	if (!lu) {
		isc_task_fail(t, ISC_SENSE_LUN_NOT_SUPPORTED);
		return;
	}
	if (isc_pr_check(lu->pr, isc_session_port(isc_task_session(t)), &t->c)) {
		isc_task_status(t, ISC_STATUS_RESERVATION_CONFLICT);
		return;
	}
	if (isc_spc_exec(t))
		return;
	isc_sbc_exec(t);
}
