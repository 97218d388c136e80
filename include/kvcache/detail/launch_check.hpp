// A launch's parameters checked on the host before a backend runs the kernel
// (the checks of kernels/launch_checks.hpp, which the CUDA launchers make
// too), as the exception the owning layer throws: InvalidArgument naming the
// kernel, the field, its value and what is allowed. Nothing has been read or
// written when it throws.
#pragma once

#include "kvcache/error.hpp"
#include "kvcache/kernels/launch_checks.hpp"

namespace kvcache::detail {

template <class Params>
void check_launch(const Params& params) {
  if (const kernels::LaunchProblem problem = kernels::launch_problem(params)) {
    if (problem.misaligned) {
      raise<InvalidArgument>("{}: {} is {:#x}, not aligned (allowed: {})", Params::kName,
                             problem.field, problem.value, problem.allowed);
    }
    raise<InvalidArgument>("{}: {} is {} (allowed: {})", Params::kName, problem.field,
                           problem.value, problem.allowed);
  }
}

}  // namespace kvcache::detail
