# Unit tests for mtcp_wire (frames, control messages, connection state) and the core's send
# log. Included by tests/CMakeLists.txt (owned by the lead); source paths are relative to this
# file so it can be included from any directory.
foreach(_mtcp_wire_test frame control state)
  add_executable(test_${_mtcp_wire_test} ${CMAKE_CURRENT_LIST_DIR}/test_${_mtcp_wire_test}.cc)
  target_link_libraries(test_${_mtcp_wire_test} PRIVATE mtcp_wire mtcp_warnings GTest::gtest_main)
  add_test(NAME ${_mtcp_wire_test} COMMAND test_${_mtcp_wire_test})
endforeach()

add_executable(test_send_log ${CMAKE_CURRENT_LIST_DIR}/test_send_log.cc)
target_link_libraries(test_send_log PRIVATE mtcp_core mtcp_warnings GTest::gtest_main)
add_test(NAME send_log COMMAND test_send_log)
