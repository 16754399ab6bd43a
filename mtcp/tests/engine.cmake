# Unit tests for the sans-IO engines (mtcp_core), driven by hand through the in-memory harness
# in engine_harness.h (literal timestamps, no sockets). Included by tests/CMakeLists.txt (owned
# by the lead); source paths are relative to this file so it can be included from any directory.
# mtcp_simlib provides the deterministic generator (sim/prng.h) and its include path.
foreach(_mtcp_engine_test client server transfer)
  add_executable(test_${_mtcp_engine_test} ${CMAKE_CURRENT_LIST_DIR}/test_${_mtcp_engine_test}.cc)
  target_include_directories(test_${_mtcp_engine_test} PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  target_link_libraries(test_${_mtcp_engine_test} PRIVATE mtcp_core mtcp_host mtcp_simlib mtcp_warnings GTest::gtest_main)
  add_test(NAME ${_mtcp_engine_test} COMMAND test_${_mtcp_engine_test})
endforeach()
