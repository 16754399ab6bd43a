# Project-wide warnings: every target built from this tree gets them through mtcp_warnings.
add_library(mtcp_warnings INTERFACE)
target_compile_options(mtcp_warnings INTERFACE -Wall -Wextra -Wpedantic -Wshadow
  -Wnon-virtual-dtor -Wold-style-cast -Wcast-align -Wimplicit-fallthrough)
if(MTCP_WERROR)
  target_compile_options(mtcp_warnings INTERFACE -Werror)
endif()
