/* strata: the admin CLI. Everything lives in commands.c so the unit tests can reach it. */
#include "internal.h"

int main(int argc, char **argv)
{
	return cli_main(argc, argv);
}
