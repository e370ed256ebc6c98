/*
 * iscsi_pr: drive SCSI persistent reservations through libiscsi, for integration tests.
 *
 *   iscsi_pr URL INITIATOR ISID_QUALIFIER CMD [ARGS] [CMD [ARGS]]...
 *
 * One session per run. The ISID is fixed (OUI format, the given qualifier), so two runs with
 * the same initiator name and qualifier are the same I_T nexus, whichever gateway they use.
 * Commands, run in order; each prints one line:
 *   register KEY             REGISTER AND IGNORE EXISTING KEY -> "GOOD"
 *   reserve KEY TYPE         RESERVE (TYPE 1..8)
 *   release KEY TYPE         RELEASE
 *   preempt KEY SAKEY TYPE   PREEMPT
 *   clear KEY                CLEAR
 *   keys                     READ KEYS -> "generation G keys K1 K2 ..."
 *   resv                     READ RESERVATION -> "key K type T" or "none"
 *   write LBA                WRITE(10) of one block of 0x5a -> "GOOD"
 *   read LBA                 READ(10) of one block -> "GOOD"
 *   signal FILE              create FILE (prints nothing): a sync point for a test script
 *   waitfor FILE             wait up to 30 s for FILE to exist (prints nothing, or "ERROR
 *                            timeout"); with signal, lets one session stay logged in while
 *                            another tool acts through another gateway
 * A command that ends with RESERVATION CONFLICT prints "RESERVATION_CONFLICT"; any other
 * failure prints "ERROR ..." and the tool exits 1 after the remaining commands.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

static int g_failed;

/* Print the outcome of task. Returns true when it is GOOD. */
static int outcome(struct iscsi_context *iscsi, struct scsi_task *task)
{
	if (task == NULL) {
		printf("ERROR %s\n", iscsi_get_error(iscsi));
		g_failed = 1;
		return 0;
	}
	if (task->status == SCSI_STATUS_GOOD) {
		return 1;
	}
	if (task->status == SCSI_STATUS_RESERVATION_CONFLICT) {
		printf("RESERVATION_CONFLICT\n");
	} else {
		printf("ERROR status 0x%02x sense %s\n", task->status, iscsi_get_error(iscsi));
		g_failed = 1;
	}
	return 0;
}

static uint64_t num(const char *s)
{
	return strtoull(s, NULL, 0);
}

static int pr_out(struct iscsi_context *iscsi, int lun, int sa, int type, uint64_t key,
		  uint64_t sakey)
{
	struct scsi_persistent_reserve_out_basic b = {0};
	struct scsi_task *task;

	b.reservation_key = key;
	b.service_action_reservation_key = sakey;
	task = iscsi_persistent_reserve_out_sync(iscsi, lun, sa, 0, type, &b);
	if (outcome(iscsi, task)) {
		printf("GOOD\n");
	}
	if (task) {
		scsi_free_scsi_task(task);
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct iscsi_context *iscsi;
	struct iscsi_url *url;
	unsigned char block[512];
	int i, lun;

	if (argc < 5) {
		fprintf(stderr, "usage: iscsi_pr URL INITIATOR ISID_QUALIFIER CMD [ARGS]...\n");
		return 2;
	}
	iscsi = iscsi_create_context(argv[2]);
	if (iscsi == NULL) {
		fprintf(stderr, "iscsi_pr: no context\n");
		return 1;
	}
	url = iscsi_parse_full_url(iscsi, argv[1]);
	if (url == NULL) {
		fprintf(stderr, "iscsi_pr: bad URL %s: %s\n", argv[1], iscsi_get_error(iscsi));
		return 1;
	}
	iscsi_set_isid_oui(iscsi, 0x5a5a5a, (uint32_t)num(argv[3]));
	iscsi_set_targetname(iscsi, url->target);
	iscsi_set_session_type(iscsi, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(iscsi, ISCSI_HEADER_DIGEST_NONE);
	lun = url->lun;
	if (iscsi_full_connect_sync(iscsi, url->portal, lun) != 0) {
		fprintf(stderr, "iscsi_pr: login to %s: %s\n", argv[1], iscsi_get_error(iscsi));
		return 1;
	}
	memset(block, 0x5a, sizeof(block));
	for (i = 4; i < argc; i++) {
		const char *c = argv[i];
		int left = argc - i - 1;
		struct scsi_task *task;

		if (!strcmp(c, "register") && left >= 1) {
			pr_out(iscsi, lun, SCSI_PERSISTENT_RESERVE_REGISTER_AND_IGNORE_EXISTING_KEY,
			       0, 0, num(argv[i + 1]));
			i += 1;
		} else if (!strcmp(c, "reserve") && left >= 2) {
			pr_out(iscsi, lun, SCSI_PERSISTENT_RESERVE_RESERVE, (int)num(argv[i + 2]),
			       num(argv[i + 1]), 0);
			i += 2;
		} else if (!strcmp(c, "release") && left >= 2) {
			pr_out(iscsi, lun, SCSI_PERSISTENT_RESERVE_RELEASE, (int)num(argv[i + 2]),
			       num(argv[i + 1]), 0);
			i += 2;
		} else if (!strcmp(c, "preempt") && left >= 3) {
			pr_out(iscsi, lun, SCSI_PERSISTENT_RESERVE_PREEMPT, (int)num(argv[i + 3]),
			       num(argv[i + 1]), num(argv[i + 2]));
			i += 3;
		} else if (!strcmp(c, "clear") && left >= 1) {
			pr_out(iscsi, lun, SCSI_PERSISTENT_RESERVE_CLEAR, 0, num(argv[i + 1]), 0);
			i += 1;
		} else if (!strcmp(c, "keys")) {
			task = iscsi_persistent_reserve_in_sync(
				iscsi, lun, SCSI_PERSISTENT_RESERVE_READ_KEYS, 16384);
			if (outcome(iscsi, task)) {
				struct scsi_persistent_reserve_in_read_keys *rk =
					scsi_datain_unmarshall(task);
				if (rk == NULL) {
					printf("ERROR unmarshall\n");
					g_failed = 1;
				} else {
					printf("generation %u keys", rk->prgeneration);
					for (int k = 0; k < rk->num_keys; k++) {
						printf(" 0x%" PRIx64, rk->keys[k]);
					}
					printf("\n");
				}
			}
			if (task) {
				scsi_free_scsi_task(task);
			}
		} else if (!strcmp(c, "resv")) {
			task = iscsi_persistent_reserve_in_sync(
				iscsi, lun, SCSI_PERSISTENT_RESERVE_READ_RESERVATION, 16384);
			if (outcome(iscsi, task)) {
				struct scsi_persistent_reserve_in_read_reservation *rr =
					scsi_datain_unmarshall(task);
				if (rr == NULL) {
					printf("ERROR unmarshall\n");
					g_failed = 1;
				} else if (!rr->reserved) {
					printf("none\n");
				} else {
					printf("key 0x%" PRIx64 " type %u\n", rr->reservation_key,
					       rr->pr_type);
				}
			}
			if (task) {
				scsi_free_scsi_task(task);
			}
		} else if (!strcmp(c, "write") && left >= 1) {
			task = iscsi_write10_sync(iscsi, lun, (uint32_t)num(argv[i + 1]), block,
						  sizeof(block), 512, 0, 0, 0, 0, 0);
			if (outcome(iscsi, task)) {
				printf("GOOD\n");
			}
			if (task) {
				scsi_free_scsi_task(task);
			}
			i += 1;
		} else if (!strcmp(c, "read") && left >= 1) {
			task = iscsi_read10_sync(iscsi, lun, (uint32_t)num(argv[i + 1]), 512, 512,
						 0, 0, 0, 0, 0);
			if (outcome(iscsi, task)) {
				printf("GOOD\n");
			}
			if (task) {
				scsi_free_scsi_task(task);
			}
			i += 1;
		} else if (!strcmp(c, "signal") && left >= 1) {
			FILE *f = fopen(argv[i + 1], "w");
			if (f == NULL) {
				printf("ERROR cannot create %s\n", argv[i + 1]);
				g_failed = 1;
			} else {
				fclose(f);
			}
			i += 1;
		} else if (!strcmp(c, "waitfor") && left >= 1) {
			int ms = 0;
			while (access(argv[i + 1], F_OK) != 0 && ms < 30000) {
				usleep(10000);
				ms += 10;
			}
			if (ms >= 30000) {
				printf("ERROR timeout waiting for %s\n", argv[i + 1]);
				g_failed = 1;
			}
			i += 1;
		} else {
			fprintf(stderr, "iscsi_pr: bad command '%s'\n", c);
			g_failed = 1;
			break;
		}
		fflush(stdout);
	}
	iscsi_logout_sync(iscsi);
	iscsi_destroy_url(url);
	iscsi_destroy_context(iscsi);
	return g_failed;
}
