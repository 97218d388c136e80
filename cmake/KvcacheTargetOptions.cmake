# Warnings and sanitizers for kvcache's own targets, set per target and
# PRIVATE, so a project that add_subdirectory()s kvcache (or links it) gets
# none of them.
function(kvcache_target_options target)
  set(cxx_flags -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align -Wunused)
  if(KVCACHE_WARNINGS_AS_ERRORS)
    list(APPEND cxx_flags -Werror)
  endif()
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${cxx_flags}>)
  # Never fuse a * b + c into an FMA on the host: the shared host-device math
  # (codecs, paged attention) promises the GPU's bits, and nvcc is told the
  # same (--fmad=false). The headers holding that math turn contraction off
  # for their own functions (KVCACHE_EXACT_FP_BEGIN, config.hpp), which is what
  # users' builds rely on; kvcache's own targets also say it for all their code.
  target_compile_options(${target} PRIVATE
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:GNU,Clang>>:-ffp-contract=off>)
  set(cuda_flags -Xcompiler=-Wall,-Wextra)
  if(KVCACHE_WARNINGS_AS_ERRORS)
    list(APPEND cuda_flags -Werror=all-warnings -Xcompiler=-Werror)
  endif()
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${cuda_flags}>)
  if(KVCACHE_SANITIZE_THREAD)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=thread>)
    get_target_property(type ${target} TYPE)
    if(NOT type STREQUAL "STATIC_LIBRARY" AND NOT type STREQUAL "OBJECT_LIBRARY")
      target_link_options(${target} PRIVATE -fsanitize=thread)
    endif()
  endif()
  if(KVCACHE_SANITIZE)
    # float-cast-overflow is not part of "undefined": a NaN or out-of-range
    # float converted to an integer (a code) is undefined behaviour too.
    set(sanitize -fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer
                 -fno-sanitize-recover=all)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${sanitize}>)
    get_target_property(type ${target} TYPE)
    if(NOT type STREQUAL "STATIC_LIBRARY" AND NOT type STREQUAL "OBJECT_LIBRARY")
      target_link_options(${target} PRIVATE -fsanitize=address,undefined,float-cast-overflow)
    endif()
  endif()
endfunction()
