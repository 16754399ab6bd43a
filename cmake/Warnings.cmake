# Project-wide warnings: every target built from this tree gets them through mtcp_warnings.
add_library(mtcp_warnings INTERFACE)
target_compile_options(mtcp_warnings INTERFACE -Wall -Wextra -Wpedantic -Wshadow
  -Wnon-virtual-dtor -Wold-style-cast -Wcast-align -Wimplicit-fallthrough)
if(MTCP_WERROR)
  target_compile_options(mtcp_warnings INTERFACE -Werror)
endif()
# GCC 12 (Debian 12's compiler) reports false -Wrestrict overlaps inside std::string at -O3 (GCC
# bug 105329, fixed in GCC 13): they are not in our code, so a Release build must not stop on them.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  target_compile_options(mtcp_warnings INTERFACE -Wno-restrict)
endif()
