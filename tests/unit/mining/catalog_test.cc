#include "mining/catalog.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>

namespace hi::mining {
namespace {

TEST(MiningCatalog, HasAtLeast42ModelsWithStableSequentialIds) {
  const auto models = catalog();
  ASSERT_GE(models.size(), 42u);
  for (std::size_t i = 0; i < models.size(); ++i) {
    EXPECT_EQ(models[i].id, static_cast<int>(i) + 1) << models[i].slug;
  }
}

TEST(MiningCatalog, SlugsAreUniqueAndDerivedFromNames) {
  std::set<std::string_view> slugs;
  for (const MinerModel& m : catalog()) {
    EXPECT_TRUE(slugs.insert(m.slug).second) << "duplicate slug " << m.slug;
    EXPECT_EQ(slugify(m.name), m.slug) << m.name;
  }
}

TEST(MiningCatalog, SpecificationsAreConsistent) {
  for (const MinerModel& m : catalog()) {
    SCOPED_TRACE(std::string(m.slug));
    EXPECT_GT(m.hashrate_ths, 0);
    EXPECT_GT(m.power_w, 0);
    EXPECT_GT(m.typical_price_usd, 0);
    EXPECT_GE(m.release_year, 2016);
    EXPECT_LE(m.release_year, 2025);
    EXPECT_FALSE(m.manufacturer.empty());
    // The published J/TH must match W / (TH/s) to within 2 %: catches a typo in either column.
    const double derived = m.power_w / m.hashrate_ths;
    EXPECT_NEAR(derived / m.efficiency_j_per_th, 1.0, 0.02)
        << "W/TH " << derived << " vs published " << m.efficiency_j_per_th;
  }
}

TEST(MiningCatalog, ContainsTheRequiredFamilies) {
  for (const char* slug :
       {"antminer-s19", "antminer-s19-pro", "antminer-s19j-pro", "antminer-s19-xp",
        "antminer-s19k-pro", "antminer-s21", "antminer-s21-pro", "antminer-s21-hydro",
        "antminer-t21", "whatsminer-m30s", "whatsminer-m30s-plus", "whatsminer-m30s-plus-plus",
        "whatsminer-m50", "whatsminer-m50s", "whatsminer-m60", "whatsminer-m60s", "avalon-a1246",
        "avalon-a1346", "avalon-a1366"}) {
    EXPECT_NE(find_model(slug), nullptr) << slug;
  }
}

TEST(MiningCatalog, KnownSpecs) {
  const MinerModel* s19pro = find_model("antminer-s19-pro");
  ASSERT_NE(s19pro, nullptr);
  EXPECT_EQ(s19pro->name, "Antminer S19 Pro");
  EXPECT_EQ(s19pro->manufacturer, "Bitmain");
  EXPECT_DOUBLE_EQ(s19pro->hashrate_ths, 110);
  EXPECT_DOUBLE_EQ(s19pro->power_w, 3250);
  EXPECT_DOUBLE_EQ(s19pro->efficiency_j_per_th, 29.5);
  const MinerModel* s21 = find_model("antminer-s21");
  ASSERT_NE(s21, nullptr);
  EXPECT_DOUBLE_EQ(s21->hashrate_ths, 200);
  EXPECT_DOUBLE_EQ(s21->power_w, 3500);
}

TEST(MiningCatalog, FindsByNameIgnoringCaseAndPunctuation) {
  const MinerModel* want = find_model("antminer-s19-pro");
  ASSERT_NE(want, nullptr);
  EXPECT_EQ(find_model("Antminer S19 Pro"), want);
  EXPECT_EQ(find_model("ANTMINER  s19_pro"), want);
  EXPECT_EQ(find_model("S19 Pro"), want);  // brand left out, unique
  EXPECT_EQ(find_model("Whatsminer M30S++"), find_model("whatsminer-m30s-plus-plus"));
  EXPECT_EQ(find_model("m30s++")->slug, "whatsminer-m30s-plus-plus");
  EXPECT_EQ(find_model("S21+ Hydro")->slug, "antminer-s21-plus-hydro");
}

TEST(MiningCatalog, UnknownOrEmptyNamesFindNothing) {
  EXPECT_EQ(find_model(""), nullptr);
  EXPECT_EQ(find_model("+"), find_model("plus"));  // both "plus": no model
  EXPECT_EQ(find_model("plus"), nullptr);
  EXPECT_EQ(find_model("antminer-s99"), nullptr);
  EXPECT_EQ(find_model("pro"), nullptr);  // suffix of many models: ambiguous
}

TEST(MiningCatalog, FindsById) {
  EXPECT_EQ(find_model_by_id(0), nullptr);
  EXPECT_EQ(find_model_by_id(static_cast<int>(catalog().size()) + 1), nullptr);
  EXPECT_EQ(find_model_by_id(6)->slug, "antminer-s19-pro");
}

TEST(MiningCatalog, Slugify) {
  EXPECT_EQ(slugify("Whatsminer M30S++"), "whatsminer-m30s-plus-plus");
  EXPECT_EQ(slugify("  Antminer S19j Pro+ "), "antminer-s19j-pro-plus");
  EXPECT_EQ(slugify("--A--B--"), "a-b");
  EXPECT_EQ(slugify(""), "");
}

}  // namespace
}  // namespace hi::mining
