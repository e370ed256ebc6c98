/* The strata admin CLI: argument handling, a small JSON emitter, and the commands. */
#ifndef STRATA_CLI_INTERNAL_H
#define STRATA_CLI_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CLI_NAME_MAX 128

/* json.c: a streaming emitter that handles commas and string escaping. */
struct cli_json {
	FILE *f;
	int depth;
	bool need_comma[64];
};
void cli_json_init(struct cli_json *j, FILE *f) __attribute__((nonnull));
void cli_json_obj_begin(struct cli_json *j, const char *key) __attribute__((nonnull(1)));
void cli_json_obj_end(struct cli_json *j) __attribute__((nonnull));
void cli_json_arr_begin(struct cli_json *j, const char *key) __attribute__((nonnull(1)));
void cli_json_arr_end(struct cli_json *j) __attribute__((nonnull));
void cli_json_str(struct cli_json *j, const char *key, const char *v) __attribute__((nonnull(1)));
void cli_json_u64(struct cli_json *j, const char *key, uint64_t v) __attribute__((nonnull(1)));
void cli_json_bool(struct cli_json *j, const char *key, bool v) __attribute__((nonnull(1)));
/* Write s as a JSON string literal (with quotes) to f. */
void cli_json_escape(FILE *f, const char *s) __attribute__((nonnull));

/* spec.c */
struct cli_spec {
	char pool[CLI_NAME_MAX + 1];
	char vol[CLI_NAME_MAX + 1];
	char snap[CLI_NAME_MAX + 1];
};
enum cli_snap_rule { CLI_SNAP_NONE, CLI_SNAP_REQUIRED, CLI_SNAP_OPTIONAL };
/* Parse "POOL/VOL" or "POOL/VOL@SNAP". Returns 0 or -EINVAL with a message in why. */
int cli_parse_spec(const char *s, enum cli_snap_rule rule, struct cli_spec *out, char *why,
		   size_t whylen) __attribute__((nonnull));
bool cli_name_valid(const char *s);
/* The meta address: flag, else $STRATA_META, else 127.0.0.1:7700. */
const char *cli_meta_addr(const char *flag);

/* usage.c: LAYER_USAGE on every up node of m, summed (each PG counted by its primary only).
 * Nodes that did not answer are counted in *missing (the sum is then partial). Returns 0,
 * -EAGAIN when a node's map differs from m (fetch the map again and retry), or another -errno;
 * why gets a one-line reason. */
struct Strata__Meta__ClusterMap;
int cli_layer_usage(const struct Strata__Meta__ClusterMap *m, uint32_t pool_id, uint64_t family,
		    const uint64_t *layers, size_t nlayers, uint64_t *bytes, uint32_t *missing,
		    char *why, size_t whylen) __attribute__((nonnull(1, 6, 7, 8)));

/* commands.c */
int cli_main(int argc, char **argv) __attribute__((nonnull));

#endif
