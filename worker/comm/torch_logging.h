#pragma once

// LOG / VLOG / CHECK for code that includes libtorch (NOTE [glog and c10] in
// the top-level CMakeLists.txt): glog where libtorch is built with it
// (Debian's), else c10's own macros (a PyTorch wheel's libtorch), which
// glog's would clash with.

#include <c10/macros/Macros.h>

#ifdef C10_USE_GLOG
#include <glog/logging.h>
#else
#include <c10/util/Logging.h>
#endif
