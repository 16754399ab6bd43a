#include "services/builtin.h"

#include <cassert>

namespace mtcp::svc {

void register_builtin_services(sdk::Registry& reg) {
  for (auto* make : {&make_echo_service, &make_source_service, &make_discard_service, &make_ref_service, &make_counter_service, &make_delay_service}) {
    bool fresh = reg.add(make());
    assert(fresh);
    (void)fresh;
  }
}

}  // namespace mtcp::svc
