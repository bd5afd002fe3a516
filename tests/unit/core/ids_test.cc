#include "core/ids.h"

#include <gtest/gtest.h>

#include <regex>
#include <set>

namespace hi {
namespace {

TEST(UuidV7, LayoutCarriesTimestampVersionAndVariant) {
  // 0x017F22E279B0 ms = 1645557742000 (2022-02-22T19:22:22Z), RFC 9562 appendix A.6.
  const std::string id = uuid_v7_from(0x017F22E279B0ULL, 0xCC3, 0x18C4DC0C0C07398FULL);
  EXPECT_EQ(id, "017f22e2-79b0-7cc3-98c4-dc0c0c07398f");
}

TEST(UuidV7, IsCanonicalUniqueAndSortsByCreation) {
  const std::regex shape("^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
  std::set<std::string> seen;
  std::string prev;
  for (int i = 0; i < 20000; ++i) {
    const std::string id = uuid_v7();
    ASSERT_TRUE(std::regex_match(id, shape)) << id;
    ASSERT_TRUE(seen.insert(id).second) << "duplicate " << id;
    ASSERT_LT(prev, id) << "not monotonic at " << i;
    prev = id;
  }
}

TEST(RandomHex, HasRequestedLength) {
  EXPECT_EQ(random_hex(32).size(), 64u);
  EXPECT_NE(random_hex(16), random_hex(16));
}

}  // namespace
}  // namespace hi
