// The version of HashInsight CDC (`hashinsight --version`, the health JSON).
#pragma once

namespace hi {

inline constexpr const char* kVersion = "0.1.0";

}  // namespace hi
