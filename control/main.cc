// ftpaird: the ftpair daemon.
#include "control/ftpaird_main.h"

int main(int argc, char **argv) { return ftpair::ftpaird_main(argc, argv); }
