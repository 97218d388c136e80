# The fuzz targets' sources and what they link, shared by the corpus
# regression tests (tests/CMakeLists.txt) and the libFuzzer build
# (tests/fuzz/CMakeLists.txt): kvcache_fuzz_target(NAME MAIN_FLAGS...).
set(KVCACHE_FUZZ_DIR ${CMAKE_CURRENT_LIST_DIR})

function(kvcache_fuzz_sources name out)
  if(name STREQUAL "manager")
    set(${out} ${KVCACHE_FUZZ_DIR}/fuzz_manager.cpp PARENT_SCOPE)
  elseif(name STREQUAL "checkpoint")
    set(${out} ${KVCACHE_FUZZ_DIR}/fuzz_checkpoint.cpp PARENT_SCOPE)
  else()
    set(${out} ${KVCACHE_FUZZ_DIR}/fuzz_trace.cpp PARENT_SCOPE)
  endif()
endfunction()

function(kvcache_fuzz_link target name)
  target_include_directories(${target} PRIVATE ${KVCACHE_FUZZ_DIR} ${KVCACHE_FUZZ_DIR}/../support
    ${KVCACHE_FUZZ_DIR}/../conformance)
  if(name STREQUAL "manager" OR name STREQUAL "checkpoint")
    target_link_libraries(${target} PRIVATE kvcache::kvcache)
  else()
    target_link_libraries(${target} PRIVATE kvcache_replay)
  endif()
endfunction()
