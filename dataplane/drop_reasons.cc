#include "dataplane/drop_reasons.h"

namespace ftpair::dp {

namespace {
constexpr const char *kLabels[] = {
#define FTPAIR_DROP_LABEL(id, label, text) label,
    FTPAIR_DROP_REASONS(FTPAIR_DROP_LABEL)
#undef FTPAIR_DROP_LABEL
};
constexpr const char *kTexts[] = {
#define FTPAIR_DROP_TEXT(id, label, text) text,
    FTPAIR_DROP_REASONS(FTPAIR_DROP_TEXT)
#undef FTPAIR_DROP_TEXT
};
}  // namespace

const char *drop_reason_label(DropReason r) {
  auto i = static_cast<unsigned>(r);
  return i < kDropReasonCount ? kLabels[i] : "unknown";
}

const char *drop_reason_text(DropReason r) {
  auto i = static_cast<unsigned>(r);
  return i < kDropReasonCount ? kTexts[i] : "unknown";
}

}  // namespace ftpair::dp
