// ftpaird-prev: the daemon built to play the previous release in the upgrade tests. It speaks
// record format 1 only, names itself "<version>-prev", and sends and reads roles on the wire as
// strings only (no RoleState).
#include "checkpoint/record_codec.h"
#include "checkpoint/version.h"
#include "control/ftpaird_main.h"
#include "control/role_wire.h"

int main(int argc, char **argv) {
  ftpair::ckpt::set_record_format_max(ftpair::ckpt::kRecordFormatV1);
  ftpair::ckpt::set_software_version(FTPAIR_VERSION "-prev");
  ftpair::wire::set_previous_release(true);
  return ftpair::ftpaird_main(argc, argv);
}
