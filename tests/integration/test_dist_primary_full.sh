#!/usr/bin/env bash
# A primary that runs out of space while its replica has room (dist_full.sh, FULL=primary).
export FULL=primary
# shellcheck source=tests/integration/dist_full.sh
. "$(dirname "$0")/dist_full.sh"
