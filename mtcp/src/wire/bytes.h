// The codecs' byte cursor is the common one (common/bytes.h), named here for wire code.
#pragma once
#include "common/bytes.h"

namespace mtcp::wire {
using mtcp::Reader;
using mtcp::Writer;
}  // namespace mtcp::wire
