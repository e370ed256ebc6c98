/*
 * Reservations: SPC-2 RESERVE/RELEASE and SPC-4 PERSISTENT RESERVE IN/OUT.
 *
 * State is per volume: registrations (I_T nexus -> key), the persistent reservation (holder,
 * type) and the SPC-2 reservation. Every PR OUT is load -> decide -> commit against a
 * struct pr_store, so the state can live elsewhere:
 *
 *   isc_pr (per open volume) --load/commit--> pr_store --> in-process memory (today)
 *                                                      \-> strata-meta (not done yet)
 *
 * LIMITATION: only the in-process store exists. Two strata-iscsi processes serving one
 * volume do NOT see each other's registrations or reservations yet; the design brief puts
 * this state in strata-meta, which is future work (docs/ARCHITECTURE.md ## strata-iscsi).
 *
 * An I_T nexus is named by its initiator port "iqn...,i,0x<ISID>"; there is one target port
 * (portal group 1), so ALL_TG_PT changes nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define PR_MAX_REGS 64

enum pr_type {
	PR_NONE = 0,
	PR_WE = 1,
	PR_EA = 3,
	PR_WE_RO = 5,
	PR_EA_RO = 6,
	PR_WE_AR = 7,
	PR_EA_AR = 8,
};

struct pr_reg {
	char port[ISC_NAME_MAX + 32];
	uint64_t key;
};

struct pr_state {
	uint32_t generation;
	struct pr_reg regs[PR_MAX_REGS];
	unsigned nregs;
	int holder;   /* index into regs, -1 for none; all-registrants types use -2 */
	uint8_t type; /* enum pr_type when a reservation exists */
	char spc2[ISC_NAME_MAX + 32]; /* SPC-2 RESERVE holder, "" for none */
};

/* Where the state lives. load() fills st with the newest state, commit() stores it. */
struct pr_store {
	int (*load)(struct isc_pr *pr, struct pr_state *st);
	int (*commit)(struct isc_pr *pr, const struct pr_state *st);
};

struct isc_pr {
	uint64_t volume_id;
	const struct pr_store *store;
	struct pr_state mem; /* the in-process store's copy */
};

static int mem_load(struct isc_pr *pr, struct pr_state *st)
{
	*st = pr->mem;
	return 0;
}

static int mem_commit(struct isc_pr *pr, const struct pr_state *st)
{
	pr->mem = *st;
	return 0;
}

static const struct pr_store mem_store = {mem_load, mem_commit};

struct isc_pr *isc_pr_create(uint64_t volume_id)
{
	struct isc_pr *pr = calloc(1, sizeof(*pr));

	if (!pr)
		return NULL;
	pr->volume_id = volume_id;
	pr->store = &mem_store;
	pr->mem.holder = -1;
	return pr;
}

void isc_pr_destroy(struct isc_pr *pr)
{
	free(pr);
}

static int reg_find(const struct pr_state *st, const char *port)
{
	for (unsigned i = 0; i < st->nregs; i++)
		if (!strcmp(st->regs[i].port, port))
			return (int)i;
	return -1;
}

static bool all_registrants(uint8_t type)
{
	return type == PR_WE_AR || type == PR_EA_AR;
}

static bool is_holder(const struct pr_state *st, int reg)
{
	if (st->holder == -1 || reg < 0)
		return false;
	return all_registrants(st->type) || st->holder == reg;
}

static void reg_remove(struct pr_state *st, int i)
{
	if (st->holder == i) {
		st->holder = -1;
		st->type = PR_NONE;
	} else if (st->holder > i) {
		st->holder--;
	}
	st->regs[i] = st->regs[st->nregs - 1];
	if (st->holder == (int)st->nregs - 1)
		st->holder = i;
	st->nregs--;
	if (st->nregs == 0 && st->holder == -2) {
		st->holder = -1;
		st->type = PR_NONE;
	}
}

/* Commands allowed whatever the reservation (SPC-4 table 69, the common subset). */
static bool pr_exempt(uint8_t op)
{
	switch (op) {
	case 0x12: /* INQUIRY */
	case 0xa0: /* REPORT LUNS */
	case 0x03: /* REQUEST SENSE */
	case 0x5e: /* PR IN */
	case 0x5f: /* PR OUT: its service actions decide */
	case 0xa3: /* REPORT SUPPORTED OPCODES */
	case 0x00: /* TEST UNIT READY */
	case 0x25: /* READ CAPACITY */
	case 0x9e: /* READ CAPACITY 16, GET LBA STATUS */
	case 0x1a: /* MODE SENSE */
	case 0x5a:
		return true;
	default:
		return false;
	}
}

int isc_pr_check(struct isc_pr *pr, const char *port, const struct isc_cdb *c)
{
	struct pr_state st;
	bool reserve_cmd =
		c->opcode == 0x16 || c->opcode == 0x17 || c->opcode == 0x56 || c->opcode == 0x57;
	bool writes = c->writes || c->opcode == 0x35 || c->opcode == 0x91 || c->opcode == 0x15 ||
		      c->opcode == 0x55;
	int me;

	if (pr->store->load(pr, &st))
		return ISC_STATUS_BUSY;
	if (reserve_cmd)
		return 0; /* isc_reserve decides */
	if (st.spc2[0] && strcmp(st.spc2, port)) {
		if (c->opcode == 0x12 || c->opcode == 0xa0 || c->opcode == 0x03 ||
		    c->opcode == 0x5e || c->opcode == 0x5f)
			return 0;
		return ISC_STATUS_RESERVATION_CONFLICT;
	}
	if (st.holder == -1 || pr_exempt(c->opcode))
		return 0;
	me = reg_find(&st, port);
	if (is_holder(&st, me))
		return 0;
	switch (st.type) {
	case PR_WE:
		return writes ? ISC_STATUS_RESERVATION_CONFLICT : 0;
	case PR_EA:
		return ISC_STATUS_RESERVATION_CONFLICT;
	case PR_WE_RO:
	case PR_WE_AR:
		return (me < 0 && writes) ? ISC_STATUS_RESERVATION_CONFLICT : 0;
	case PR_EA_RO:
	case PR_EA_AR:
		return me < 0 ? ISC_STATUS_RESERVATION_CONFLICT : 0;
	default:
		return 0;
	}
}

void isc_reserve(struct isc_task *t, bool reserve)
{
	struct isc_pr *pr = isc_task_lu(t)->pr;
	const char *port = isc_session_port(isc_task_session(t));
	struct pr_state st;

	if (pr->store->load(pr, &st)) {
		isc_task_status(t, ISC_STATUS_BUSY);
		return;
	}
	if (st.holder != -1 || st.nregs) {
		/* SPC-4 5.13.2: RESERVE/RELEASE conflict with persistent reservations. */
		if (st.holder != -1) {
			isc_task_status(t, ISC_STATUS_RESERVATION_CONFLICT);
			return;
		}
	}
	if (reserve) {
		if (st.spc2[0] && strcmp(st.spc2, port)) {
			isc_task_status(t, ISC_STATUS_RESERVATION_CONFLICT);
			return;
		}
		snprintf(st.spc2, sizeof(st.spc2), "%s", port);
	} else if (!strcmp(st.spc2, port)) {
		st.spc2[0] = '\0';
	}
	if (pr->store->commit(pr, &st)) {
		isc_task_status(t, ISC_STATUS_BUSY);
		return;
	}
	isc_task_status(t, ISC_STATUS_GOOD);
}

void isc_pr_lun_reset(struct isc_pr *pr)
{
	struct pr_state st;

	if (!pr->store->load(pr, &st) && st.spc2[0]) {
		st.spc2[0] = '\0';
		pr->store->commit(pr, &st);
	}
}

void isc_pr_nexus_gone(struct isc_pr *pr, const char *port)
{
	struct pr_state st;

	if (!pr->store->load(pr, &st) && !strcmp(st.spc2, port)) {
		st.spc2[0] = '\0';
		pr->store->commit(pr, &st);
	}
}

/* ---- PERSISTENT RESERVE IN ---- */

static void pr_done(struct isc_task *t, size_t n)
{
	t->in_len = (uint32_t)n < t->c.xfer_len ? (uint32_t)n : t->c.xfer_len;
	t->status = ISC_STATUS_GOOD;
	isc_task_complete(t);
}

void isc_pr_in(struct isc_task *t)
{
	struct isc_pr *pr = isc_task_lu(t)->pr;
	struct pr_state st;
	uint8_t *d;
	size_t off = 8;

	if (pr->store->load(pr, &st)) {
		isc_task_status(t, ISC_STATUS_BUSY);
		return;
	}
	if (isc_task_buf(t, 8 + PR_MAX_REGS * (24 + ISC_NAME_MAX + 48))) {
		isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
		return;
	}
	d = t->buf;
	isc_put32(d, st.generation);
	switch (t->c.sa) {
	case 0x00: /* READ KEYS */
		for (unsigned i = 0; i < st.nregs; i++, off += 8)
			isc_put64(d + off, st.regs[i].key);
		isc_put32(d + 4, (uint32_t)(off - 8));
		pr_done(t, off);
		return;
	case 0x01: /* READ RESERVATION */
		if (st.holder != -1) {
			uint64_t key = st.holder >= 0 ? st.regs[st.holder].key : 0;
			isc_put64(d + 8, key);
			d[8 + 13] = st.type; /* scope 0: LU */
			off += 16;
		}
		isc_put32(d + 4, (uint32_t)(off - 8));
		pr_done(t, off);
		return;
	case 0x02: /* REPORT CAPABILITIES */
		memset(d, 0, 8);
		isc_put16(d, 8);
		d[2] = 0x10; /* CRH: RESERVE/RELEASE compatible reservation handling */
		d[3] = 0x80; /* TMV: the type mask is valid */
		d[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02;
		d[5] = 0x01;
		pr_done(t, 8);
		return;
	case 0x03: /* READ FULL STATUS */
		for (unsigned i = 0; i < st.nregs; i++) {
			uint8_t *p = d + off;
			size_t tl = strlen(st.regs[i].port) + 1;
			tl = (tl + 3) & ~(size_t)3;
			if (tl < 20)
				tl = 20;
			memset(p, 0, 24 + 4 + tl);
			isc_put64(p, st.regs[i].key);
			p[12] = 0x02 | (is_holder(&st, (int)i) ? 0x01 : 0);
			if (is_holder(&st, (int)i))
				p[13] = st.type;
			isc_put16(p + 18, 1); /* relative target port */
			isc_put32(p + 20, (uint32_t)(4 + tl));
			p[24] = 0x45; /* iSCSI, format 01: name with ISID */
			isc_put16(p + 26, (uint16_t)tl);
			memcpy(p + 28, st.regs[i].port, strlen(st.regs[i].port));
			off += 24 + 4 + tl;
		}
		isc_put32(d + 4, (uint32_t)(off - 8));
		pr_done(t, off);
		return;
	default:
		isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
		return;
	}
}

/* ---- PERSISTENT RESERVE OUT ---- */

static bool valid_type(uint8_t type)
{
	return type == PR_WE || type == PR_EA || type == PR_WE_RO || type == PR_EA_RO ||
	       type == PR_WE_AR || type == PR_EA_AR;
}

/* Unit attention to the sessions of every port registered in st except me. */
static void ua_registrants(struct isc_task *t, const struct pr_state *st, int me, uint32_t sense)
{
	(void)st;
	(void)me;
	isc_lu_unit_attention(isc_task_lu(t), isc_task_session(t), sense);
}

void isc_pr_out(struct isc_task *t)
{
	struct isc_pr *pr = isc_task_lu(t)->pr;
	const char *port = isc_session_port(isc_task_session(t));
	uint8_t sa = t->c.sa, scope = t->cdb[2] >> 4, type = t->cdb[2] & 0x0f;
	const uint8_t *p = t->buf;
	uint64_t key, sakey;
	uint8_t flags;
	struct pr_state st;
	int me;

	if (t->c.xfer_len != 24) {
		isc_task_fail(t, ISC_SENSE_PARAM_LIST_LENGTH);
		return;
	}
	key = isc_get64(p);
	sakey = isc_get64(p + 8);
	flags = p[20];
	if (flags & 0x08) { /* SPEC_I_PT: not supported */
		isc_task_fail(t, ISC_SENSE_INVALID_FIELD_PARAM);
		return;
	}
	if (sa == 7) { /* REGISTER AND MOVE */
		isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
		return;
	}
	if (pr->store->load(pr, &st)) {
		isc_task_status(t, ISC_STATUS_BUSY);
		return;
	}
	me = reg_find(&st, port);

	switch (sa) {
	case 0x00: /* REGISTER */
	case 0x06: /* REGISTER AND IGNORE EXISTING KEY */
		if (me < 0) {
			if (sa == 0 && key != 0)
				goto conflict;
			if (sakey == 0)
				goto good; /* nothing to register */
			if (st.nregs == PR_MAX_REGS) {
				isc_task_fail(t, ISC_SENSE_INSUFFICIENT_RES);
				return;
			}
			snprintf(st.regs[st.nregs].port, sizeof(st.regs[0].port), "%s", port);
			st.regs[st.nregs].key = sakey;
			st.nregs++;
		} else {
			if (sa == 0 && key != st.regs[me].key)
				goto conflict;
			if (sakey == 0) {
				bool released = st.holder == me && !all_registrants(st.type) &&
						(st.type == PR_WE_RO || st.type == PR_EA_RO);
				reg_remove(&st, me);
				if (released)
					ua_registrants(t, &st, -1, ISC_SENSE_RESERVATIONS_RELEASED);
			} else {
				st.regs[me].key = sakey;
			}
		}
		st.generation++;
		break;
	case 0x01: /* RESERVE */
		if (me < 0 || key != st.regs[me].key)
			goto conflict;
		if (scope != 0 || !valid_type(type)) {
			isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
			return;
		}
		if (st.holder != -1) {
			if (is_holder(&st, me) && st.type == type)
				goto good;
			goto conflict;
		}
		st.type = type;
		st.holder = all_registrants(type) ? -2 : me;
		break;
	case 0x02: /* RELEASE */
		if (me < 0 || key != st.regs[me].key)
			goto conflict;
		if (st.holder == -1 || !is_holder(&st, me))
			goto good;
		if (scope != 0 || type != st.type) {
			isc_task_fail(t, ISC_SENSE(ISC_SK_ILLEGAL_REQUEST, 0x26, 0x04));
			return;
		}
		if (st.type != PR_WE && st.type != PR_EA)
			ua_registrants(t, &st, me, ISC_SENSE_RESERVATIONS_RELEASED);
		st.holder = -1;
		st.type = PR_NONE;
		break;
	case 0x03: /* CLEAR */
		if (me < 0 || key != st.regs[me].key)
			goto conflict;
		ua_registrants(t, &st, me, ISC_SENSE_RESERVATIONS_PREEMPTED);
		st.nregs = 0;
		st.holder = -1;
		st.type = PR_NONE;
		st.generation++;
		break;
	case 0x04: /* PREEMPT */
	case 0x05: /* PREEMPT AND ABORT */
		if (me < 0 || key != st.regs[me].key)
			goto conflict;
		if (sakey == 0 && !(st.holder == -2)) {
			isc_task_fail(t, ISC_SENSE_INVALID_FIELD_PARAM);
			return;
		}
		if (st.holder != -1 && (scope != 0 || !valid_type(type))) {
			isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
			return;
		}
		{
			bool take = st.holder == -2 ||
				    (st.holder >= 0 && st.regs[st.holder].key == sakey);
			bool removed = false;
			char mine[sizeof(st.regs[0].port)];
			snprintf(mine, sizeof(mine), "%s", port);
			for (int i = (int)st.nregs - 1; i >= 0; i--) {
				if (!strcmp(st.regs[i].port, mine))
					continue;
				if (st.holder == -2 && sakey == 0) {
					reg_remove(&st, i);
					removed = true;
				} else if (st.regs[i].key == sakey) {
					reg_remove(&st, i);
					removed = true;
				}
			}
			if (!removed && !take && st.holder == -1 && sakey != 0) {
				/* no registrant with that key: conflict per SPC-4 5.13.11.2.4 */
				goto conflict;
			}
			me = reg_find(&st, mine);
			if (take) {
				st.type = type;
				st.holder = all_registrants(type) ? -2 : me;
			}
			if (removed)
				ua_registrants(t, &st, me, ISC_SENSE_REGISTRATIONS_PREEMPTED);
		}
		st.generation++;
		break;
	default:
		isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
		return;
	}
	if (pr->store->commit(pr, &st)) {
		isc_task_status(t, ISC_STATUS_BUSY);
		return;
	}
good:
	isc_task_status(t, ISC_STATUS_GOOD);
	return;
conflict:
	isc_task_status(t, ISC_STATUS_RESERVATION_CONFLICT);
}
