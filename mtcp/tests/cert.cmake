# Unit tests for mtcp_cert. Included by tests/CMakeLists.txt (owned by the lead); the source path
# is relative to this file so it can be included from any directory.
add_executable(test_cert ${CMAKE_CURRENT_LIST_DIR}/test_cert.cc)
target_link_libraries(test_cert PRIVATE mtcp_cert mtcp_warnings GTest::gtest_main)
add_test(NAME cert COMMAND test_cert)
