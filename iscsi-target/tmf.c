/*
 * Task management functions (RFC 7143 11.5, SAM-5 7). At ERL 0 with one connection per
 * session the task set of an I_T nexus is the connection's task list.
 *
 * Aborting a task that is on the backend cannot recall the libstrata request: the task is
 * marked aborted and unlinked, its response is suppressed, and its memory is released when
 * the backend completes. The TMF response goes out at once; since we never send a response
 * for an aborted task, the initiator can reuse its ITT safely.
 */
#include "internal.h"

enum {
	TMF_ABORT_TASK = 1,
	TMF_ABORT_TASK_SET = 2,
	TMF_CLEAR_ACA = 3,
	TMF_CLEAR_TASK_SET = 4,
	TMF_LUN_RESET = 5,
	TMF_TARGET_WARM_RESET = 6,
	TMF_TARGET_COLD_RESET = 7,
	TMF_TASK_REASSIGN = 8,
};

enum {
	TMF_RSP_COMPLETE = 0,
	TMF_RSP_NO_TASK = 1,
	TMF_RSP_NO_LUN = 2,
	TMF_RSP_REASSIGN_UNSUPPORTED = 4,
	TMF_RSP_UNSUPPORTED = 5,
	TMF_RSP_REJECTED = 255,
};

static void lu_reset(struct isc_session *s, struct isc_lu *lu)
{
	isc_abort_tasks(s, lu, true, false, 0);
	isc_pr_lun_reset(lu->pr);
	isc_lu_unit_attention(lu, s, ISC_SENSE_BDR_OCCURRED);
}

void isc_tmf_request(struct isc_conn *c, const struct isc_pdu *pdu)
{
	const uint8_t *h = pdu->bhs;
	uint8_t fn = h[1] & 0x7f;
	uint64_t lun = isc_get64(h + 8);
	uint32_t ref_itt = isc_get32(h + 20);
	uint32_t cmd_sn = isc_get32(h + 24), ref_cmd_sn = isc_get32(h + 32);
	struct isc_session *s = isc_conn_session(c);
	struct isc_lu *lu = isc_session_lu(s);
	uint8_t rsp = TMF_RSP_COMPLETE;

	switch (fn) {
	case TMF_ABORT_TASK:
		if (lun != 0 || !lu) {
			rsp = TMF_RSP_NO_LUN;
			break;
		}
		if (isc_abort_tasks(s, lu, false, true, ref_itt) == 0 &&
		    !isc_sn_lt(ref_cmd_sn, cmd_sn))
			rsp = TMF_RSP_NO_TASK;
		break;
	case TMF_ABORT_TASK_SET:
		if (lun != 0 || !lu) {
			rsp = TMF_RSP_NO_LUN;
			break;
		}
		isc_abort_tasks(s, lu, false, false, 0);
		break;
	case TMF_CLEAR_TASK_SET:
		if (lun != 0 || !lu) {
			rsp = TMF_RSP_NO_LUN;
			break;
		}
		isc_abort_tasks(s, lu, true, false, 0);
		isc_lu_unit_attention(lu, s, ISC_SENSE(ISC_SK_UNIT_ATTENTION, 0x2f, 0x00));
		break;
	case TMF_LUN_RESET:
		if (lun != 0 || !lu) {
			rsp = TMF_RSP_NO_LUN;
			break;
		}
		lu_reset(s, lu);
		break;
	case TMF_TARGET_WARM_RESET:
		/* Every LU this process serves to this session's target: ours. */
		if (lu)
			lu_reset(s, lu);
		break;
	case TMF_TASK_REASSIGN:
		rsp = TMF_RSP_REASSIGN_UNSUPPORTED;
		break;
	case TMF_CLEAR_ACA:
	case TMF_TARGET_COLD_RESET:
	default:
		rsp = TMF_RSP_UNSUPPORTED;
		break;
	}
	isc_tmf_response(c, pdu->itt, rsp);
}
